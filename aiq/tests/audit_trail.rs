//! The complete audit trail in a real `aiq serve`: every kind of audited action — a
//! mutating API call (with its request id and status), a run's start with its source,
//! a secret a worker opened for a step (its name only), a signal, a cancel, a SQL
//! query (its text's hash), a platform admin's read for another tenant (naming the
//! admin's own tenant) — appears in `GET /v1/audit` (Cassandra, the hot window) and in
//! `SELECT ... FROM audit` (Parquet, kept seven years), and a tenant never sees another
//! tenant's events in either.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;

use aiq_testkit::{CQL, KAFKA, require_service};
use serde_json::{Value, json};
use support::{Deployment, wait_until};

const DEV_SECRET: &str = "audit-test-secret-not-for-production";
const JSON: &str = "application/json";
const SECRET_VALUE: &str = "token-never-in-the-audit-trail";

/// An HTTP server on loopback that answers 200 to anything; returns its port.
fn answering_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
            );
        }
    });
    port
}

fn actions(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter_map(|e| e["action"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn every_audited_action_is_in_the_api_and_in_sql_and_only_for_its_tenant() {
    let brokers = require_service!(KAFKA);
    let contact_points = require_service!(CQL);
    let port = answering_server();
    let keys = std::env::temp_dir().join(aiq_testkit::unique("audit-keys"));
    let key = format!(
        "k1 {}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::write(&keys, format!("{key}\n")).unwrap();
    let d = Deployment::start(
        "audit",
        &brokers,
        &contact_points,
        DEV_SECRET,
        &format!(
            "[connectors.outbound]\nallow = [\"127.0.0.0/8\"]\n\n[secrets]\nkey_file = \"{}\"\n",
            keys.display()
        ),
    );
    let acme = d.token("acme", "tenant_admin");
    let zeta = d.token("zeta", "tenant_admin");
    let ok = |(status, body): (u16, Value), want: u16| {
        assert_eq!(status, want, "{body}");
        body
    };

    // acme: a secret, a workflow that opens it, runs signalled and cancelled, a query.
    let secret = json!({"value": SECRET_VALUE}).to_string();
    ok(
        d.call("PUT", "/v1/secrets/api-token", &acme, Some((JSON, &secret))),
        200,
    );
    let calls = format!(
        "id: calls\nsteps:\n  - id: call\n    task:\n      connector: http\n      args:\n        method: GET\n        url: http://127.0.0.1:{port}/\n        auth: {{ type: bearer, secret: api-token }}\n"
    );
    let waiter =
        "id: waiter\nsteps:\n  - id: wait\n    wait_for_event: { signal: go, timeout: 1h }\n";
    for doc in [calls.as_str(), waiter] {
        ok(
            d.call(
                "POST",
                "/v1/workflows",
                &acme,
                Some(("application/yaml", doc)),
            ),
            201,
        );
    }
    let run = ok(
        d.call(
            "POST",
            "/v1/workflows/calls/runs",
            &acme,
            Some((JSON, "{}")),
        ),
        202,
    );
    let run = run["run_id"].as_str().unwrap().to_owned();
    wait_until("the call succeeding", Duration::from_secs(60), || {
        d.call("GET", &format!("/v1/runs/{run}"), &acme, None).1["status"] == "succeeded"
    });
    let start_waiter = || {
        let r = ok(
            d.call(
                "POST",
                "/v1/workflows/waiter/runs",
                &acme,
                Some((JSON, "{}")),
            ),
            202,
        );
        r["run_id"].as_str().unwrap().to_owned()
    };
    let signalled = start_waiter();
    ok(
        d.call(
            "POST",
            &format!("/v1/runs/{signalled}/signals/go"),
            &acme,
            Some((JSON, "{}")),
        ),
        202,
    );
    let cancelled = start_waiter();
    ok(
        d.call(
            "POST",
            &format!("/v1/runs/{cancelled}/cancel"),
            &acme,
            Some((JSON, "{}")),
        ),
        202,
    );
    let q = json!({"query": "SELECT count(*) AS n FROM runs"}).to_string();
    ok(d.call("POST", "/v1/sql", &acme, Some((JSON, &q))), 200);
    // A platform admin reads acme's runs: recorded under acme, naming the admin's tenant.
    let root = d.token("ops", "platform_admin");
    let r = d
        .agent
        .get(&format!("{}/v1/runs", d.api))
        .header("authorization", &format!("Bearer {root}"))
        .header("x-aiq-tenant", "acme")
        .header("x-request-id", "req-cross-tenant-1")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-request-id"], "req-cross-tenant-1");
    // zeta: one change of its own.
    ok(
        d.call(
            "POST",
            "/v1/workflows",
            &zeta,
            Some(("application/yaml", waiter)),
        ),
        201,
    );

    // The API, from Cassandra.
    let wanted = [
        "api_call",
        "secret_put",
        "workflow_registered",
        "run_started",
        "secret_opened",
        "signal_sent",
        "run_cancelled",
        "sql_query",
    ];
    let mut events = Vec::new();
    wait_until("acme's trail in the API", Duration::from_secs(60), || {
        events = d.all_pages("/v1/audit", &acme, "events");
        let got = actions(&events);
        wanted.iter().all(|a| got.contains(*a))
            && events
                .iter()
                .any(|e| e["request_id"] == "req-cross-tenant-1")
    });
    let cross = events
        .iter()
        .find(|e| e["request_id"] == "req-cross-tenant-1")
        .unwrap();
    assert_eq!(cross["actor_tenant"], "ops", "{cross}");
    assert_eq!(cross["outcome"], "200", "{cross}");
    assert_eq!(cross["subject"], "GET /v1/runs", "{cross}");
    let opened = events
        .iter()
        .find(|e| e["action"] == "secret_opened")
        .unwrap();
    assert_eq!(opened["subject"], "api-token", "{opened}");
    assert_eq!(opened["detail"]["run"], run.as_str(), "{opened}");
    let started: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "run_started")
        .collect();
    assert_eq!(started.len(), 3, "one per run: {started:?}");
    assert!(
        started.iter().all(|e| e["detail"]["source"] == "api"),
        "{started:?}"
    );
    let query = events.iter().find(|e| e["action"] == "sql_query").unwrap();
    assert_eq!(
        query["subject"].as_str().unwrap().len(),
        64,
        "a SHA-256: {query}"
    );
    assert_eq!(query["detail"]["rows"], 1, "{query}");
    let calls_made: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "api_call")
        .collect();
    assert!(
        calls_made
            .iter()
            .any(|e| e["subject"] == "POST /v1/workflows/{id}/runs" && e["outcome"] == "202"),
        "{calls_made:?}"
    );
    // Never a secret value, anywhere in the trail.
    assert!(
        !serde_json::to_string(&events)
            .unwrap()
            .contains(SECRET_VALUE)
    );
    // zeta sees its own change and nothing of acme's.
    let mut theirs = Vec::new();
    wait_until("zeta's change in the API", Duration::from_secs(60), || {
        theirs = d.all_pages("/v1/audit", &zeta, "events");
        actions(&theirs).contains("workflow_registered")
    });
    let got = actions(&theirs);
    for a in [
        "secret_put",
        "secret_opened",
        "signal_sent",
        "sql_query",
        "run_cancelled",
    ] {
        assert!(!got.contains(a), "zeta sees acme's {a}: {theirs:?}");
    }

    // SQL over the Parquet table, scoped the same way.
    let sql = |token: &str, query: &str| {
        let q = json!({"query": query}).to_string();
        let (status, body) = d.call("POST", "/v1/sql", token, Some((JSON, &q)));
        assert_eq!(status, 200, "{body}");
        body["rows"].as_array().unwrap().clone()
    };
    let distinct = "SELECT DISTINCT action FROM audit";
    wait_until("acme's trail in SQL", Duration::from_secs(90), || {
        let rows = sql(&acme, distinct);
        let got: BTreeSet<String> = rows
            .iter()
            .filter_map(|r| r[0].as_str().map(str::to_owned))
            .collect();
        wanted.iter().all(|a| got.contains(*a))
    });
    let rows = sql(
        &acme,
        "SELECT actor_tenant, outcome FROM audit WHERE request_id = 'req-cross-tenant-1'",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0], json!(["ops", "200"]));
    let rows = sql(&zeta, "SELECT DISTINCT tenant, action FROM audit");
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r[0] == "zeta"), "{rows:?}");
    assert!(rows.iter().all(|r| r[1] != "secret_opened"), "{rows:?}");
    // The platform's own view holds both tenants.
    let rows = sql(&root, "SELECT DISTINCT tenant FROM audit");
    assert!(
        rows.contains(&json!(["acme"])) && rows.contains(&json!(["zeta"])),
        "{rows:?}"
    );
}
