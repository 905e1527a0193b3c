//! Erasing one run's payloads from the history files (`DELETE /v1/runs/{id}`).
//!
//! The tables' only payloads are the `error_message` columns of `runs` and `steps`. A
//! file that holds one of the run's messages is rewritten whole at its own path (one
//! put: a reader sees the old file or the new one) with those cells null and every other
//! cell as it was; a file without any is not touched, so a second scrub of the same run
//! writes nothing.

use aiq_history_store::{HistoryFiles, ObjectPath};
use aiq_sql::layout::{Table, Tier, day_key};
use aiq_topics::RunErased;
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchReader, StringArray};
use arrow_schema::ArrowError;
use bytes::Bytes;
use chrono::{Days, NaiveDate};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::properties::WriterProperties;

use super::files::{archive_properties, data_files, warm_properties, write_whole};
use super::{ParquetError, ParquetSettings};

/// The most days one erasure visits: the longest a run can last, as ingest bounds the
/// marker's days too. A marker claiming more is cut rather than listing (and paying
/// for) folders without end.
pub const MAX_SCRUB_DAYS: u64 = 400;

const RUN_ID: &str = "run_id";
const MESSAGE: &str = "error_message";

/// What one [`scrub_run`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Files rewritten without the run's messages.
    pub files_rewritten: usize,
    /// Rows whose message was cleared.
    pub rows_cleared: usize,
}

/// Clears the error messages of the run `e.run` from the `runs` and `steps` files of its
/// tenant, in both tiers, for each day from `e.from` to `e.to` (at most
/// [`MAX_SCRUB_DAYS`] of them). Warm files keep the warm tier's properties; archived
/// ones are recompressed and stored as compaction archives them. Missing folders are
/// skipped.
///
/// Run it from the thread that drives the [`ParquetWriter`](super::ParquetWriter), after
/// its [`erase_run`](super::ParquetWriter::erase_run) and a flush, as
/// [`compact`](super::compact) is run: a flush or a merge of the same file at the same
/// time would write back the rows it read before.
pub fn scrub_run(settings: &ParquetSettings, e: &RunErased) -> Result<ScrubReport, ParquetError> {
    settings.validate()?;
    let files = settings.files()?;
    let run_id = e.run.to_string();
    let warm = Target {
        props: warm_properties(),
        storage_class: None,
    };
    let archive = Target {
        props: archive_properties(settings.archive_zstd_level)?,
        storage_class: settings.archive_class(&files),
    };
    let mut report = ScrubReport::default();
    for date in days(e) {
        for table in [Table::Runs, Table::Steps] {
            for (tier, target) in [(Tier::Warm, &warm), (Tier::Archive, &archive)] {
                let dir = ObjectPath::from(day_key(tier, table, e.tenant.as_str(), date));
                for (_, path) in data_files(&files, &dir)? {
                    let cleared = scrub_file(&files, &path, &run_id, target)?;
                    if cleared > 0 {
                        report.files_rewritten += 1;
                        report.rows_cleared += cleared;
                    }
                }
            }
        }
    }
    Ok(report)
}

/// How a rewritten file is written: as the tier it lies in writes its files.
struct Target {
    props: WriterProperties,
    storage_class: Option<String>,
}

/// The days to visit, from the first one on. A reversed range is read the right way
/// round: an erasure left half done by a malformed marker is worse than a few listings.
fn days(e: &RunErased) -> impl Iterator<Item = NaiveDate> + use<> {
    let (from, to) = (e.from.min(e.to), e.from.max(e.to));
    let span = u64::try_from((to - from).num_days()).unwrap_or(0);
    if span >= MAX_SCRUB_DAYS {
        tracing::warn!(
            run = %e.run,
            %from,
            %to,
            max_days = MAX_SCRUB_DAYS,
            "parquet: an erasure spans more days than are scrubbed; the later ones are left"
        );
    }
    (0..=span.min(MAX_SCRUB_DAYS - 1)).filter_map(move |d| from.checked_add_days(Days::new(d)))
}

fn reader(
    bytes: &Bytes,
    path: &ObjectPath,
    columns: Option<&[&str]>,
) -> Result<ParquetRecordBatchReader, ParquetError> {
    let mut b = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .map_err(ParquetError::parquet(path))?;
    if let Some(columns) = columns {
        let mask = ProjectionMask::columns(b.parquet_schema(), columns.iter().copied());
        b = b.with_projection(mask);
    }
    b.build().map_err(ParquetError::parquet(path))
}

/// Rewrites the file at `path` without the messages of `run_id`; returns how many rows
/// had one (0: the file was left as it was).
fn scrub_file(
    files: &HistoryFiles,
    path: &ObjectPath,
    run_id: &str,
    target: &Target,
) -> Result<usize, ParquetError> {
    let bytes = files.get(path)?;
    // A first pass over the two columns only: most files of the days hold other runs.
    let mut cleared = 0;
    for batch in reader(&bytes, path, Some(&[RUN_ID, MESSAGE]))? {
        let batch = batch.map_err(ParquetError::arrow(path))?;
        cleared += matches(&batch, run_id)
            .map_err(ParquetError::arrow(path))?
            .iter()
            .filter(|m| **m)
            .count();
    }
    if cleared == 0 {
        return Ok(0);
    }
    let all = reader(&bytes, path, None)?;
    // The file's own schema, not today's: every other column stays as it was written.
    let schema = all.schema();
    write_whole(
        files,
        path,
        schema,
        target.props.clone(),
        target.storage_class.as_deref(),
        |w| {
            for batch in all {
                let batch = batch.map_err(ParquetError::arrow(path))?;
                let batch = without_messages(&batch, run_id).map_err(ParquetError::arrow(path))?;
                w.write(&batch).map_err(ParquetError::parquet(path))?;
            }
            Ok(())
        },
    )?;
    tracing::debug!(path = %path, rows = cleared, "parquet: run messages cleared from a file");
    Ok(cleared)
}

fn text_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray, ArrowError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| ArrowError::SchemaError(format!("no Utf8 column {name}")))
}

/// For each row, whether it is one of `run_id`'s with a message.
fn matches(batch: &RecordBatch, run_id: &str) -> Result<Vec<bool>, ArrowError> {
    // A file written without the column holds no message to clear; one that has it in
    // another type is an error, not a file to skip.
    if batch.column_by_name(MESSAGE).is_none() {
        return Ok(vec![false; batch.num_rows()]);
    }
    let ids = text_column(batch, RUN_ID)?;
    let messages = text_column(batch, MESSAGE)?;
    Ok((0..batch.num_rows())
        .map(|i| ids.is_valid(i) && ids.value(i) == run_id && messages.is_valid(i))
        .collect())
}

/// The batch with the messages of `run_id`'s rows null.
fn without_messages(batch: &RecordBatch, run_id: &str) -> Result<RecordBatch, ArrowError> {
    let hit = matches(batch, run_id)?;
    if !hit.iter().any(|h| *h) {
        return Ok(batch.clone());
    }
    let messages = text_column(batch, MESSAGE)?;
    let cleared: StringArray = messages
        .iter()
        .zip(&hit)
        .map(|(m, h)| if *h { None } else { m })
        .collect();
    let schema = batch.schema();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| {
            if f.name() == MESSAGE {
                std::sync::Arc::new(cleared.clone()) as ArrayRef
            } else {
                c.clone()
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiq_topics::{RunId, TenantId};
    use arrow_array::Int64Array;
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    fn erased(from: NaiveDate, to: NaiveDate) -> RunErased {
        RunErased {
            tenant: TenantId::new("acme").unwrap(),
            run: RunId::random(),
            at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            from,
            to,
        }
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn the_days_run_from_first_to_last_and_stop_at_the_budget() {
        let one = days(&erased(date(2026, 1, 31), date(2026, 2, 2))).collect::<Vec<_>>();
        assert_eq!(
            one,
            vec![date(2026, 1, 31), date(2026, 2, 1), date(2026, 2, 2)]
        );
        let reversed = days(&erased(date(2026, 2, 2), date(2026, 1, 31))).collect::<Vec<_>>();
        assert_eq!(reversed, one);
        assert_eq!(days(&erased(date(2026, 1, 1), date(2026, 1, 1))).count(), 1);
        let long = days(&erased(date(2020, 1, 1), date(2026, 1, 1))).collect::<Vec<_>>();
        assert_eq!(long.len() as u64, MAX_SCRUB_DAYS);
        assert_eq!(long[0], date(2020, 1, 1));
    }

    #[test]
    fn only_the_runs_messages_become_null_and_other_columns_stay() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(RUN_ID, DataType::Utf8, false),
            Field::new(MESSAGE, DataType::Utf8, true),
            Field::new("kafka_offset", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "a", "a"])),
                Arc::new(StringArray::from(vec![
                    Some("x"),
                    Some("y"),
                    None,
                    Some("z"),
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap();
        assert_eq!(
            matches(&batch, "a").unwrap(),
            vec![true, false, false, true]
        );
        let out = without_messages(&batch, "a").unwrap();
        assert_eq!(out.schema(), schema);
        let messages = text_column(&out, MESSAGE).unwrap();
        assert_eq!(
            messages.iter().collect::<Vec<_>>(),
            vec![None, Some("y"), None, None]
        );
        assert_eq!(out.column(0), batch.column(0));
        assert_eq!(out.column(2), batch.column(2));
        assert_eq!(without_messages(&batch, "c").unwrap(), batch);

        let audit = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "event_id",
                DataType::Utf8,
                false,
            )])),
            vec![Arc::new(StringArray::from(vec!["a"]))],
        )
        .unwrap();
        assert_eq!(matches(&audit, "a").unwrap(), vec![false]);
    }
}
