//! The history API against real Cassandra: rows written the way the sink writes them,
//! read back through the real router for two tenants.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use aiq_auth::Role;
use aiq_testkit::{CQL, KAFKA, require_service};
use aiq_topics::{Event, RunEvent, RunId, RunStatus, TenantId, TriggerSource, WorkflowId};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use scylla::client::session::Session;
use scylla::value::MaybeUnset;
use serde_json::{Value, json};
use support::{Api, api, call, get, token};
use uuid::Uuid;

struct Run {
    tenant: &'static str,
    id: Uuid,
    workflow: &'static str,
    status: &'static str,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

struct Step {
    step: &'static str,
    iteration: i64,
    attempt: i32,
    status: &'static str,
    error: Option<(&'static str, &'static str)>,
}

fn opt<T>(v: Option<T>) -> MaybeUnset<T> {
    v.map_or(MaybeUnset::Unset, MaybeUnset::Set)
}

/// The run's rows of `runs_by_day` and the listing indexes, written by the sink's own
/// statements from its `running` event and, when it ended, its terminal event.
async fn sink_listing(session: &Arc<Session>, ks: &str, r: &Run) {
    let tenant = TenantId::new(r.tenant).unwrap();
    let workflow = WorkflowId::new(r.workflow).unwrap();
    let running = RunEvent {
        tenant,
        run: RunId::from_uuid(r.id),
        workflow,
        version: 3,
        status: RunStatus::Running,
        at: r.started_at,
        input: None,
        output: None,
        error: None,
        started_at: None,
        source: Some(TriggerSource::Api),
        scheduled_at: None,
    };
    let mut events = vec![running.clone()];
    if let Some(finished_at) = r.finished_at {
        let status = match r.status {
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            other => panic!("no terminal status {other}"),
        };
        events.push(RunEvent {
            status,
            at: finished_at,
            started_at: Some(r.started_at),
            source: None,
            ..running
        });
    }
    let retention = aiq_sink::RetentionSettings::default();
    let writes: Vec<_> = events
        .iter()
        .flat_map(|e| aiq_sink::store::event_writes(&Event::Run(e.clone()), &retention))
        .filter(|w| w.table != aiq_sink::store::Table::Runs)
        .collect();
    let store = aiq_sink::Store::new(Arc::clone(session), ks).await.unwrap();
    let metrics = Arc::new(aiq_sink::metrics::Metrics::new(&prometheus::Registry::new()));
    store.execute(Arc::new(writes), 16, &metrics).await.unwrap();
}

/// Writes a run as the sink does: `runs` and `steps` mirror the sink's `UPDATE`s
/// (sink/src/store/rows.rs) with columns an event does not know left unset, TTL and
/// write timestamps left out (reads do not see them); `runs_by_day` and the listing
/// indexes through the sink's own statements.
async fn write_run(session: &Arc<Session>, ks: &str, r: &Run, steps: &[Step]) {
    let duration = r.finished_at.map(|f| (f - r.started_at).num_milliseconds());
    let failed = r.status == "failed";
    session
        .query_unpaged(
            format!(
                "UPDATE {ks}.runs SET workflow = ?, version = ?, status = ?, \
                 trigger_source = ?, scheduled_at = ?, started_at = ?, finished_at = ?, \
                 duration_ms = ?, input = ?, output = ?, error_class = ?, error_step = ?, \
                 error = ? WHERE tenant = ? AND run_id = ?"
            ),
            (
                r.workflow,
                3_i32,
                r.status,
                "api",
                MaybeUnset::<DateTime<Utc>>::Unset,
                r.started_at,
                opt(r.finished_at),
                opt(duration),
                json!({"order_id": 7}).to_string(),
                opt((r.status == "succeeded").then(|| json!({"ok": true}).to_string())),
                opt(failed.then_some("connector")),
                opt(failed.then_some("fetch")),
                opt(failed.then_some("HTTP 502 from shop")),
                r.tenant,
                r.id,
            ),
        )
        .await
        .unwrap();
    sink_listing(session, ks, r).await;
    for s in steps {
        let (class, message) = s.error.unzip();
        session
            .query_unpaged(
                format!(
                    "UPDATE {ks}.steps SET kind = ?, status = ?, connector = ?, \
                     started_at = ?, finished_at = ?, duration_ms = ?, output_bytes = ?, \
                     error_class = ?, error = ? WHERE tenant = ? AND run_id = ? AND step = ? \
                     AND iteration = ? AND attempt = ?"
                ),
                (
                    "task",
                    s.status,
                    "http",
                    r.started_at,
                    r.started_at + Duration::milliseconds(40),
                    40_i64,
                    128_i64,
                    opt(class),
                    opt(message),
                    r.tenant,
                    r.id,
                    s.step,
                    s.iteration,
                    s.attempt,
                ),
            )
            .await
            .unwrap();
    }
}

const WORKFLOWS: [&str; 2] = ["alpha", "beta"];
const STATUSES: [&str; 3] = ["succeeded", "failed", "running"];

fn base() -> DateTime<Utc> {
    "2026-11-10T00:30:00Z".parse().unwrap()
}

/// 27 runs of tenant `acme` over three UTC days (two pairs share a start instant) and
/// 3 of `globex`, written through the sink's statements.
async fn fixture(api: &Api) -> Vec<Run> {
    let mut runs = Vec::new();
    for i in 0..25_i64 {
        runs.push(Run {
            tenant: "acme",
            id: Uuid::new_v4(),
            workflow: WORKFLOWS[(i % 2) as usize],
            status: STATUSES[(i % 3) as usize],
            started_at: base() + Duration::hours(2 * i),
            finished_at: (i % 3 != 2)
                .then(|| base() + Duration::hours(2 * i) + Duration::seconds(9)),
        });
    }
    // Same instant as run 5 and run 11: the page token must not skip or repeat them.
    for i in [5_i64, 11] {
        runs.push(Run {
            tenant: "acme",
            id: Uuid::new_v4(),
            workflow: "alpha",
            status: "succeeded",
            started_at: base() + Duration::hours(2 * i),
            finished_at: Some(base() + Duration::hours(2 * i) + Duration::seconds(1)),
        });
    }
    for i in 0..3_i64 {
        runs.push(Run {
            tenant: "globex",
            id: Uuid::new_v4(),
            workflow: "alpha",
            status: "succeeded",
            started_at: base() + Duration::hours(2 * i),
            finished_at: Some(base() + Duration::hours(2 * i) + Duration::seconds(2)),
        });
    }
    let ks = api.cql.keyspace.as_str();
    for r in &runs {
        write_run(&api.session, ks, r, &[]).await;
    }
    runs
}

const RANGE: &str = "from=2026-11-09T00:00:00Z&to=2026-11-13T00:00:00Z";

async fn list(api: &Api, tenant: &str, query: &str) -> (StatusCode, Value) {
    let (status, _, body) = call(
        &api.router,
        get(&format!("/v1/runs?{query}"), &token(tenant, Role::User)),
    )
    .await;
    (status, body)
}

fn ids(body: &Value) -> Vec<String> {
    body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every page of a list, in order, and the number of pages.
async fn walk(api: &Api, tenant: &str, query: &str) -> (Vec<Value>, usize) {
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &token {
            Some(t) => format!("{query}&page_token={t}"),
            None => query.to_owned(),
        };
        let (status, body) = list(api, tenant, &q).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        pages += 1;
        all.extend(body["runs"].as_array().unwrap().iter().cloned());
        match body["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return (all, pages),
        }
        assert!(pages < 100, "the pages never end");
    }
}

fn expected(runs: &[Run], tenant: &str, keep: impl Fn(&Run) -> bool) -> BTreeSet<String> {
    runs.iter()
        .filter(|r| r.tenant == tenant && keep(r))
        .map(|r| r.id.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_filter_and_page_across_days_per_tenant() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let api = api(brokers, cql, "hist").await;
    let runs = fixture(&api).await;

    let clock = std::time::Instant::now();
    let (status, body) = list(&api, "acme", &format!("{RANGE}&limit=500")).await;
    println!("listing 27 runs over 3 days took {:?}", clock.elapsed());
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["next_page_token"], Value::Null);
    let listed = ids(&body);
    assert_eq!(listed.len(), 27);
    assert_eq!(
        body["scan"],
        json!({"truncated": false, "scanned_rows": 27, "scanned_partitions": 5,
               "resume_cursor": null})
    );
    assert_eq!(
        listed.iter().cloned().collect::<BTreeSet<_>>(),
        expected(&runs, "acme", |_| true)
    );
    let starts: Vec<&str> = body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["started_at"].as_str().unwrap())
        .collect();
    let mut sorted = starts.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(starts, sorted, "newest first");
    let first = &body["runs"][0];
    assert_eq!(first["workflow"], "alpha");
    assert_eq!(first["version"], 3);
    assert_eq!(first["trigger_source"], "api");
    assert_eq!(first["started_at"], "2026-11-12T00:30:00Z");

    // Pages of 4, 3 and 1 cross the day boundaries and the shared instants.
    for limit in [4, 3, 1] {
        let (all, pages) = walk(&api, "acme", &format!("{RANGE}&limit={limit}")).await;
        let walked: Vec<String> = all
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(walked, listed, "limit {limit}: same rows, same order");
        assert_eq!(pages, 27_usize.div_ceil(limit), "limit {limit}");
    }

    // Filters are applied across pages.
    let (alpha, _) = walk(&api, "acme", &format!("{RANGE}&workflow=alpha&limit=5")).await;
    assert!(alpha.iter().all(|r| r["workflow"] == "alpha"));
    let got: BTreeSet<String> = alpha
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, expected(&runs, "acme", |r| r.workflow == "alpha"));

    let (failed, _) = walk(&api, "acme", &format!("{RANGE}&status=failed&limit=2")).await;
    let got: BTreeSet<String> = failed
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, expected(&runs, "acme", |r| r.status == "failed"));
    assert!(
        failed
            .iter()
            .all(|r| r["status"] == "failed" && r["duration_ms"] == 9000)
    );

    let (both, status) = list(
        &api,
        "acme",
        &format!("{RANGE}&status=running&workflow=beta&limit=500"),
    )
    .await;
    assert_eq!(both, StatusCode::OK);
    let got: BTreeSet<String> = ids(&status).into_iter().collect();
    assert_eq!(
        got,
        expected(&runs, "acme", |r| r.status == "running"
            && r.workflow == "beta")
    );
    assert!(!got.is_empty());

    // A time range inside one day, and the default range (the last 24 h) is empty.
    let (status, day) = list(
        &api,
        "acme",
        "from=2026-11-11T00:00:00Z&to=2026-11-11T23:59:59Z&limit=500",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let got: BTreeSet<String> = ids(&day).into_iter().collect();
    assert_eq!(
        got,
        expected(&runs, "acme", |r| r.started_at.date_naive().to_string()
            == "2026-11-11")
    );
    assert_eq!(got.len(), 12);
    let (status, recent) = list(&api, "acme", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&recent), Vec::<String>::new());

    // The other tenant sees only its own.
    let (status, other) = list(&api, "globex", &format!("{RANGE}&limit=500")).await;
    assert_eq!(status, StatusCode::OK);
    let got: BTreeSet<String> = ids(&other).into_iter().collect();
    assert_eq!(got, expected(&runs, "globex", |_| true));
    assert_eq!(got.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_run_with_its_steps_and_no_cross_tenant_reads() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let api = api(brokers, cql, "hist").await;
    let run = Run {
        tenant: "acme",
        id: Uuid::new_v4(),
        workflow: "alpha",
        status: "failed",
        started_at: base(),
        finished_at: Some(base() + Duration::seconds(3)),
    };
    let step = |step, iteration, attempt, status, error| Step {
        step,
        iteration,
        attempt,
        status,
        error,
    };
    // Written out of order: the answer is ordered by step, iteration, attempt.
    let steps = [
        step("notify", -1, 1, "succeeded", None),
        step(
            "fetch",
            1,
            2,
            "failed",
            Some(("connector", "HTTP 502 from shop")),
        ),
        step("fetch", 0, 1, "succeeded", None),
        step("fetch", 1, 1, "retrying", Some(("transient", "timeout"))),
    ];
    write_run(&api.session, &api.cql.keyspace, &run, &steps).await;

    let uri = format!("/v1/runs/{}", run.id);
    let (status, _, body) = call(&api.router, get(&uri, &token("acme", Role::User))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["run_id"], run.id.to_string());
    assert_eq!(body["workflow"], "alpha");
    assert_eq!(body["status"], "failed");
    assert_eq!(body["duration_ms"], 3000);
    assert_eq!(
        body["input"],
        json!({"order_id": 7}),
        "stored text comes back as JSON"
    );
    assert_eq!(body["output"], Value::Null);
    assert_eq!(
        body["error"],
        json!({"class": "connector", "step": "fetch", "message": "HTTP 502 from shop"})
    );
    let order: Vec<(String, Value, i64)> = body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_owned(),
                s["iteration"].clone(),
                s["attempt"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            ("fetch".to_owned(), json!(0), 1),
            ("fetch".to_owned(), json!(1), 1),
            ("fetch".to_owned(), json!(1), 2),
            ("notify".to_owned(), Value::Null, 1),
        ]
    );
    let retried = &body["steps"][1];
    assert_eq!(retried["status"], "retrying");
    assert_eq!(
        retried["error"],
        json!({"class": "transient", "message": "timeout"})
    );
    assert_eq!(retried["duration_ms"], 40);
    assert_eq!(body["steps"][0]["error"], Value::Null);
    assert_eq!(body["steps_truncated"], false);

    // Another tenant gets exactly what a missing run gets.
    let (status, _, theirs) = call(&api.router, get(&uri, &token("globex", Role::User))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let missing = format!("/v1/runs/{}", Uuid::new_v4());
    let (status, _, absent) = call(&api.router, get(&missing, &token("acme", Role::User))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(theirs["type"], absent["type"]);
    assert_eq!(theirs["title"], absent["title"]);
    let (status, _, _) = call(
        &api.router,
        get("/v1/runs/not-a-uuid", &token("acme", Role::User)),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = call(
        &api.router,
        get(&format!("/v1/runs?{RANGE}"), "not-a-token"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_parameters_are_400s_naming_the_parameter() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let api = api(brokers, cql, "hist").await;
    let cases = [
        ("status=done", "status"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("from=2026-10-01T00:00:00Z&to=2026-11-02T00:00:00Z", "from"),
        ("from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z", "from"),
        ("page_token=%21%21", "page_token"),
        ("page_token=YWJj", "page_token"),
        ("workflow=", "workflow"),
    ];
    for (query, param) in cases {
        let (status, content_type, body) = call(
            &api.router,
            get(&format!("/v1/runs?{query}"), &token("acme", Role::User)),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(
            body["type"],
            "https://automateiq.dev/problems/bad-parameter"
        );
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .starts_with(&format!("query parameter `{param}`: ")),
            "{query}: {body}"
        );
        assert_eq!(body["errors"][0]["pointer"], format!("/query/{param}"));
    }
    let (status, _, body) = call(
        &api.router,
        get("/v1/runs?tenant=globex", &token("acme", Role::User)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"].as_str().unwrap().contains("tenant"),
        "{body}"
    );
}
