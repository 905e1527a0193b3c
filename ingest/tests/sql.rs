//! `POST /v1/sql` and the reports over Parquet files the sink's own writer produced for
//! two tenants: a tenant sees only its rows, statements that change anything are
//! refused, and a deployment without analytics says so.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use aiq_analytics::{Analytics, AnalyticsSettings};
use aiq_auth::Role;
use aiq_sink::parquet::{ParquetSettings, ParquetWriter};
use aiq_testkit::{CQL, KAFKA, require_service};
use aiq_topics::{Event, RunEvent, RunId, RunStatus, TenantId, TriggerSource, WorkflowId};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use support::{Api, api, api_with, call, get, send, token};

fn run(tenant: &str, workflow: &str, n: usize, status: RunStatus) -> RunEvent {
    let tenant = TenantId::new(tenant).unwrap();
    let workflow = WorkflowId::new(workflow).unwrap();
    let started: DateTime<Utc> = "2026-11-20T10:00:00Z".parse().unwrap();
    RunEvent {
        run: RunId::from_idempotency_key(&tenant, &workflow, &n.to_string()),
        tenant,
        workflow,
        version: 1,
        status,
        at: started + Duration::seconds(5),
        input: None,
        output: None,
        error: None,
        started_at: Some(started),
        source: Some(TriggerSource::Api),
        scheduled_at: None,
    }
}

/// Three finished runs of `acme` and two of `globex`, written by the sink's writer.
fn history(root: &std::path::Path) {
    let settings = ParquetSettings {
        root: root.into(),
        ..ParquetSettings::default()
    };
    let mut writer = ParquetWriter::new(&settings).unwrap();
    let events = [
        run("acme", "alpha", 1, RunStatus::Succeeded),
        run("acme", "alpha", 2, RunStatus::Failed),
        run("acme", "beta", 3, RunStatus::Succeeded),
        run("globex", "gamma", 1, RunStatus::Succeeded),
        run("globex", "gamma", 2, RunStatus::Succeeded),
    ];
    for (offset, e) in events.into_iter().enumerate() {
        writer.add(0, offset as i64, &Event::Run(e));
    }
    writer.flush().unwrap();
}

async fn sql_api(label: &str) -> Option<(Api, tempfile::TempDir)> {
    let brokers = aiq_testkit::service(KAFKA)?;
    let cql = aiq_testkit::service(CQL)?;
    let dir = tempfile::tempdir().unwrap();
    history(dir.path());
    let analytics = Analytics::new(AnalyticsSettings {
        root: dir.path().into(),
        ..AnalyticsSettings::default()
    })
    .unwrap();
    Some((
        api_with(brokers, cql, label, Some(Arc::new(analytics))).await,
        dir,
    ))
}

fn sql(body: Value, bearer: &str) -> axum::http::Request<axum::body::Body> {
    send(
        "POST",
        "/v1/sql",
        bearer,
        "application/json",
        body.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_queries_only_its_own_rows() {
    let Some((api, _dir)) = sql_api("sql").await else {
        return;
    };
    let acme = token("acme", Role::User);
    let query = "SELECT tenant, workflow, status, count(*) AS n FROM runs \
                 GROUP BY tenant, workflow, status ORDER BY workflow, status";
    let clock = std::time::Instant::now();
    let (status, _, body) = call(&api.router, sql(json!({ "query": query }), &acme)).await;
    println!("a grouped query over 5 runs took {:?}", clock.elapsed());
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> = body["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tenant", "workflow", "status", "n"]);
    assert_eq!(
        body["rows"],
        json!([
            ["acme", "alpha", "failed", 1],
            ["acme", "alpha", "succeeded", 1],
            ["acme", "beta", "succeeded", 1],
        ])
    );
    assert_eq!(body["truncated"], false);
    assert!(body["elapsed_ms"].is_u64());

    // Naming the other tenant finds nothing: its rows are not in the session at all.
    let (status, _, body) = call(
        &api.router,
        sql(
            json!({ "query": "SELECT count(*) AS n FROM runs WHERE tenant = 'globex'" }),
            &acme,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"], json!([[0]]));

    // CSV.
    let (status, content_type, body) = call(
        &api.router,
        sql(
            json!({ "query": "SELECT workflow, status FROM runs ORDER BY workflow, status", "format": "csv" }),
            &acme,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let text = body.as_str().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "workflow,status",
            "alpha,failed",
            "alpha,succeeded",
            "beta,succeeded"
        ]
    );

    // A platform admin without X-AIQ-Tenant sees every tenant; with it, that tenant.
    let admin = token("ops", Role::PlatformAdmin);
    let count = "SELECT count(*) AS n FROM runs";
    let (status, _, body) = call(&api.router, sql(json!({ "query": count }), &admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"], json!([[5]]));
    let mut scoped = sql(json!({ "query": count }), &admin);
    scoped
        .headers_mut()
        .insert("x-aiq-tenant", "globex".parse().unwrap());
    let (status, _, body) = call(&api.router, scoped).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"], json!([[2]]));
}

#[tokio::test(flavor = "multi_thread")]
async fn statements_that_change_or_read_files_are_refused() {
    let Some((api, _dir)) = sql_api("sql").await else {
        return;
    };
    let acme = token("acme", Role::TenantAdmin);
    for query in [
        "COPY runs TO '/tmp/stolen.csv'",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/'",
        "CREATE TABLE t AS SELECT * FROM runs",
        "INSERT INTO runs SELECT * FROM runs",
        "SET datafusion.execution.target_partitions = 64",
        "SELECT 1; SELECT 2",
    ] {
        let (status, _, body) = call(&api.router, sql(json!({ "query": query }), &acme)).await;
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::BAD_REQUEST,
            "{query}: {status} {body}"
        );
        assert!(!body["detail"].as_str().unwrap().is_empty(), "{query}");
        println!("{query} -> {status} {}", body["detail"]);
    }
    let target = tempfile::tempdir().unwrap().path().join("stolen.csv");
    let copy = format!("COPY runs TO '{}'", target.display());
    let (status, _, body) = call(&api.router, sql(json!({ "query": copy }), &acme)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["type"], "https://automateiq.dev/problems/sql-refused");
    assert!(!target.exists(), "COPY wrote a file");

    let (status, _, body) = call(
        &api.router,
        sql(json!({ "query": "SELECT nope FROM runs" }), &acme),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["pointer"], "/query");
    let (status, _, body) = call(&api.router, sql(json!({ "query": " " }), &acme)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) = call(
        &api.router,
        sql(json!({ "query": "SELECT 1", "format": "xml" }), &acme),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("format"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_list_and_run_for_the_callers_tenant() {
    let Some((api, _dir)) = sql_api("sql").await else {
        return;
    };
    let acme = token("acme", Role::User);
    let (status, _, body) = call(&api.router, get("/v1/reports", &acme)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> = body["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"workflow_success"), "{names:?}");
    assert!(body["reports"][0]["title"].is_string());

    let (status, _, body) = call(&api.router, get("/v1/reports/workflow_success", &acme)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rendered = body["rows"].to_string();
    assert!(rendered.contains("alpha"), "{rendered}");
    assert!(
        !rendered.contains("gamma"),
        "another tenant's workflow: {rendered}"
    );

    let (status, content_type, _) = call(
        &api.router,
        get("/v1/reports/runs_per_hour?format=csv", &acme),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/csv"));
    let (status, _, _) = call(&api.router, get("/v1/reports/no_such_report", &acme)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_analytics_the_sql_routes_answer_503() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let api = api(brokers, cql, "sql").await;
    let acme = token("acme", Role::User);
    let (status, _, body) = call(&api.router, sql(json!({ "query": "SELECT 1" }), &acme)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body["type"],
        "https://automateiq.dev/problems/analytics-disabled"
    );
    for uri in ["/v1/reports", "/v1/reports/workflow_success"] {
        let (status, _, body) = call(&api.router, get(uri, &acme)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(body["detail"].as_str().unwrap().contains("SQL"));
    }
}

/// Keeps a query slot taken until its task is aborted.
const HEAVY: &str = "SELECT count(*) FROM generate_series(1, 1000000000) a \
                     CROSS JOIN generate_series(1, 1000000000) b";

#[tokio::test(flavor = "multi_thread")]
async fn beyond_the_query_limits_sql_answers_429_naming_the_limit() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let Some(brokers) = aiq_testkit::service(KAFKA) else {
        return;
    };
    let Some(cql) = aiq_testkit::service(CQL) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let analytics = Arc::new(
        Analytics::new(AnalyticsSettings {
            root: dir.path().into(),
            max_queries_per_tenant: 1,
            max_queries: 2,
            ..AnalyticsSettings::default()
        })
        .unwrap(),
    );
    let api = api_with(brokers, cql, "sql", Some(Arc::clone(&analytics))).await;
    let heavy = |tenant: &str| {
        let (router, req) = (
            api.router.clone(),
            sql(json!({ "query": HEAVY }), &token(tenant, Role::User)),
        );
        tokio::spawn(async move { router.oneshot(req).await })
    };
    let until_running = |n: usize| {
        let analytics = Arc::clone(&analytics);
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while analytics.running_queries() != n {
                assert!(std::time::Instant::now() < deadline);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    };
    let refused = |tenant: &str, slug: &str, setting: &str| {
        let (router, req) = (
            api.router.clone(),
            sql(json!({ "query": "SELECT 1" }), &token(tenant, Role::User)),
        );
        let (slug, setting) = (slug.to_owned(), setting.to_owned());
        async move {
            let resp = router.oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(resp.headers()["retry-after"], "1");
            assert_eq!(resp.headers()["content-type"], "application/problem+json");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                body["type"],
                format!("https://automateiq.dev/problems/{slug}")
            );
            assert_eq!(body["status"], 429);
            assert!(
                body["detail"].as_str().unwrap().contains(&setting),
                "{body}"
            );
            println!("{body}");
        }
    };

    let acme = heavy("acme");
    until_running(1).await;
    refused(
        "acme",
        "tenant-query-limit",
        "analytics.max_queries_per_tenant",
    )
    .await;
    let globex = heavy("globex");
    until_running(2).await;
    refused("initech", "process-query-limit", "analytics.max_queries").await;
    // A request that goes away stops its query and frees its slot.
    acme.abort();
    globex.abort();
    until_running(0).await;
    let (status, _, body) = call(
        &api.router,
        sql(json!({ "query": "SELECT 1" }), &token("acme", Role::User)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let doc = serde_json::to_value(aiq_ingest::http::openapi()).unwrap();
    for (path, method) in [("/v1/sql", "post"), ("/v1/reports/{name}", "get")] {
        assert!(
            doc["paths"][path][method]["responses"]["429"].is_object(),
            "{path}"
        );
    }
}
