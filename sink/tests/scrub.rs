//! Erasing one run's payloads from the Parquet history (`scrub_run`) against real files
//! in a temp folder: the run's error messages go from both tiers and both tables, and
//! nothing else changes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use aiq_history_store::{HistoryFiles, HistoryRoot, ObjectPath};
use aiq_sink::parquet::{ParquetSettings, ParquetWriter, ScrubReport, compact, scrub_run};
use aiq_sql::layout::{Table, Tier, table_key};
use aiq_topics::{
    ErrorClass, Event, Failure, RunErased, RunEvent, RunId, RunStatus, StepEvent, StepId,
    StepStatus, TenantId, WorkflowId,
};
use arrow_array::{Array, RecordBatch, StringArray};
use bytes::Bytes;
use chrono::{DateTime, Days, NaiveDate, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;

struct Root {
    settings: ParquetSettings,
    files: HistoryFiles,
    _dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        let dir = tempfile::tempdir().unwrap();
        let root = HistoryRoot::from(dir.path());
        let settings = ParquetSettings {
            root: root.clone(),
            window_offsets: 10,
            // `today - 1` is compacted but stays warm; older days are archived.
            compact_after_days: 1,
            warm_days: 2,
            ..Default::default()
        };
        Root {
            files: settings.files().unwrap(),
            settings,
            _dir: dir,
        }
    }
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 29).unwrap()
}

fn days_ago(n: u64) -> NaiveDate {
    today().checked_sub_days(Days::new(n)).unwrap()
}

fn run_id(n: u128) -> RunId {
    RunId::from_uuid(uuid::Uuid::from_u128(n))
}

/// Runs A and B of acme, C of globex.
fn a() -> RunId {
    run_id(0xA)
}

fn b() -> RunId {
    run_id(0xB)
}

fn c() -> RunId {
    run_id(0xC)
}

fn tenant_of(run: RunId) -> &'static str {
    if run == c() { "globex" } else { "acme" }
}

fn failure(message: Option<String>) -> Option<Failure> {
    message.map(|message| Failure {
        class: ErrorClass::Retryable,
        message,
        step: None,
    })
}

fn event(run: RunId, i: u64, at: DateTime<Utc>, message: Option<String>) -> Event {
    let tenant = TenantId::new(tenant_of(run)).unwrap();
    if i.is_multiple_of(4) {
        Event::Run(RunEvent {
            tenant,
            run,
            workflow: WorkflowId::new("orders").unwrap(),
            version: 1,
            status: RunStatus::Failed,
            at,
            input: None,
            output: None,
            error: failure(message),
            started_at: Some(at - chrono::Duration::seconds(3)),
            source: None,
            scheduled_at: None,
        })
    } else {
        Event::Step(StepEvent {
            tenant,
            run,
            step: StepId::new(format!("s{i}")).unwrap(),
            attempt: 1,
            status: StepStatus::Failed,
            at,
            kind: "task".into(),
            connector: Some("http".into()),
            error: failure(message),
            iteration: None,
            duration_ms: Some(i * 7),
            output_bytes: None,
        })
    }
}

/// Three days (archived, compacted warm, open warm) of runs A, B and C on two
/// partitions, small windows so that a day has several files.
fn write_history(root: &Root) {
    let mut w = ParquetWriter::new(&root.settings).unwrap();
    for (d, date) in [days_ago(3), days_ago(1), today()].into_iter().enumerate() {
        let noon = date.and_hms_opt(12, 0, 0).unwrap().and_utc();
        for i in 0..36u64 {
            let run = [a(), b(), c()][(i % 3) as usize];
            // Some rows without a message: they stay as they are either way.
            let message = (i % 5 != 4).then(|| format!("sealed {d}/{i}"));
            let e = event(run, i, noon + chrono::Duration::seconds(i as i64), message);
            let partition = (i % 2) as i32;
            w.add(partition, (d as i64) * 100 + i as i64, &e);
        }
    }
    w.flush().unwrap();
    let report = compact(&root.settings, today()).unwrap();
    assert_eq!(
        report.archived_days, 4,
        "{report:?}: both tables of both tenants"
    );
    assert!(report.merged_files > 0, "{report:?}");
}

struct File {
    bytes: Bytes,
    batch: RecordBatch,
}

/// Every data file under the root, by path.
fn snapshot(files: &HistoryFiles) -> BTreeMap<String, File> {
    files
        .walk(&ObjectPath::from(""))
        .unwrap()
        .into_iter()
        .map(|p| {
            let bytes = files.get(&p).unwrap();
            let mut batches: Vec<RecordBatch> =
                ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                    .unwrap()
                    .with_batch_size(1 << 20)
                    .build()
                    .unwrap()
                    .map(|b| b.unwrap())
                    .collect();
            assert_eq!(batches.len(), 1, "the test files are small: one batch");
            let batch = batches.pop().unwrap();
            (p.to_string(), File { bytes, batch })
        })
        .collect()
}

fn text<'a>(b: &'a RecordBatch, name: &str) -> &'a StringArray {
    b.column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
}

fn compression(bytes: &Bytes) -> Compression {
    let r = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap();
    r.metadata().row_group(0).column(0).compression()
}

fn erasure(run: RunId) -> RunErased {
    RunErased {
        tenant: TenantId::new(tenant_of(run)).unwrap(),
        run,
        at: today().and_hms_opt(13, 0, 0).unwrap().and_utc(),
        from: days_ago(3),
        to: today(),
    }
}

#[test]
fn scrubbing_a_run_clears_its_messages_in_both_tiers_and_tables_and_nothing_else() {
    let root = Root::new();
    write_history(&root);
    let before = snapshot(&root.files);
    for tier in [Tier::Warm, Tier::Archive] {
        for table in [Table::Runs, Table::Steps] {
            let prefix = table_key(tier, table);
            assert!(
                before.keys().any(|p| p.starts_with(&prefix)),
                "no files under {prefix}"
            );
        }
    }

    let report = scrub_run(&root.settings, &erasure(a())).unwrap();
    let after = snapshot(&root.files);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );

    let a = a().to_string();
    let mut rewritten = BTreeMap::<String, usize>::new();
    let mut cleared = 0;
    for (path, old) in &before {
        let new = &after[path];
        let ids = text(&old.batch, "run_id");
        let messages = text(&old.batch, "error_message");
        let hits: Vec<bool> = (0..old.batch.num_rows())
            .map(|i| ids.value(i) == a && messages.is_valid(i))
            .collect();
        let n = hits.iter().filter(|h| **h).count();
        if n == 0 {
            assert_eq!(new.bytes, old.bytes, "{path}: untouched");
            continue;
        }
        cleared += n;
        let dir = path.rsplit_once("/tenant=").unwrap().0;
        *rewritten.entry(dir.to_owned()).or_default() += 1;
        assert!(path.contains("/tenant=acme/"), "{path}");
        assert_eq!(new.batch.schema(), old.batch.schema(), "{path}");
        assert_eq!(new.batch.num_rows(), old.batch.num_rows(), "{path}");
        for (i, field) in old.batch.schema().fields().iter().enumerate() {
            if field.name() != "error_message" {
                assert_eq!(new.batch.column(i), old.batch.column(i), "{path}: {field}");
            }
        }
        let expected: Vec<Option<&str>> = messages
            .iter()
            .zip(&hits)
            .map(|(m, hit)| if *hit { None } else { m })
            .collect();
        let now: Vec<Option<&str>> = text(&new.batch, "error_message").iter().collect();
        assert_eq!(now, expected, "{path}");
        // Rewritten as its tier writes files.
        let codec = compression(&new.bytes);
        if path.starts_with("archive/") {
            assert!(matches!(codec, Compression::ZSTD(_)), "{path}: {codec:?}");
        } else {
            assert_eq!(codec, Compression::SNAPPY, "{path}");
        }
    }
    assert_eq!(
        rewritten.keys().cloned().collect::<Vec<_>>(),
        vec![
            "archive/runs".to_owned(),
            "archive/steps".to_owned(),
            "warm/runs".to_owned(),
            "warm/steps".to_owned(),
        ]
    );
    assert_eq!(
        report,
        ScrubReport {
            files_rewritten: rewritten.values().sum(),
            rows_cleared: cleared,
        }
    );
    // Every message of A is gone; B's (same tenant) and C's (another) all stay.
    let messages_of = |files: &BTreeMap<String, File>| {
        let mut out = BTreeMap::<String, usize>::new();
        for f in files.values() {
            let ids = text(&f.batch, "run_id");
            let messages = text(&f.batch, "error_message");
            for i in 0..f.batch.num_rows() {
                if messages.is_valid(i) {
                    *out.entry(ids.value(i).to_owned()).or_default() += 1;
                }
            }
        }
        out
    };
    let (was, now) = (messages_of(&before), messages_of(&after));
    assert!(was[&a] > 0);
    assert!(!now.contains_key(&a), "{now:?}");
    for other in [b().to_string(), c().to_string()] {
        assert!(was[&other] > 0);
        assert_eq!(now[&other], was[&other], "{other}");
    }
    assert_eq!(was[&a], cleared);

    // A second erasure of the same run finds nothing to do.
    let again = scrub_run(&root.settings, &erasure(run_id(0xA))).unwrap();
    assert_eq!(again, ScrubReport::default());
    let third = snapshot(&root.files);
    assert!(after.iter().all(|(p, f)| third[p].bytes == f.bytes));
}

#[test]
fn a_run_whose_days_hold_no_folders_is_scrubbed_without_error() {
    let root = Root::new();
    let report = scrub_run(&root.settings, &erasure(a())).unwrap();
    assert_eq!(report, ScrubReport::default());
    // Files of other days are not looked at.
    write_history(&root);
    let before = snapshot(&root.files);
    let mut elsewhere = erasure(a());
    elsewhere.from = days_ago(30);
    elsewhere.to = days_ago(20);
    assert_eq!(
        scrub_run(&root.settings, &elsewhere).unwrap(),
        ScrubReport::default()
    );
    let after = snapshot(&root.files);
    assert!(before.iter().all(|(p, f)| after[p].bytes == f.bytes));
}
