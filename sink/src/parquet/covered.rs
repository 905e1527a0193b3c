//! Rows that reach a window after compaction merged its files into a wider one.
//!
//! Skipping the window outright would be right for a plain replay (the merged file has
//! its rows already), but would lose rows that were never written before the merge: a
//! late event of the day, or rows a crash left unflushed. So the merged file gains the
//! rows it lacks, in offset order, and is left untouched when it lacks none.

use std::collections::HashSet;

use aiq_history_store::{HistoryFiles, ObjectPath};
use aiq_sql::layout::{FileName, Table};
use arrow_array::{Array, Int64Array, RecordBatch};
use arrow_schema::ArrowError;
use parquet::arrow::ArrowWriter;

use super::ParquetError;
use super::files::{open_reader, warm_properties, write_whole};
use super::rows::Rows;

/// Adds to the file at `path` (which covers `window`) the rows of `rows` it lacks.
pub(super) fn add_missing(
    files: &HistoryFiles,
    path: &ObjectPath,
    table: Table,
    window: FileName,
    rows: &Rows,
) -> Result<(), ParquetError> {
    let present = offsets_within(files, path, window)?;
    let missing = rows.without(&present);
    if missing.is_empty() {
        return Ok(());
    }
    let added = missing
        .to_batch(window.partition)
        .map_err(ParquetError::arrow(path))?;
    tracing::info!(
        path = %path,
        rows = added.num_rows(),
        "parquet: added rows to a compacted file"
    );
    write_whole(
        files,
        path,
        table.file_schema(),
        warm_properties(),
        None,
        |w| merge(files, path, &added, w),
    )
}

fn offset_column(batch: &RecordBatch) -> Result<&Int64Array, ArrowError> {
    batch
        .column_by_name("kafka_offset")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| ArrowError::SchemaError("no Int64 column kafka_offset".into()))
}

fn offsets_within(
    files: &HistoryFiles,
    path: &ObjectPath,
    window: FileName,
) -> Result<HashSet<i64>, ParquetError> {
    let mut out = HashSet::new();
    for batch in open_reader(files, path)? {
        let batch = batch.map_err(ParquetError::arrow(path))?;
        let offsets = offset_column(&batch).map_err(ParquetError::arrow(path))?;
        out.extend(
            offsets
                .values()
                .iter()
                .copied()
                .filter(|o| (window.first..window.end).contains(o)),
        );
    }
    Ok(out)
}

/// Writes the file's rows and `added` as one sequence in offset order; both are sorted.
fn merge(
    files: &HistoryFiles,
    path: &ObjectPath,
    added: &RecordBatch,
    w: &mut ArrowWriter<Vec<u8>>,
) -> Result<(), ParquetError> {
    let added_offsets = offset_column(added)
        .map_err(ParquetError::arrow(path))?
        .values()
        .to_vec();
    let mut j = 0;
    let mut write = |b: RecordBatch| w.write(&b).map_err(ParquetError::parquet(path));
    for batch in open_reader(files, path)? {
        let batch = batch.map_err(ParquetError::arrow(path))?;
        let offsets = offset_column(&batch)
            .map_err(ParquetError::arrow(path))?
            .values()
            .to_vec();
        let mut start = 0;
        while start < offsets.len() {
            let k = j + added_offsets[j..].partition_point(|o| *o < offsets[start]);
            if k > j {
                write(added.slice(j, k - j))?;
                j = k;
            }
            let end = match added_offsets.get(j) {
                Some(next) => start + offsets[start..].partition_point(|o| o < next),
                None => offsets.len(),
            };
            write(batch.slice(start, end - start))?;
            start = end;
        }
    }
    if j < added_offsets.len() {
        write(added.slice(j, added_offsets.len() - j))?;
    }
    Ok(())
}
