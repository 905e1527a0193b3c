//! The first page of filtered run lists over a month of history (1,000,000 runs of one
//! tenant by default), read three ways: filtered here over `runs_by_day` without a
//! budget (the plan before the index tables), the same under the default budget, and
//! from the index tables. Prints a table of latency and rows read for BENCHMARKS.md.
//!
//!   cargo test -p aiq-ingest --test history_scale -- --ignored --nocapture
//!
//! `AIQ_HISTORY_RUNS` sets the number of runs; `AIQ_HISTORY_KEYSPACE` reuses a keyspace
//! an earlier run loaded (and kept with `AIQ_HISTORY_KEEP=1`).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiq_ingest::history::{Budget, HistoryStore, RunFilter, Window};
use aiq_sql::{CqlSettings, apply_schema, connect};
use aiq_testkit::{CQL, require_service};
use chrono::{DateTime, NaiveDate, Utc};
use scylla::client::session::Session;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;

const TENANT: &str = "acme";
const WORKFLOWS: usize = 20;
const BATCH: usize = 100;

fn from() -> DateTime<Utc> {
    "2026-10-01T00:00:00Z".parse().unwrap()
}

fn to() -> DateTime<Utc> {
    "2026-11-01T00:00:00Z".parse().unwrap()
}

/// Run `i`'s workflow and status: 20 workflows in turn, and `wf-rare` for one run in
/// 10,000; 2.5% failed, 0.1% timed out, the rest succeeded (none cancelled).
fn shape(i: usize) -> (String, &'static str) {
    let workflow = if i % 10_000 == 5 {
        "wf-rare".to_owned()
    } else {
        format!("wf-{:02}", i % WORKFLOWS)
    };
    let status = match i {
        _ if i % 40 == 1 => "failed",
        _ if i % 1_000 == 3 => "timed_out",
        _ => "succeeded",
    };
    (workflow, status)
}

/// Sends `rows` of one table as unlogged batches of one partition each.
async fn load<K, V>(
    session: &Arc<Session>,
    statement: &PreparedStatement,
    rows: HashMap<K, Vec<V>>,
    gate: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
) where
    V: SerializeRow + Clone + Send + Sync + 'static,
{
    for (_, part) in rows {
        for chunk in part.chunks(BATCH) {
            let mut batch = Batch::new(BatchType::Unlogged);
            for _ in chunk {
                batch.append_statement(statement.clone());
            }
            let values = chunk.to_vec();
            let permit = Arc::clone(gate).acquire_owned().await.unwrap();
            let session = Arc::clone(session);
            tasks.spawn(async move {
                session.batch(&batch, values).await.unwrap();
                drop(permit);
            });
        }
    }
}

type DayRow = (
    &'static str,
    NaiveDate,
    DateTime<Utc>,
    Uuid,
    String,
    i32,
    &'static str,
    &'static str,
    DateTime<Utc>,
    i64,
);
type WorkflowRow = (
    &'static str,
    String,
    NaiveDate,
    DateTime<Utc>,
    Uuid,
    i32,
    &'static str,
    &'static str,
    DateTime<Utc>,
    i64,
);
type StatusRow = (&'static str, &'static str, NaiveDate, DateTime<Utc>, Uuid);
type BothRow = (
    &'static str,
    String,
    &'static str,
    NaiveDate,
    DateTime<Utc>,
    Uuid,
);

/// `runs` runs spread evenly over the month, in `runs_by_day` and the three index
/// tables, with the columns the sink writes.
async fn fill(session: &Arc<Session>, ks: &str, runs: usize) {
    let prepare = |cql: String| {
        let session = Arc::clone(session);
        async move { session.prepare(cql).await.unwrap() }
    };
    let by_day = prepare(format!(
        "INSERT INTO {ks}.runs_by_day (tenant, day, started_at, run_id, workflow, version, \
         status, trigger_source, finished_at, duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .await;
    let by_workflow = prepare(format!(
        "INSERT INTO {ks}.runs_by_workflow_day (tenant, workflow, day, started_at, run_id, \
         version, status, trigger_source, finished_at, duration_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .await;
    let by_status = prepare(format!(
        "INSERT INTO {ks}.runs_by_status_day (tenant, status, day, started_at, run_id) \
         VALUES (?, ?, ?, ?, ?)"
    ))
    .await;
    let by_both = prepare(format!(
        "INSERT INTO {ks}.runs_by_workflow_status_day (tenant, workflow, status, day, \
         started_at, run_id) VALUES (?, ?, ?, ?, ?, ?)"
    ))
    .await;
    let span_ms = (to() - from()).num_milliseconds() - 1;
    let gate = Arc::new(Semaphore::new(16));
    let mut tasks = JoinSet::new();
    let mut day_rows: HashMap<NaiveDate, Vec<DayRow>> = HashMap::new();
    let mut wf_rows: HashMap<(String, NaiveDate), Vec<WorkflowRow>> = HashMap::new();
    let mut status_rows: HashMap<(&str, NaiveDate), Vec<StatusRow>> = HashMap::new();
    let mut both_rows: HashMap<(String, &str, NaiveDate), Vec<BothRow>> = HashMap::new();
    let mut current: Option<NaiveDate> = None;
    let clock = Instant::now();
    for i in 0..runs {
        let at = from() + chrono::Duration::milliseconds(span_ms * i as i64 / runs as i64);
        let day = at.date_naive();
        if current.is_some_and(|d| d != day) {
            load(
                session,
                &by_day,
                std::mem::take(&mut day_rows),
                &gate,
                &mut tasks,
            )
            .await;
            load(
                session,
                &by_workflow,
                std::mem::take(&mut wf_rows),
                &gate,
                &mut tasks,
            )
            .await;
            load(
                session,
                &by_status,
                std::mem::take(&mut status_rows),
                &gate,
                &mut tasks,
            )
            .await;
            load(
                session,
                &by_both,
                std::mem::take(&mut both_rows),
                &gate,
                &mut tasks,
            )
            .await;
            while tasks.try_join_next().is_some() {}
            println!("loaded {day} ({i} runs, {:?})", clock.elapsed());
        }
        current = Some(day);
        let (workflow, status) = shape(i);
        let id = Uuid::new_v4();
        let done = at + chrono::Duration::seconds(3);
        day_rows.entry(day).or_default().push((
            TENANT,
            day,
            at,
            id,
            workflow.clone(),
            1,
            status,
            "api",
            done,
            3000,
        ));
        wf_rows.entry((workflow.clone(), day)).or_default().push((
            TENANT,
            workflow.clone(),
            day,
            at,
            id,
            1,
            status,
            "api",
            done,
            3000,
        ));
        status_rows
            .entry((status, day))
            .or_default()
            .push((TENANT, status, day, at, id));
        both_rows
            .entry((workflow.clone(), status, day))
            .or_default()
            .push((TENANT, workflow, status, day, at, id));
    }
    load(session, &by_day, day_rows, &gate, &mut tasks).await;
    load(session, &by_workflow, wf_rows, &gate, &mut tasks).await;
    load(session, &by_status, status_rows, &gate, &mut tasks).await;
    load(session, &by_both, both_rows, &gate, &mut tasks).await;
    while tasks.join_next().await.is_some() {}
    println!("loaded {runs} runs in {:?}", clock.elapsed());
}

struct Measured {
    median: Duration,
    rows: usize,
    partitions: usize,
    listed: usize,
    truncated: bool,
}

async fn measure(store: &HistoryStore, filter: &RunFilter) -> Measured {
    let window = Window::new(Some(from()), Some(to()), Utc::now()).unwrap();
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let clock = Instant::now();
        let page = store
            .list_runs(TENANT, window, filter, None, 50)
            .await
            .unwrap();
        times.push(clock.elapsed());
        last = Some(page);
    }
    times.sort();
    let page = last.unwrap();
    Measured {
        median: times[1],
        rows: page.scan.rows,
        partitions: page.scan.partitions,
        listed: page.items.len(),
        truncated: page.scan.truncated,
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "loads a month of history (minutes); run by hand for BENCHMARKS.md"]
async fn filtered_first_pages_over_a_month_of_history() {
    let contact_points = require_service!(CQL);
    let runs: usize = std::env::var("AIQ_HISTORY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let reuse = std::env::var("AIQ_HISTORY_KEYSPACE").ok();
    let cql = CqlSettings {
        contact_points,
        keyspace: reuse
            .clone()
            .unwrap_or_else(|| aiq_testkit::unique("histscale").to_lowercase()),
        replication_factor: 1,
        datacenters: vec![],
        username: None,
        password: None,
    };
    let session = Arc::new(connect(&cql).await.unwrap());
    apply_schema(&session, &cql, Utc::now()).await.unwrap();
    let ks = cql.keyspace.as_str();
    if reuse.is_none() {
        fill(&session, ks, runs).await;
    }
    let indexed = HistoryStore::new(Arc::clone(&session), ks).await.unwrap();
    let unbounded = Budget {
        rows: usize::MAX,
        partitions: usize::MAX,
    };
    let before = indexed.clone().scanning().with_budget(unbounded);
    let budgeted = indexed.clone().scanning();
    let filter = |workflow: Option<&str>, status: Option<&str>| RunFilter {
        workflow: workflow.map(str::to_owned),
        status: status.map(str::to_owned),
    };
    let cases = [
        ("none", filter(None, None)),
        ("workflow=wf-03", filter(Some("wf-03"), None)),
        ("workflow=wf-rare", filter(Some("wf-rare"), None)),
        ("workflow=wf-none", filter(Some("wf-none"), None)),
        ("status=failed", filter(None, Some("failed"))),
        ("status=cancelled", filter(None, Some("cancelled"))),
        (
            "workflow=wf-03&status=timed_out",
            filter(Some("wf-03"), Some("timed_out")),
        ),
    ];
    println!("\n{runs} runs of one tenant over 31 days; first page, limit=50, median of 3\n");
    println!("| filter | plan | ms | rows read | partitions | runs listed | truncated |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | --- |");
    for (name, f) in &cases {
        for (plan, store) in [
            ("runs_by_day, no budget (before)", &before),
            ("runs_by_day, default budget", &budgeted),
            ("index tables, default budget", &indexed),
        ] {
            let m = measure(store, f).await;
            println!(
                "| {name} | {plan} | {:.1} | {} | {} | {} | {} |",
                m.median.as_secs_f64() * 1000.0,
                m.rows,
                m.partitions,
                m.listed,
                m.truncated
            );
        }
    }
    if std::env::var("AIQ_HISTORY_KEEP").is_err() {
        session
            .query_unpaged(format!("DROP KEYSPACE IF EXISTS {ks}"), ())
            .await
            .unwrap();
    } else {
        println!("kept keyspace {ks}");
    }
}
