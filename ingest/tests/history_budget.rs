//! Filtered run lists against real Cassandra, with rows written by the sink's own
//! statements: the index tables answer a filter from matching rows only, the status
//! tables follow a run's status, and the per-request budget cuts a long scan into pages
//! that continue from a cursor and list every matching run exactly once.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use aiq_auth::Role;
use aiq_ingest::history::Budget;
use aiq_sink::store::{Table, Write, event_writes};
use aiq_testkit::{CQL, KAFKA, require_service};
use aiq_topics::{Event, RunEvent, RunId, RunStatus, TenantId, TriggerSource, WorkflowId};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use support::{Api, api, call, get, token};
use uuid::Uuid;

fn base() -> DateTime<Utc> {
    "2026-11-10T00:30:00Z".parse().unwrap()
}

const RANGE: &str = "from=2026-11-09T00:00:00Z&to=2026-11-14T00:00:00Z";

fn event(run: Uuid, workflow: &str, status: RunStatus, started_at: DateTime<Utc>) -> RunEvent {
    let terminal = status.is_terminal();
    RunEvent {
        tenant: TenantId::new("acme").unwrap(),
        run: RunId::from_uuid(run),
        workflow: WorkflowId::new(workflow).unwrap(),
        version: 1,
        status,
        at: if terminal {
            started_at + Duration::seconds(2)
        } else {
            started_at
        },
        input: None,
        output: None,
        error: None,
        started_at: terminal.then_some(started_at),
        source: (!terminal).then_some(TriggerSource::Api),
        scheduled_at: None,
    }
}

/// The events' writes through the sink's store, `runs` left out (lists never read it).
async fn sink(api: &Api, events: &[RunEvent]) {
    let store = aiq_sink::Store::new(api.session.clone(), &api.cql.keyspace)
        .await
        .unwrap();
    let retention = aiq_sink::RetentionSettings::default();
    let writes: Vec<Write> = events
        .iter()
        .flat_map(|e| event_writes(&Event::Run(e.clone()), &retention))
        .filter(|w| w.table != Table::Runs)
        .collect();
    let metrics = Arc::new(aiq_sink::metrics::Metrics::new(&prometheus::Registry::new()));
    store.execute(Arc::new(writes), 64, &metrics).await.unwrap();
}

async fn drop_keyspace(api: &Api) {
    let ks = &api.cql.keyspace;
    api.session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {ks}"), ())
        .await
        .unwrap();
}

async fn list(router: &axum::Router, query: &str) -> Value {
    let uri = format!("/v1/runs?{RANGE}&{query}");
    let (status, _, body) = call(router, get(&uri, &token("acme", Role::User))).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body
}

struct Walked {
    ids: Vec<String>,
    pages: usize,
    truncated: usize,
    max_rows: u64,
}

/// Every page of a list; checks that a truncated page's cursor is its next token.
async fn walk(router: &axum::Router, query: &str) -> Walked {
    let mut w = Walked {
        ids: Vec::new(),
        pages: 0,
        truncated: 0,
        max_rows: 0,
    };
    let mut token: Option<String> = None;
    loop {
        let q = match &token {
            Some(t) => format!("{query}&page_token={t}"),
            None => query.to_owned(),
        };
        let body = list(router, &q).await;
        w.pages += 1;
        let scan = &body["scan"];
        w.max_rows = w.max_rows.max(scan["scanned_rows"].as_u64().unwrap());
        if scan["truncated"] == true {
            w.truncated += 1;
            assert_eq!(scan["resume_cursor"], body["next_page_token"], "{body}");
            assert!(body["next_page_token"].is_string());
        } else {
            assert_eq!(scan["resume_cursor"], Value::Null);
        }
        for r in body["runs"].as_array().unwrap() {
            w.ids.push(r["run_id"].as_str().unwrap().to_owned());
        }
        match body["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return w,
        }
        assert!(w.pages < 1000, "the pages never end");
    }
}

/// The router over the same App with another history store.
fn router_with(api: &Api, history: aiq_ingest::history::HistoryStore) -> axum::Router {
    let mut app = api.ingest.app.clone();
    app.history = history;
    aiq_ingest::http::router(app).0
}

fn exactly_once(ids: &[String], want: &BTreeSet<String>, what: &str) {
    let set: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "{what}: a run listed twice");
    assert_eq!(&set, want, "{what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_read_only_matching_rows_and_the_budget_cuts_a_scan_into_pages() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let api = api(brokers, cql, "histbudget").await;
    // 2,000 succeeded runs of `alpha` over three days, one every two minutes, 20 failed
    // runs of `beta` among them and 5 still running.
    let mut events = Vec::new();
    let (mut failed, mut running) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..2_000_i64 {
        let id = Uuid::new_v4();
        let at = base() + Duration::minutes(2 * i);
        let (workflow, status) = match i {
            _ if i % 100 == 7 => ("beta", RunStatus::Failed),
            _ if i % 400 == 9 => ("beta", RunStatus::Running),
            _ => ("alpha", RunStatus::Succeeded),
        };
        match status {
            RunStatus::Failed => failed.insert(id.to_string()),
            RunStatus::Running => running.insert(id.to_string()),
            _ => false,
        };
        events.push(event(id, workflow, RunStatus::Running, at));
        if status.is_terminal() {
            events.push(event(id, workflow, status, at));
        }
    }
    let clock = Instant::now();
    sink(&api, &events).await;
    println!("wrote 2,000 runs in {:?}", clock.elapsed());
    assert_eq!((failed.len(), running.len()), (20, 5));

    // The indexes: a filter that matches nothing reads nothing; one that matches reads
    // its runs and (for a status) each run's row, nothing else.
    for query in [
        "workflow=gamma",
        "status=cancelled",
        "workflow=alpha&status=failed",
    ] {
        let clock = Instant::now();
        let body = list(&api.router, &format!("{query}&limit=50")).await;
        println!(
            "indexed {query}: {:?}, scan {}",
            clock.elapsed(),
            body["scan"]
        );
        assert_eq!(body["runs"], serde_json::json!([]), "{query}");
        assert_eq!(body["next_page_token"], Value::Null);
        assert_eq!(body["scan"]["scanned_rows"], 0, "{query}");
        assert_eq!(body["scan"]["truncated"], false);
        assert_eq!(body["scan"]["scanned_partitions"], 6, "six UTC days");
    }
    let body = list(&api.router, "status=failed&limit=500").await;
    let ids: Vec<String> = body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect();
    exactly_once(&ids, &failed, "status=failed");
    assert!(body["runs"].as_array().unwrap().iter().all(|r| {
        r["status"] == "failed" && r["workflow"] == "beta" && r["trigger_source"] == "api"
    }));
    assert_eq!(body["scan"]["scanned_rows"], 40, "20 keys and 20 run rows");
    let w = walk(&api.router, "workflow=beta&status=running&limit=2").await;
    exactly_once(&w.ids, &running, "beta running, pages of 2");
    assert_eq!((w.pages, w.truncated), (3, 0));

    // The same filter over runs_by_day, filtered here (the plan before the indexes),
    // under a budget of 300 rows: pages cut by the budget, each continuing where the
    // last stopped, every matching run once.
    let budget = Budget {
        rows: 300,
        partitions: 32,
    };
    let scanning = router_with(
        &api,
        api.ingest
            .app
            .history
            .clone()
            .scanning()
            .with_budget(budget),
    );
    let clock = Instant::now();
    let w = walk(&scanning, "workflow=gamma&limit=50").await;
    println!(
        "scanning workflow=gamma: {} pages in {:?}, at most {} rows each",
        w.pages,
        clock.elapsed(),
        w.max_rows
    );
    assert!(w.ids.is_empty());
    assert_eq!(w.max_rows, 300, "no request reads past its budget");
    assert_eq!(w.pages, 7, "2,000 rows in cuts of 300");
    assert_eq!(w.truncated, 6);
    for limit in [3, 50] {
        let w = walk(&scanning, &format!("status=failed&limit={limit}")).await;
        exactly_once(
            &w.ids,
            &failed,
            &format!("scanning status=failed, limit {limit}"),
        );
        assert!(w.truncated > 0 && w.max_rows <= 300);
    }

    // A budget on the indexed plan: stale keys (a `running` whose delete was lost) are
    // checked against the run's row and skipped, and the cuts still list each running
    // run once.
    let ks = &api.cql.keyspace;
    for e in events
        .iter()
        .filter(|e| e.status == RunStatus::Running)
        .take(400)
    {
        api.session
            .query_unpaged(
                format!(
                    "INSERT INTO {ks}.runs_by_status_day (tenant, status, day, started_at, \
                     run_id) VALUES ('acme', 'running', ?, ?, ?)"
                ),
                (e.at.date_naive(), e.at, e.run.as_uuid()),
            )
            .await
            .unwrap();
    }
    let body = list(&api.router, "status=running&limit=500").await;
    assert_eq!(
        body["runs"].as_array().unwrap().len(),
        5,
        "stale keys are skipped"
    );
    let tight = Budget {
        rows: 100,
        partitions: 32,
    };
    let budgeted = router_with(&api, api.ingest.app.history.clone().with_budget(tight));
    let w = walk(&budgeted, "status=running&limit=2").await;
    exactly_once(&w.ids, &running, "indexed status=running under a budget");
    assert!(w.truncated > 0 && w.max_rows <= 100 + 3, "{}", w.max_rows);

    // A partition budget: the cursor between days resumes at the next day's start.
    let days = Budget {
        rows: 5_000,
        partitions: 2,
    };
    let by_days = router_with(&api, api.ingest.app.history.clone().with_budget(days));
    let w = walk(&by_days, "status=failed&limit=500").await;
    exactly_once(&w.ids, &failed, "two partitions a request");
    assert_eq!((w.pages, w.truncated), (3, 2), "six days, two a request");
    drop_keyspace(&api).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_status_change_moves_a_run_between_status_lists() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let api = api(brokers, cql, "histstatus").await;
    let run = Uuid::new_v4();
    let other = Uuid::new_v4();
    let at = base() + Duration::hours(30);
    let listed = async |query: &str| -> Vec<String> {
        let body = list(&api.router, &format!("{query}&limit=50")).await;
        body["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{}:{}", r["run_id"].as_str().unwrap(), r["status"]))
            .collect()
    };
    let running = format!("{run}:\"running\"");
    let done = [format!("{run}:\"succeeded\"")];
    sink(&api, &[event(run, "alpha", RunStatus::Running, at)]).await;
    sink(&api, &[event(other, "alpha", RunStatus::Running, at)]).await;
    assert!(listed("status=running").await.contains(&running));
    assert!(
        listed("workflow=alpha&status=running")
            .await
            .contains(&running)
    );
    assert_eq!(listed("status=succeeded").await, Vec::<String>::new());

    sink(&api, &[event(run, "alpha", RunStatus::Succeeded, at)]).await;
    assert_eq!(listed("status=succeeded").await, done.clone());
    assert_eq!(
        listed("workflow=alpha&status=succeeded").await,
        done.clone()
    );
    let still = [format!("{other}:\"running\"")];
    assert_eq!(listed("status=running").await, still);
    assert_eq!(listed("workflow=alpha&status=running").await, still);
    assert!(listed("workflow=alpha").await.contains(&done[0]));

    // The document describes the answer's `scan`.
    let (status, _, doc) = call(&api.router, get("/openapi.json", "")).await;
    assert_eq!(status, StatusCode::OK);
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["RunList"]["properties"]["scan"]["$ref"],
        "#/components/schemas/ScanReport"
    );
    for field in [
        "truncated",
        "scanned_rows",
        "scanned_partitions",
        "resume_cursor",
    ] {
        assert!(
            schemas["ScanReport"]["properties"][field].is_object(),
            "{field}"
        );
    }

    // A replayed `running` does not bring it back.
    sink(&api, &[event(run, "alpha", RunStatus::Running, at)]).await;
    assert_eq!(listed("status=running").await, still);
    assert_eq!(listed("status=succeeded").await, done);
    drop_keyspace(&api).await;
}
