//! The Parquet writer and compaction against real files, in a temp folder and in a
//! prefix of its own in Azurite (Azure Blob Storage's emulator) — every case runs on
//! both: replays give byte-identical files, windows cut files, and compaction merges,
//! archives and deletes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Instant;

use aiq_history_store::{HistoryFiles, HistoryRoot, ObjectPath};
use aiq_sink::parquet::{CompactReport, ParquetSettings, ParquetWriter, compact};
use aiq_sql::layout::{FileName, Table, Tier, day_key};
use aiq_topics::{
    ErrorClass, Event, Failure, RunEvent, RunId, RunStatus, StepEvent, StepId, StepStatus,
    TenantId, TriggerSource, WorkflowId,
};
use arrow_array::{
    Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use chrono::{DateTime, Days, NaiveDate, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use proptest::prelude::*;

/// A history root of a test's own: a temp folder, or a fresh prefix in Azurite.
struct Root {
    root: HistoryRoot,
    files: HistoryFiles,
    _dir: Option<tempfile::TempDir>,
}

impl Root {
    fn local() -> Root {
        let dir = tempfile::tempdir().unwrap();
        let root = HistoryRoot::from(dir.path());
        Root {
            files: HistoryFiles::new(root.parse(&BTreeMap::new()).unwrap()),
            root,
            _dir: Some(dir),
        }
    }

    fn azurite() -> Option<Root> {
        let root = HistoryRoot::new(aiq_testkit::azurite_root("parquet")?);
        Some(Root {
            files: HistoryFiles::new(root.parse(&BTreeMap::new()).unwrap()),
            root,
            _dir: None,
        })
    }

    /// Another root of the same kind (a reference to compare with).
    fn sibling(&self) -> Root {
        match self._dir {
            Some(_) => Root::local(),
            None => Root::azurite().unwrap(),
        }
    }
}

/// Every case twice: `<case>::local` and `<case>::azurite`.
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[test]
            fn local() {
                super::$case(&super::Root::local());
            }
            #[test]
            fn azurite() {
                if let Some(r) = super::Root::azurite() {
                    super::$case(&r);
                }
            }
        }
    )*};
}

on_both!(
    a_replay_writes_the_same_names_and_bytes,
    a_restart_from_resume_offset_rebuilds_the_same_files,
    windows_cut_files_with_the_right_names_rows_and_columns,
    files_are_snappy_and_name_no_library_version,
    compaction_merges_old_days_once_and_a_replay_adds_no_copies,
    rows_that_reach_a_compacted_window_late_join_the_merged_file_in_order,
    old_days_move_to_the_archive_with_zstd_and_older_ones_are_deleted,
    a_revoked_partition_forgets_its_unwritten_rows,
);

fn settings(r: &Root, window: i64) -> ParquetSettings {
    ParquetSettings {
        root: r.root.clone(),
        window_offsets: window,
        ..Default::default()
    }
}

fn day(tier: Tier, table: Table, date: NaiveDate) -> String {
    day_key(tier, table, "acme", date)
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 29).unwrap()
}

fn noon(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(12, 0, 0).unwrap().and_utc()
}

fn step_event(tenant: &str, n: u64, at: DateTime<Utc>) -> Event {
    Event::Step(StepEvent {
        tenant: TenantId::new(tenant).unwrap(),
        run: RunId::from_uuid(uuid::Uuid::from_u128(u128::from(n / 4))),
        step: StepId::new(format!("s{}", n % 4)).unwrap(),
        attempt: 1 + (n % 3) as u32,
        status: if n.is_multiple_of(5) {
            StepStatus::Failed
        } else {
            StepStatus::Succeeded
        },
        at,
        kind: "task".into(),
        connector: n.is_multiple_of(2).then(|| "http".to_owned()),
        error: n.is_multiple_of(5).then(|| Failure {
            class: ErrorClass::Retryable,
            message: format!("boom {n}"),
            step: None,
        }),
        iteration: n.is_multiple_of(7).then_some(n),
        duration_ms: Some(n * 3),
        output_bytes: (!n.is_multiple_of(5)).then_some(100 + n),
    })
}

fn run_event(tenant: &str, n: u64, at: DateTime<Utc>) -> Event {
    let running = n.is_multiple_of(2);
    Event::Run(RunEvent {
        tenant: TenantId::new(tenant).unwrap(),
        run: RunId::from_uuid(uuid::Uuid::from_u128(u128::from(n))),
        workflow: WorkflowId::new("orders").unwrap(),
        version: 2,
        status: if running {
            RunStatus::Running
        } else {
            RunStatus::Succeeded
        },
        at,
        input: running.then(|| serde_json::json!({"id": n})),
        output: (!running).then(|| serde_json::json!([n, "done"])),
        error: None,
        started_at: (!running).then(|| at - chrono::Duration::milliseconds(1500)),
        source: running.then_some(TriggerSource::Cron),
        scheduled_at: running.then(|| at - chrono::Duration::seconds(2)),
    })
}

/// Every object under the folder `rel` ("" for all) by path, with its bytes.
fn tree(r: &Root, rel: &str) -> BTreeMap<String, Vec<u8>> {
    r.files
        .walk(&ObjectPath::from(rel))
        .unwrap()
        .into_iter()
        .map(|p| {
            let bytes = r.files.get(&p).unwrap().to_vec();
            (p.to_string(), bytes)
        })
        .collect()
}

fn names(r: &Root, dir: &str) -> Vec<String> {
    r.files.list(&ObjectPath::from(dir)).unwrap().files
}

fn exists(r: &Root, dir: &str) -> bool {
    !r.files.walk(&ObjectPath::from(dir)).unwrap().is_empty()
}

fn reader(r: &Root, dir: &str, name: &str) -> ParquetRecordBatchReaderBuilder<bytes::Bytes> {
    let bytes = r
        .files
        .get(&ObjectPath::from(format!("{dir}/{name}")))
        .unwrap();
    ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap()
}

fn read(r: &Root, dir: &str, name: &str) -> RecordBatch {
    let b = reader(r, dir, name).with_batch_size(1 << 20);
    let mut batches: Vec<RecordBatch> = b.build().unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 1, "the test files are small: one batch");
    batches.pop().unwrap()
}

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> &'a T {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap()
}

fn offsets(b: &RecordBatch) -> Vec<i64> {
    col::<Int64Array>(b, "kafka_offset").values().to_vec()
}

fn file(p: i32, first: i64, end: i64) -> String {
    FileName {
        partition: p,
        first,
        end,
    }
    .to_string()
}

/// A mixed stream: two tenants, two days, runs and steps, with offset gaps.
fn mixed_events(n: u64) -> Vec<(i64, Event)> {
    let d1 = today().checked_sub_days(Days::new(2)).unwrap();
    let d2 = today();
    (0..n)
        .map(|i| {
            let tenant = if i % 3 == 0 { "acme" } else { "globex" };
            let at = noon(if i % 4 == 0 { d1 } else { d2 }) + chrono::Duration::seconds(i as i64);
            let e = if i % 6 == 0 {
                run_event(tenant, i, at)
            } else {
                step_event(tenant, i, at)
            };
            // Gaps, as transaction markers leave in a real topic.
            ((i * 3 / 2) as i64, e)
        })
        .collect()
}

fn write_all(r: &Root, window: i64, events: &[(i64, Event)], flush_every: usize) {
    let mut w = ParquetWriter::new(&settings(r, window)).unwrap();
    for (i, (o, e)) in events.iter().enumerate() {
        w.add(1, *o, e);
        if flush_every > 0 && i % flush_every == flush_every - 1 {
            w.flush().unwrap();
        }
    }
    w.flush().unwrap();
}

fn a_replay_writes_the_same_names_and_bytes(a: &Root) {
    let events = mixed_events(400);
    let b = a.sibling();
    write_all(a, 100, &events, 37);
    write_all(&b, 100, &events, 0);
    let ta = tree(a, "");
    assert!(ta.len() >= 20, "{} files", ta.len());
    if let Some(dir) = &a._dir {
        let on_disk = walkdir(dir.path());
        assert_eq!(on_disk, ta.len(), "no staging or temp files left on disk");
    }
    assert_eq!(ta, tree(&b, ""));

    // Replaying the same events over the first root rewrites the same files.
    write_all(a, 100, &events, 11);
    assert_eq!(tree(a, ""), ta);
}

/// Files (not folders) under `dir` on disk, at any depth.
fn walkdir(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() { walkdir(&p) } else { 1 }
        })
        .sum()
}

fn a_restart_from_resume_offset_rebuilds_the_same_files(root: &Root) {
    let events = mixed_events(400);
    let reference = root.sibling();
    write_all(&reference, 100, &events, 0);

    let s = settings(root, 100);
    let committed = {
        let mut w = ParquetWriter::new(&s).unwrap();
        for (o, e) in &events[..230] {
            w.add(1, *o, e);
        }
        w.flush().unwrap();
        let committed = events[230].0;
        // Rows added after the last flush are lost with the process.
        for (o, e) in &events[230..260] {
            w.add(1, *o, e);
        }
        committed
    };
    let mut w = ParquetWriter::new(&s).unwrap();
    let resume = w.resume_offset(committed);
    assert_eq!(resume, committed / 100 * 100);
    assert!(resume < committed, "the test restarts mid-window");
    for (o, e) in events.iter().filter(|(o, _)| *o >= resume) {
        w.add(1, *o, e);
    }
    w.flush().unwrap();
    assert_eq!(tree(root, ""), tree(&reference, ""));
}

fn windows_cut_files_with_the_right_names_rows_and_columns(root: &Root) {
    let date = today();
    let day = date;
    let mut w = ParquetWriter::new(&settings(root, 10)).unwrap();
    for o in 0..30u64 {
        w.add(
            3,
            o as i64,
            &step_event("acme", o, noon(day) + chrono::Duration::seconds(o as i64)),
        );
    }
    // Runs only in the middle window.
    for o in [12u64, 13] {
        w.add(3, 100 + o as i64, &run_event("acme", o, noon(day)));
    }
    w.flush().unwrap();

    let steps = self::day(Tier::Warm, Table::Steps, date);
    assert_eq!(
        names(root, &steps),
        vec![file(3, 0, 10), file(3, 10, 20), file(3, 20, 30)]
    );
    for (k, name) in names(root, &steps).iter().enumerate() {
        let b = read(root, &steps, name);
        assert_eq!(b.schema(), Table::Steps.file_schema());
        assert_eq!(b.num_rows(), 10);
        let first = k as i64 * 10;
        assert_eq!(offsets(&b), (first..first + 10).collect::<Vec<_>>());
        assert!(
            col::<Int32Array>(&b, "kafka_partition")
                .values()
                .iter()
                .all(|p| *p == 3)
        );
        let status = col::<StringArray>(&b, "status");
        let step = col::<StringArray>(&b, "step");
        let connector = col::<StringArray>(&b, "connector");
        let at = col::<TimestampMicrosecondArray>(&b, "at");
        let error = col::<StringArray>(&b, "error_class");
        let attempt = col::<Int32Array>(&b, "attempt");
        for i in 0..10 {
            let n = first as u64 + i as u64;
            assert_eq!(
                status.value(i),
                if n.is_multiple_of(5) {
                    "failed"
                } else {
                    "succeeded"
                }
            );
            assert_eq!(step.value(i), format!("s{}", n % 4));
            assert_eq!(connector.is_null(i), !n.is_multiple_of(2));
            assert_eq!(error.is_null(i), !n.is_multiple_of(5));
            assert_eq!(attempt.value(i), 1 + (n % 3) as i32);
            assert_eq!(
                at.value(i),
                (noon(day) + chrono::Duration::seconds(n as i64)).timestamp_micros()
            );
        }
    }

    let runs = self::day(Tier::Warm, Table::Runs, date);
    assert_eq!(names(root, &runs), vec![file(3, 110, 120)]);
    let b = read(root, &runs, &file(3, 110, 120));
    assert_eq!(b.schema(), Table::Runs.file_schema());
    assert_eq!(offsets(&b), vec![112, 113]);
    let run_id = col::<StringArray>(&b, "run_id");
    assert_eq!(run_id.value(0), uuid::Uuid::from_u128(12).to_string());
    assert_eq!(col::<StringArray>(&b, "status").value(0), "running");
    assert_eq!(col::<StringArray>(&b, "source").value(0), "cron");
    assert_eq!(
        col::<Int64Array>(&b, "input_bytes").value(0),
        r#"{"id":12}"#.len() as i64
    );
    assert!(col::<Int64Array>(&b, "duration_ms").is_null(0));
    assert_eq!(col::<Int64Array>(&b, "duration_ms").value(1), 1500);
    assert_eq!(
        col::<Int64Array>(&b, "output_bytes").value(1),
        r#"[13,"done"]"#.len() as i64
    );
    assert!(col::<StringArray>(&b, "source").is_null(1));
}

fn files_are_snappy_and_name_no_library_version(root: &Root) {
    let mut w = ParquetWriter::new(&settings(root, 10)).unwrap();
    w.add(0, 0, &step_event("acme", 1, noon(today())));
    w.flush().unwrap();
    let b = reader(
        root,
        &day(Tier::Warm, Table::Steps, today()),
        &file(0, 0, 10),
    );
    let md = b.metadata();
    assert_eq!(md.file_metadata().created_by(), Some("aiq-sink"));
    assert_eq!(md.num_row_groups(), 1);
    assert_eq!(md.row_group(0).column(0).compression(), Compression::SNAPPY);
}

/// Steps of one tenant over offsets `0..n`, on `day`.
fn day_steps(day: NaiveDate, offsets: std::ops::Range<i64>) -> Vec<(i64, Event)> {
    offsets
        .map(|o| {
            (
                o,
                step_event("acme", o as u64, noon(day) + chrono::Duration::seconds(o)),
            )
        })
        .collect()
}

fn compaction_merges_old_days_once_and_a_replay_adds_no_copies(root: &Root) {
    let s = settings(root, 10);
    let old = today().checked_sub_days(Days::new(2)).unwrap();
    let mut events = day_steps(old, 0..25);
    events.extend(day_steps(today(), 25..45));
    let mut w = ParquetWriter::new(&s).unwrap();
    for (o, e) in &events {
        w.add(0, *o, e);
        w.add(1, *o, e);
    }
    w.flush().unwrap();
    let old_dir = day(Tier::Warm, Table::Steps, old);
    let new_dir = day(Tier::Warm, Table::Steps, today());
    assert_eq!(names(root, &old_dir).len(), 6);
    let today_files = tree(root, &new_dir);
    // What a killed write leaves behind on disk: the store's staging file, and a temp
    // file of an earlier version. An object store puts whole objects or none.
    let leftovers = root._dir.as_ref().map(|d| {
        let dir = d.path().join(&old_dir);
        let files = [
            dir.join("p0000-o00000000000000000000-00000000000000000010.parquet#4"),
            dir.join(".p0000-o0-10.parquet.1.2.tmp"),
        ];
        for f in &files {
            std::fs::write(f, b"partial").unwrap();
        }
        files
    });

    let t = Instant::now();
    let report = compact(&s, today()).unwrap();
    println!("compact: {report:?} in {:?}", t.elapsed());
    assert_eq!(
        report,
        CompactReport {
            merged_files: 6,
            written_files: 2,
            archived_days: 0,
            deleted_days: 0
        }
    );
    assert_eq!(names(root, &old_dir), vec![file(0, 0, 30), file(1, 0, 30)]);
    for f in leftovers.iter().flatten() {
        assert!(!f.exists(), "{} is cleaned up", f.display());
    }
    for p in 0..2 {
        let b = read(root, &old_dir, &file(p, 0, 30));
        assert_eq!(offsets(&b), (0..25).collect::<Vec<_>>());
        assert!(
            col::<Int32Array>(&b, "kafka_partition")
                .values()
                .iter()
                .all(|x| *x == p)
        );
    }
    assert_eq!(
        tree(root, &new_dir),
        today_files,
        "today's folder is left alone"
    );

    let after = tree(root, "");
    assert_eq!(compact(&s, today()).unwrap(), CompactReport::default());
    assert_eq!(tree(root, ""), after, "a second run changes nothing");

    // A replay from the start after compaction: the merged files cover the old windows.
    let mut w = ParquetWriter::new(&s).unwrap();
    for (o, e) in &events {
        w.add(0, *o, e);
        w.add(1, *o, e);
    }
    w.flush().unwrap();
    assert_eq!(tree(root, ""), after, "the replay added no copies");
}

fn rows_that_reach_a_compacted_window_late_join_the_merged_file_in_order(root: &Root) {
    let s = settings(root, 10);
    let old = today().checked_sub_days(Days::new(2)).unwrap();
    let events = day_steps(old, 0..30);
    let add = |w: &mut ParquetWriter, range: std::ops::Range<i64>| {
        for (o, e) in events.iter().filter(|(o, _)| range.contains(o)) {
            w.add(0, *o, e);
        }
    };
    // Offsets 5..=8 of window 0 were never flushed before the day was compacted.
    let mut w = ParquetWriter::new(&s).unwrap();
    add(&mut w, 0..5);
    w.flush().unwrap();
    let mut w = ParquetWriter::new(&s).unwrap();
    add(&mut w, 20..25);
    w.flush().unwrap();
    compact(&s, today()).unwrap();
    let dir = day(Tier::Warm, Table::Steps, old);
    assert_eq!(names(root, &dir), vec![file(0, 0, 30)]);

    // A replay of window 0 brings them; the merged file gains them, in order.
    let mut w = ParquetWriter::new(&s).unwrap();
    add(&mut w, 0..9);
    w.flush().unwrap();
    assert_eq!(names(root, &dir), vec![file(0, 0, 30)]);
    let b = read(root, &dir, &file(0, 0, 30));
    let expected: Vec<i64> = (0..9).chain(20..25).collect();
    assert_eq!(offsets(&b), expected);
    assert_eq!(col::<StringArray>(&b, "step").value(7), "s3");

    // Late rows of the open window 2, after the merged rows.
    add(&mut w, 25..27);
    w.flush().unwrap();
    let after = tree(root, "");
    let b = read(root, &dir, &file(0, 0, 30));
    let expected: Vec<i64> = (0..9).chain(20..27).collect();
    assert_eq!(offsets(&b), expected);

    // Replaying everything again adds nothing and leaves the bytes alone.
    let mut w = ParquetWriter::new(&s).unwrap();
    add(&mut w, 0..9);
    add(&mut w, 20..27);
    w.flush().unwrap();
    assert_eq!(tree(root, ""), after);
    assert_eq!(compact(&s, today()).unwrap(), CompactReport::default());
}

fn old_days_move_to_the_archive_with_zstd_and_older_ones_are_deleted(root: &Root) {
    let s = settings(root, 10);
    let archived = today().checked_sub_days(Days::new(400)).unwrap();
    let expired = today().checked_sub_days(Days::new(3000)).unwrap();
    let mut w = ParquetWriter::new(&s).unwrap();
    let mut events = day_steps(archived, 0..15);
    events.extend(day_steps(expired, 15..20));
    for (o, e) in &events {
        w.add(2, *o, e);
    }
    w.add(2, 20, &run_event("acme", 3, noon(archived)));
    w.flush().unwrap();

    let report = compact(&s, today()).unwrap();
    assert_eq!(
        report,
        CompactReport {
            merged_files: 2,
            written_files: 3,
            archived_days: 2,
            deleted_days: 1
        }
    );
    let warm = day(Tier::Warm, Table::Steps, archived);
    let arch = day(Tier::Archive, Table::Steps, archived);
    assert!(!exists(root, &warm));
    assert!(!exists(root, &day(Tier::Warm, Table::Steps, expired)));
    if let Some(d) = &root._dir {
        assert!(!d.path().join(&warm).exists(), "no empty folder is left");
    }
    assert_eq!(names(root, &arch), vec![file(2, 0, 20)]);
    let b = reader(root, &arch, &file(2, 0, 20));
    let codec = b.metadata().row_group(0).column(0).compression();
    assert!(matches!(codec, Compression::ZSTD(_)), "{codec:?}");
    assert_eq!(
        offsets(&read(root, &arch, &file(2, 0, 20))),
        (0..15).collect::<Vec<_>>()
    );
    let runs = day(Tier::Archive, Table::Runs, archived);
    assert_eq!(names(root, &runs), vec![file(2, 20, 30)]);

    let after = tree(root, "");
    assert_eq!(compact(&s, today()).unwrap(), CompactReport::default());
    assert_eq!(tree(root, ""), after);

    // A replay of archived days writes nothing back into the warm tier.
    let mut w = ParquetWriter::new(&s).unwrap();
    for (o, e) in &events[..15] {
        w.add(2, *o, e);
    }
    w.flush().unwrap();
    assert!(!exists(root, &warm));

    // Seven years on, the archive goes too.
    let later = archived.checked_add_days(Days::new(2556)).unwrap();
    let report = compact(&s, later).unwrap();
    assert_eq!(report.deleted_days, 2);
    assert!(!exists(root, &arch));
    assert!(!exists(root, &runs));
}

fn a_revoked_partition_forgets_its_unwritten_rows(root: &Root) {
    let mut w = ParquetWriter::new(&settings(root, 10)).unwrap();
    for (o, e) in day_steps(today(), 0..5) {
        w.add(4, o, &e);
        w.add(5, o, &e);
    }
    w.revoke(4);
    w.flush().unwrap();
    assert_eq!(
        names(root, &day(Tier::Warm, Table::Steps, today())),
        vec![file(5, 0, 10)]
    );
}

#[test]
fn an_unwritable_root_is_reported_with_its_path_and_retried() {
    let root = Root::local();
    let base = root._dir.as_ref().unwrap().path();
    // The tenant's folder is a file: nothing can be written below it.
    let tenant = base.join("warm/steps/tenant=acme");
    std::fs::create_dir_all(tenant.parent().unwrap()).unwrap();
    std::fs::write(&tenant, b"not a folder").unwrap();
    let mut w = ParquetWriter::new(&settings(&root, 10)).unwrap();
    for (o, e) in day_steps(today(), 0..15) {
        w.add(0, o, &e);
    }
    let err = w.flush().unwrap_err().to_string();
    assert!(err.contains("tenant=acme"), "{err}");
    std::fs::remove_file(&tenant).unwrap();
    w.flush().unwrap();
    assert_eq!(
        names(&root, &day(Tier::Warm, Table::Steps, today())),
        vec![file(0, 0, 10), file(0, 10, 20)]
    );
}

#[test]
fn an_unreachable_store_is_reported_and_the_rows_are_kept_for_the_next_flush() {
    let Some(good) = Root::azurite() else { return };
    // The same container through an endpoint where nothing listens.
    let opts: BTreeMap<String, String> = [
        ("azure_storage_use_emulator", "false"),
        ("azure_storage_account_name", "devstoreaccount1"),
        (
            "azure_storage_account_key",
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
        ),
        ("azure_storage_endpoint", "http://127.0.0.1:9/devstoreaccount1"),
        ("allow_http", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let bad = ParquetSettings {
        store_options: opts,
        ..settings(&good, 10)
    };
    let mut w = ParquetWriter::new(&bad).unwrap();
    for (o, e) in day_steps(today(), 0..15) {
        w.add(0, o, &e);
    }
    let t = Instant::now();
    let err = w.flush().unwrap_err().to_string();
    println!("unreachable store reported in {:?}: {err}", t.elapsed());
    assert!(err.contains("steps/tenant=acme"), "{err}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        t.elapsed()
    );
    assert!(!exists(&good, ""), "nothing was written");
    // The writer that can reach the store writes the same rows.
    let mut w = ParquetWriter::new(&settings(&good, 10)).unwrap();
    for (o, e) in day_steps(today(), 0..15) {
        w.add(0, o, &e);
    }
    w.flush().unwrap();
    assert_eq!(
        names(&good, &day(Tier::Warm, Table::Steps, today())),
        vec![file(0, 0, 10), file(0, 10, 20)]
    );
}

/// A sequence of events: (offset gap, tenant, day, run or step).
fn arb_events() -> impl Strategy<Value = Vec<(i64, Event)>> {
    prop::collection::vec((1i64..4, 0usize..3, 0u64..3, any::<bool>()), 1..120).prop_map(|v| {
        let mut offset = 0;
        v.into_iter()
            .enumerate()
            .map(|(i, (gap, tenant, day, run))| {
                offset += gap;
                let tenant = ["acme", "globex", "initech"][tenant];
                let at = noon(today().checked_sub_days(Days::new(day)).unwrap());
                let e = if run {
                    run_event(tenant, i as u64, at)
                } else {
                    step_event(tenant, i as u64, at)
                };
                (offset, e)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn any_split_into_flushes_and_any_restart_gives_the_same_files(
        events in arb_events(),
        window in 5i64..40,
        flushes in prop::collection::vec(any::<bool>(), 120),
        cut in any::<prop::sample::Index>(),
    ) {
        let reference = Root::local();
        write_all(&reference, window, &events, 0);
        let expected = tree(&reference, "");

        let split = Root::local();
        let s = settings(&split, window);
        let mut w = ParquetWriter::new(&s).unwrap();
        for (i, (o, e)) in events.iter().enumerate() {
            w.add(1, *o, e);
            if flushes[i] {
                w.flush().unwrap();
            }
        }
        w.flush().unwrap();
        prop_assert_eq!(&tree(&split, ""), &expected);

        let restart = Root::local();
        let s = settings(&restart, window);
        let c = cut.index(events.len());
        let committed = {
            let mut w = ParquetWriter::new(&s).unwrap();
            for (o, e) in &events[..c] {
                w.add(1, *o, e);
            }
            w.flush().unwrap();
            events[c].0
        };
        let mut w = ParquetWriter::new(&s).unwrap();
        let resume = w.resume_offset(committed);
        for (o, e) in events.iter().filter(|(o, _)| *o >= resume) {
            w.add(1, *o, e);
        }
        w.flush().unwrap();
        prop_assert_eq!(&tree(&restart, ""), &expected);
    }
}

#[test]
#[ignore = "a throughput figure, not a check: cargo test -p aiq-sink --test parquet -- --ignored --nocapture"]
fn throughput_of_a_million_step_events() {
    let root = Root::local();
    let s = settings(&root, 50_000);
    let events: Vec<Event> = (0..1000u64)
        .map(|i| step_event(["acme", "globex"][(i % 2) as usize], i, noon(today())))
        .collect();
    let mut w = ParquetWriter::new(&s).unwrap();
    let t = Instant::now();
    let mut flushing = std::time::Duration::ZERO;
    let n = 1_000_000i64;
    for o in 0..n {
        w.add((o % 4) as i32, o / 4, &events[(o / 4 % 1000) as usize]);
        if o % 20_000 == 19_999 {
            let f = Instant::now();
            w.flush().unwrap();
            flushing += f.elapsed();
        }
    }
    w.flush().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let files = tree(&root, "");
    let bytes: usize = files.values().map(Vec::len).sum();
    println!(
        "1M step events, 4 partitions, window 50k, flush every 20k: {secs:.2} s \
         ({:.2} s in flush), {:.0} events/s, {} files, {} bytes",
        flushing.as_secs_f64(),
        n as f64 / secs,
        files.len(),
        bytes
    );
    assert_eq!(files.len(), 2 * 4 * 5);
}
