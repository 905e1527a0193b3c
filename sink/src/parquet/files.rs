//! Parquet files in the history store: fixed writer properties, whole-object writes and
//! folder listings.

use aiq_history_store::{HistoryFiles, ObjectPath};
use aiq_sql::layout::FileName;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::ParquetError;

/// Enough for a day of one busy partition in one row group, small enough to write
/// without holding a huge group in memory.
const MAX_ROW_GROUP_ROWS: usize = 128 * 1024;

fn properties(compression: Compression) -> WriterProperties {
    WriterProperties::builder()
        // The default names the parquet crate's version: an upgrade would change the bytes
        // of files rewritten by a replay.
        .set_created_by("aiq-sink".to_owned())
        .set_compression(compression)
        .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
        .build()
}

pub(super) fn warm_properties() -> WriterProperties {
    properties(Compression::SNAPPY)
}

pub(super) fn archive_properties(level: i32) -> Result<WriterProperties, ParquetError> {
    let level = ZstdLevel::try_new(level).map_err(ParquetError::parquet(&"archive_zstd_level"))?;
    Ok(properties(Compression::ZSTD(level)))
}

/// Encodes a whole file in memory and puts it as one object at `path`: a reader sees
/// the old object or the whole new one, never a part (`HistoryFiles::put`).
pub(super) fn write_whole<F>(
    files: &HistoryFiles,
    path: &ObjectPath,
    schema: SchemaRef,
    props: WriterProperties,
    storage_class: Option<&str>,
    fill: F,
) -> Result<(), ParquetError>
where
    F: FnOnce(&mut ArrowWriter<Vec<u8>>) -> Result<(), ParquetError>,
{
    let mut w = ArrowWriter::try_new(Vec::new(), schema, Some(props))
        .map_err(ParquetError::parquet(path))?;
    fill(&mut w)?;
    let bytes = w.into_inner().map_err(ParquetError::parquet(path))?;
    files.put(path, Bytes::from(bytes), storage_class)?;
    Ok(())
}

/// Writes one batch as a whole file.
pub(super) fn write_batch(
    files: &HistoryFiles,
    path: &ObjectPath,
    batch: &RecordBatch,
    props: WriterProperties,
) -> Result<(), ParquetError> {
    write_whole(files, path, batch.schema(), props, None, |w| {
        w.write(batch).map_err(ParquetError::parquet(path))
    })
}

/// Copies every row of the files at `sources`, in order, into one file at `path`.
pub(super) fn rewrite(
    files: &HistoryFiles,
    sources: &[ObjectPath],
    path: &ObjectPath,
    schema: SchemaRef,
    props: WriterProperties,
    storage_class: Option<&str>,
) -> Result<(), ParquetError> {
    write_whole(files, path, schema, props, storage_class, |w| {
        for src in sources {
            for batch in open_reader(files, src)? {
                let batch = batch.map_err(ParquetError::arrow(src))?;
                w.write(&batch).map_err(ParquetError::parquet(path))?;
            }
        }
        Ok(())
    })
}

pub(super) fn open_reader(
    files: &HistoryFiles,
    path: &ObjectPath,
) -> Result<ParquetRecordBatchReader, ParquetError> {
    let bytes = files.get(path)?;
    ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(ParquetError::parquet(path))
}

/// The data files of a folder by name, in `FileName` order (none when it does not exist).
pub(super) fn data_files(
    files: &HistoryFiles,
    dir: &ObjectPath,
) -> Result<Vec<(FileName, ObjectPath)>, ParquetError> {
    let mut out: Vec<_> = files
        .list(dir)?
        .files
        .into_iter()
        .filter_map(|name| FileName::parse(&name).map(|f| (f, dir.clone().join(name))))
        .collect();
    out.sort();
    Ok(out)
}
