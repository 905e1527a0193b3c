//! Parquet files on disk: fixed writer properties, atomic writes and folder listings.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use aiq_sql::layout::FileName;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
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

pub(super) fn archive_properties(
    level: i32,
    path: &Path,
) -> Result<WriterProperties, ParquetError> {
    let level = ZstdLevel::try_new(level).map_err(ParquetError::parquet(path))?;
    Ok(properties(Compression::ZSTD(level)))
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes the file at `path` through a `.`-prefixed temp file in the same folder, so
/// that a reader sees either the old file or the whole new one, never a part.
pub(super) fn write_atomic<F>(
    path: &Path,
    schema: SchemaRef,
    props: WriterProperties,
    fill: F,
) -> Result<(), ParquetError>
where
    F: FnOnce(&mut ArrowWriter<File>) -> Result<(), ParquetError>,
{
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_temp(&tmp, schema, props, fill).and_then(|()| {
        fs::rename(&tmp, path).map_err(ParquetError::io("rename a temp file to", path))
    });
    if result.is_err() {
        // Best effort: compaction deletes leftovers too.
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

fn write_temp<F>(
    tmp: &Path,
    schema: SchemaRef,
    props: WriterProperties,
    fill: F,
) -> Result<(), ParquetError>
where
    F: FnOnce(&mut ArrowWriter<File>) -> Result<(), ParquetError>,
{
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(ParquetError::io("create", tmp))?;
    let mut w =
        ArrowWriter::try_new(file, schema, Some(props)).map_err(ParquetError::parquet(tmp))?;
    fill(&mut w)?;
    let file = w.into_inner().map_err(ParquetError::parquet(tmp))?;
    file.sync_all().map_err(ParquetError::io("fsync", tmp))
}

/// Writes one batch as a whole file.
pub(super) fn write_batch(
    path: &Path,
    batch: &RecordBatch,
    props: WriterProperties,
) -> Result<(), ParquetError> {
    write_atomic(path, batch.schema(), props, |w| {
        w.write(batch).map_err(ParquetError::parquet(path))
    })
}

/// Copies every row of the files at `sources`, in order, into one file at `path`.
pub(super) fn rewrite(
    sources: &[PathBuf],
    path: &Path,
    schema: SchemaRef,
    props: WriterProperties,
) -> Result<(), ParquetError> {
    write_atomic(path, schema, props, |w| {
        for src in sources {
            for batch in open_reader(src)? {
                let batch = batch.map_err(ParquetError::arrow(src))?;
                w.write(&batch).map_err(ParquetError::parquet(path))?;
            }
        }
        Ok(())
    })
}

pub(super) fn open_reader(path: &Path) -> Result<ParquetRecordBatchReader, ParquetError> {
    let file = File::open(path).map_err(ParquetError::io("open", path))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(ParquetError::parquet(path))
}

/// Makes a rename or a new entry in `dir` survive a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<(), ParquetError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ParquetError::io("fsync the folder", dir))
}

/// Creates `dir` and makes its new entry in the parent durable.
pub(super) fn create_dir(dir: &Path) -> Result<(), ParquetError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(ParquetError::io("create the folder", dir))?;
    // The date folder is new; its tenant folder may be too.
    let mut p = dir.parent();
    for _ in 0..2 {
        if let Some(parent) = p {
            sync_dir(parent)?;
            p = parent.parent();
        }
    }
    Ok(())
}

/// The entries of a folder (none when it does not exist), as (name, path), sorted.
pub(super) fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, ParquetError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ParquetError::io("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(ParquetError::io("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push((name, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// The data files of a folder by name, in `FileName` order.
pub(super) fn data_files(dir: &Path) -> Result<Vec<(FileName, PathBuf)>, ParquetError> {
    let mut files: Vec<_> = entries(dir)?
        .into_iter()
        .filter_map(|(name, path)| FileName::parse(&name).map(|f| (f, path)))
        .collect();
    files.sort();
    Ok(files)
}

pub(super) fn remove_file(path: &Path) -> Result<(), ParquetError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ParquetError::io("delete", path)(e)),
    }
}

pub(super) fn remove_dir(dir: &Path) -> Result<(), ParquetError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ParquetError::io("delete the folder", dir)(e)),
    }?;
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}
