//! The Parquet writer and compaction against real files in temp folders: replays give
//! byte-identical files, windows cut files, and compaction merges, archives and deletes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aiq_sink::parquet::{CompactReport, ParquetSettings, ParquetWriter, compact};
use aiq_sql::layout::{FileName, Table, Tier, day_dir};
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

fn settings(root: &Path, window: i64) -> ParquetSettings {
    ParquetSettings {
        root: root.to_path_buf(),
        window_offsets: window,
        ..Default::default()
    }
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

/// Every file under `root` by relative path, with its bytes.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.insert(p.strip_prefix(root).unwrap().to_path_buf(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn read(path: &Path) -> RecordBatch {
    let b = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .with_batch_size(1 << 20);
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

fn write_all(root: &Path, window: i64, events: &[(i64, Event)], flush_every: usize) {
    let mut w = ParquetWriter::new(&settings(root, window)).unwrap();
    for (i, (o, e)) in events.iter().enumerate() {
        w.add(1, *o, e);
        if flush_every > 0 && i % flush_every == flush_every - 1 {
            w.flush().unwrap();
        }
    }
    w.flush().unwrap();
}

#[test]
fn a_replay_writes_the_same_names_and_bytes() {
    let events = mixed_events(400);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    write_all(a.path(), 100, &events, 37);
    write_all(b.path(), 100, &events, 0);
    let ta = tree(a.path());
    assert!(ta.len() >= 20, "{} files", ta.len());
    assert!(
        ta.keys().all(|p| !p.to_string_lossy().contains("/.")),
        "no temp files left"
    );
    assert_eq!(ta, tree(b.path()));

    // Replaying the same events over the first root rewrites the same files.
    write_all(a.path(), 100, &events, 11);
    assert_eq!(tree(a.path()), ta);
}

#[test]
fn a_restart_from_resume_offset_rebuilds_the_same_files() {
    let events = mixed_events(400);
    let reference = tempfile::tempdir().unwrap();
    write_all(reference.path(), 100, &events, 0);

    let root = tempfile::tempdir().unwrap();
    let s = settings(root.path(), 100);
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
    assert_eq!(tree(root.path()), tree(reference.path()));
}

#[test]
fn windows_cut_files_with_the_right_names_rows_and_columns() {
    let root = tempfile::tempdir().unwrap();
    let day = today();
    let mut w = ParquetWriter::new(&settings(root.path(), 10)).unwrap();
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

    let steps = day_dir(root.path(), Tier::Warm, Table::Steps, "acme", day);
    assert_eq!(
        names(&steps),
        vec![file(3, 0, 10), file(3, 10, 20), file(3, 20, 30)]
    );
    for (k, name) in names(&steps).iter().enumerate() {
        let b = read(&steps.join(name));
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

    let runs = day_dir(root.path(), Tier::Warm, Table::Runs, "acme", day);
    assert_eq!(names(&runs), vec![file(3, 110, 120)]);
    let b = read(&runs.join(file(3, 110, 120)));
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

#[test]
fn files_are_snappy_and_name_no_library_version() {
    let root = tempfile::tempdir().unwrap();
    let mut w = ParquetWriter::new(&settings(root.path(), 10)).unwrap();
    w.add(0, 0, &step_event("acme", 1, noon(today())));
    w.flush().unwrap();
    let path = day_dir(root.path(), Tier::Warm, Table::Steps, "acme", today()).join(file(0, 0, 10));
    let b = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
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

#[test]
fn compaction_merges_old_days_once_and_a_replay_adds_no_copies() {
    let root = tempfile::tempdir().unwrap();
    let s = settings(root.path(), 10);
    let old = today().checked_sub_days(Days::new(2)).unwrap();
    let mut events = day_steps(old, 0..25);
    events.extend(day_steps(today(), 25..45));
    let mut w = ParquetWriter::new(&s).unwrap();
    for (o, e) in &events {
        w.add(0, *o, e);
        w.add(1, *o, e);
    }
    w.flush().unwrap();
    let old_dir = day_dir(root.path(), Tier::Warm, Table::Steps, "acme", old);
    let new_dir = day_dir(root.path(), Tier::Warm, Table::Steps, "acme", today());
    assert_eq!(names(&old_dir).len(), 6);
    let today_files = tree(&new_dir);
    // What a crash mid-write leaves behind.
    std::fs::write(old_dir.join(".p0000-o0-10.parquet.1.2.tmp"), b"partial").unwrap();

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
    assert_eq!(names(&old_dir), vec![file(0, 0, 30), file(1, 0, 30)]);
    for p in 0..2 {
        let b = read(&old_dir.join(file(p, 0, 30)));
        assert_eq!(offsets(&b), (0..25).collect::<Vec<_>>());
        assert!(
            col::<Int32Array>(&b, "kafka_partition")
                .values()
                .iter()
                .all(|x| *x == p)
        );
    }
    assert_eq!(tree(&new_dir), today_files, "today's folder is left alone");

    let after = tree(root.path());
    assert_eq!(compact(&s, today()).unwrap(), CompactReport::default());
    assert_eq!(tree(root.path()), after, "a second run changes nothing");

    // A replay from the start after compaction: the merged files cover the old windows.
    let mut w = ParquetWriter::new(&s).unwrap();
    for (o, e) in &events {
        w.add(0, *o, e);
        w.add(1, *o, e);
    }
    w.flush().unwrap();
    assert_eq!(tree(root.path()), after, "the replay added no copies");
}

#[test]
fn rows_that_reach_a_compacted_window_late_join_the_merged_file_in_order() {
    let root = tempfile::tempdir().unwrap();
    let s = settings(root.path(), 10);
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
    let dir = day_dir(root.path(), Tier::Warm, Table::Steps, "acme", old);
    assert_eq!(names(&dir), vec![file(0, 0, 30)]);

    // A replay of window 0 brings them; the merged file gains them, in order.
    let mut w = ParquetWriter::new(&s).unwrap();
    add(&mut w, 0..9);
    w.flush().unwrap();
    assert_eq!(names(&dir), vec![file(0, 0, 30)]);
    let b = read(&dir.join(file(0, 0, 30)));
    let expected: Vec<i64> = (0..9).chain(20..25).collect();
    assert_eq!(offsets(&b), expected);
    assert_eq!(col::<StringArray>(&b, "step").value(7), "s3");

    // Late rows of the open window 2, after the merged rows.
    add(&mut w, 25..27);
    w.flush().unwrap();
    let after = tree(root.path());
    let b = read(&dir.join(file(0, 0, 30)));
    let expected: Vec<i64> = (0..9).chain(20..27).collect();
    assert_eq!(offsets(&b), expected);

    // Replaying everything again adds nothing and leaves the bytes alone.
    let mut w = ParquetWriter::new(&s).unwrap();
    add(&mut w, 0..9);
    add(&mut w, 20..27);
    w.flush().unwrap();
    assert_eq!(tree(root.path()), after);
    assert_eq!(compact(&s, today()).unwrap(), CompactReport::default());
}

#[test]
fn old_days_move_to_the_archive_with_zstd_and_older_ones_are_deleted() {
    let root = tempfile::tempdir().unwrap();
    let s = settings(root.path(), 10);
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
    let warm = day_dir(root.path(), Tier::Warm, Table::Steps, "acme", archived);
    let arch = day_dir(root.path(), Tier::Archive, Table::Steps, "acme", archived);
    assert!(!warm.exists());
    assert!(!day_dir(root.path(), Tier::Warm, Table::Steps, "acme", expired).exists());
    assert_eq!(names(&arch), vec![file(2, 0, 20)]);
    let path = arch.join(file(2, 0, 20));
    let b = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
    let codec = b.metadata().row_group(0).column(0).compression();
    assert!(matches!(codec, Compression::ZSTD(_)), "{codec:?}");
    assert_eq!(offsets(&read(&path)), (0..15).collect::<Vec<_>>());
    let runs = day_dir(root.path(), Tier::Archive, Table::Runs, "acme", archived);
    assert_eq!(names(&runs), vec![file(2, 20, 30)]);

    let after = tree(root.path());
    assert_eq!(compact(&s, today()).unwrap(), CompactReport::default());
    assert_eq!(tree(root.path()), after);

    // A replay of archived days writes nothing back into the warm tier.
    let mut w = ParquetWriter::new(&s).unwrap();
    for (o, e) in &events[..15] {
        w.add(2, *o, e);
    }
    w.flush().unwrap();
    assert!(!warm.exists());

    // Seven years on, the archive goes too.
    let later = archived.checked_add_days(Days::new(2556)).unwrap();
    let report = compact(&s, later).unwrap();
    assert_eq!(report.deleted_days, 2);
    assert!(!arch.exists());
    assert!(!runs.exists());
}

#[test]
fn a_revoked_partition_forgets_its_unwritten_rows() {
    let root = tempfile::tempdir().unwrap();
    let mut w = ParquetWriter::new(&settings(root.path(), 10)).unwrap();
    for (o, e) in day_steps(today(), 0..5) {
        w.add(4, o, &e);
        w.add(5, o, &e);
    }
    w.revoke(4);
    w.flush().unwrap();
    let dir = day_dir(root.path(), Tier::Warm, Table::Steps, "acme", today());
    assert_eq!(names(&dir), vec![file(5, 0, 10)]);
}

#[test]
fn an_unwritable_root_is_reported_with_its_path_and_retried() {
    let root = tempfile::tempdir().unwrap();
    let blocker = root.path().join("history");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let mut w = ParquetWriter::new(&settings(&blocker, 10)).unwrap();
    for (o, e) in day_steps(today(), 0..15) {
        w.add(0, o, &e);
    }
    let err = w.flush().unwrap_err().to_string();
    assert!(err.contains("history"), "{err}");
    std::fs::remove_file(&blocker).unwrap();
    w.flush().unwrap();
    let dir = day_dir(&blocker, Tier::Warm, Table::Steps, "acme", today());
    assert_eq!(names(&dir), vec![file(0, 0, 10), file(0, 10, 20)]);
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
        let reference = tempfile::tempdir().unwrap();
        write_all(reference.path(), window, &events, 0);
        let expected = tree(reference.path());

        let split = tempfile::tempdir().unwrap();
        let s = settings(split.path(), window);
        let mut w = ParquetWriter::new(&s).unwrap();
        for (i, (o, e)) in events.iter().enumerate() {
            w.add(1, *o, e);
            if flushes[i] {
                w.flush().unwrap();
            }
        }
        w.flush().unwrap();
        prop_assert_eq!(&tree(split.path()), &expected);

        let restart = tempfile::tempdir().unwrap();
        let s = settings(restart.path(), window);
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
        prop_assert_eq!(&tree(restart.path()), &expected);
    }
}

#[test]
#[ignore = "a throughput figure, not a check: cargo test -p aiq-sink --test parquet -- --ignored --nocapture"]
fn throughput_of_a_million_step_events() {
    let root = tempfile::tempdir().unwrap();
    let s = settings(root.path(), 50_000);
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
    let files = tree(root.path());
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
