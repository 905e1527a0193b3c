//! The tenant registry in a real `aiq serve` with closed tenants: a credential for an
//! unregistered tenant is refused; a platform admin creates a tenant in one call and
//! its key registers a workflow and starts a run; a plan change of the trigger rate
//! takes effect within 5 s without a restart (429s start); suspending refuses triggers,
//! pauses the tenant's cron and (asked to) cancels its runs; resuming restores both.
//! The CLI does the same through the same service, and every change is audited under
//! the tenant it changed.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aiq_testkit::{CQL, KAFKA, require_service};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use support::{Deployment, wait_until};

const DEV_SECRET: &str = "tenants-test-secret-not-for-production";

const TICKER: &str = r#"
id: ticker
triggers:
  cron:
    - schedule: "* * * * * *"
      timezone: UTC
steps:
  - id: tick
    task: { connector: noop }
"#;

const HELLO: &str = "id: hello\nsteps:\n  - id: say\n    task: { connector: noop }\n";

const WAITER: &str = r#"
id: waiter
steps:
  - id: wait
    wait_for_event:
      signal: go
      timeout: 1h
"#;

fn started_at(run: &Value) -> DateTime<Utc> {
    run["started_at"].as_str().unwrap().parse().unwrap()
}

const JSON: &str = "application/json";

#[test]
fn onboard_in_one_call_change_the_plan_live_suspend_and_resume() {
    let brokers = require_service!(KAFKA);
    let contact_points = require_service!(CQL);
    let d = Deployment::start_with_env(
        "tenants",
        &brokers,
        &contact_points,
        DEV_SECRET,
        "",
        &[("AIQ_INGEST_OPEN_TENANTS", "false")],
    );
    let root = d.token("ops", "platform_admin");

    // A valid credential for a tenant nobody registered is refused, naming it.
    let (status, refused) = d.call(
        "GET",
        "/v1/workflows",
        &d.token("acme", "tenant_admin"),
        None,
    );
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["type"]
            .as_str()
            .unwrap()
            .ends_with("unknown-tenant"),
        "{refused}"
    );
    assert!(
        refused["detail"].as_str().unwrap().contains("acme"),
        "{refused}"
    );

    // Onboarding in one call: the answer carries the first tenant_admin key.
    let new = json!({"id": "acme", "display_name": "Acme Corp",
                     "plan": {"trigger_per_second": 1000, "trigger_burst": 1000}});
    let (status, created) = d.call("POST", "/v1/tenants", &root, Some((JSON, &new.to_string())));
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["tenant"]["state"], "active");
    assert_eq!(created["api_key"]["role"], "tenant_admin");
    let key = created["api_key"]["key"].as_str().unwrap().to_owned();
    // Once only; a bad plan is refused naming its field; a tenant admin may not create.
    let (status, again) = d.call("POST", "/v1/tenants", &root, Some((JSON, &new.to_string())));
    assert_eq!(status, 409, "{again}");
    let bad = json!({"id": "zeta", "display_name": "Z", "plan": {"max_concurrent_runs": 0}});
    let (status, invalid) = d.call("POST", "/v1/tenants", &root, Some((JSON, &bad.to_string())));
    assert_eq!(status, 422, "{invalid}");
    assert_eq!(
        invalid["errors"][0]["pointer"], "/plan/max_concurrent_runs",
        "{invalid}"
    );
    let (status, _) = d.call("POST", "/v1/tenants", &key, Some((JSON, &bad.to_string())));
    assert_eq!(status, 403);

    // The key works: a workflow, a run that succeeds, a per-second cron.
    let register = |doc: &str| {
        let (status, body) = d.call(
            "POST",
            "/v1/workflows",
            &key,
            Some(("application/yaml", doc)),
        );
        assert!(status == 201 || status == 200, "{status} {body}");
    };
    register(HELLO);
    register(WAITER);
    let start = |wf: &str| {
        d.call(
            "POST",
            &format!("/v1/workflows/{wf}/runs"),
            &key,
            Some((JSON, "{}")),
        )
    };
    let (status, run) = start("hello");
    assert_eq!(status, 202, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    wait_until("the first run succeeds", Duration::from_secs(60), || {
        d.call("GET", &format!("/v1/runs/{run_id}"), &key, None).1["status"] == "succeeded"
    });
    register(TICKER);
    let ticks = || d.all_pages("/v1/runs?workflow=ticker", &key, "runs");
    wait_until("the cron ticking", Duration::from_secs(60), || {
        ticks().len() >= 2
    });

    // A lower trigger rate is in force within 5 s, without a restart.
    let patch = json!({"plan": {"trigger_per_second": 1}});
    let (status, patched) = d.call(
        "PATCH",
        "/v1/tenants/acme",
        &root,
        Some((JSON, &patch.to_string())),
    );
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["plan"]["trigger_per_second"], 1);
    assert_eq!(
        patched["plan"]["trigger_burst"], 1000,
        "fields not in the patch stay"
    );
    let patch = json!({"plan": {"trigger_burst": 1}});
    let (status, _) = d.call(
        "PATCH",
        "/v1/tenants/acme",
        &root,
        Some((JSON, &patch.to_string())),
    );
    assert_eq!(status, 200);
    let patched_at = Instant::now();
    let mut throttled = None;
    while patched_at.elapsed() < Duration::from_secs(5) {
        if (0..5).any(|_| start("hello").0 == 429) {
            throttled = Some(patched_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(throttled.is_some(), "no 429 within 5 s of the plan change");
    // Back to a generous rate for the rest.
    let patch = json!({"plan": {"trigger_per_second": 1000, "trigger_burst": 1000}});
    assert_eq!(
        d.call(
            "PATCH",
            "/v1/tenants/acme",
            &root,
            Some((JSON, &patch.to_string()))
        )
        .0,
        200
    );

    // Suspended: triggers refused with 403, cron paused, the waiting run cancelled.
    std::thread::sleep(Duration::from_millis(1100));
    let (status, waiting) = start("waiter");
    assert_eq!(status, 202, "{waiting}");
    let waiting = waiting["run_id"].as_str().unwrap().to_owned();
    wait_until("the waiter running", Duration::from_secs(30), || {
        d.call("GET", &format!("/v1/runs/{waiting}"), &key, None).1["status"] == "running"
    });
    let (status, suspended) = d.call(
        "POST",
        "/v1/tenants/acme/suspend",
        &root,
        Some((JSON, r#"{"cancel_running": true}"#)),
    );
    assert_eq!(status, 200, "{suspended}");
    assert_eq!(suspended["state"], "suspended");
    let suspended_at = Utc::now();
    let (status, refused) = start("hello");
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["type"]
            .as_str()
            .unwrap()
            .ends_with("tenant-suspended"),
        "{refused}"
    );
    wait_until("the waiting run cancelled", Duration::from_secs(30), || {
        d.call("GET", &format!("/v1/runs/{waiting}"), &key, None).1["status"] == "cancelled"
    });
    std::thread::sleep(Duration::from_secs(6));
    let late: Vec<Value> = ticks()
        .into_iter()
        .filter(|r| started_at(r) > suspended_at + chrono::Duration::seconds(2))
        .collect();
    assert!(
        late.is_empty(),
        "ticks more than 2 s after suspending: {late:?}"
    );
    // Reads still work while suspended; the tenant admin sees its own tenant.
    let (status, own) = d.call("GET", "/v1/tenants/acme", &key, None);
    assert_eq!(status, 200, "{own}");
    assert_eq!(own["state"], "suspended");

    // Resumed: triggers and cron are back.
    let (status, resumed) = d.call("POST", "/v1/tenants/acme/resume", &root, None);
    assert_eq!(status, 200, "{resumed}");
    let resumed_at = Utc::now();
    assert_eq!(start("hello").0, 202);
    wait_until("the cron ticking again", Duration::from_secs(30), || {
        ticks().iter().any(|r| started_at(r) > resumed_at)
    });

    // The operator's CLI goes through the same service.
    let out = d.aiq(&[
        "tenants",
        "create",
        "beta",
        "--name",
        "Beta",
        "--max-concurrent-runs",
        "3",
        "--allowed-connectors",
        "http,email",
        "--sql-max-rows",
        "1",
    ]);
    let printed = String::from_utf8(out.stdout).unwrap();
    let beta_key = printed.lines().last().unwrap().trim().to_owned();
    assert!(beta_key.starts_with("aiq_"), "{printed}");
    let (status, beta) = d.call("GET", "/v1/tenants/beta", &beta_key, None);
    assert_eq!(status, 200, "{beta}");
    assert_eq!(beta["plan"]["max_concurrent_runs"], 3);
    // A tenant admin reads its own tenant only.
    assert_eq!(d.call("GET", "/v1/tenants/acme", &beta_key, None).0, 403);
    // The plan's connectors: a noop step fails, saying why.
    let (status, body) = d.call(
        "POST",
        "/v1/workflows",
        &beta_key,
        Some(("application/yaml", HELLO)),
    );
    assert_eq!(status, 201, "{body}");
    let (status, run) = d.call(
        "POST",
        "/v1/workflows/hello/runs",
        &beta_key,
        Some((JSON, "{}")),
    );
    assert_eq!(status, 202, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let mut failed = Value::Null;
    wait_until(
        "the disallowed step failing",
        Duration::from_secs(60),
        || {
            failed = d
                .call("GET", &format!("/v1/runs/{run_id}"), &beta_key, None)
                .1;
            failed["status"] == "failed"
        },
    );
    assert!(
        failed.to_string().contains("allowed_connectors"),
        "{failed}"
    );
    // The plan's SQL row limit.
    let q = json!({"query": "SELECT 1 AS x UNION ALL SELECT 2 AS x"}).to_string();
    let (status, rows) = d.call("POST", "/v1/sql", &beta_key, Some((JSON, &q)));
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows["truncated"], true, "{rows}");
    assert_eq!(rows["rows"].as_array().unwrap().len(), 1, "{rows}");
    let (_, acme_rows) = d.call("POST", "/v1/sql", &key, Some((JSON, &q)));
    assert_eq!(
        acme_rows["rows"].as_array().unwrap().len(),
        2,
        "{acme_rows}"
    );
    d.aiq(&["tenants", "suspend", "beta"]);
    let listed = String::from_utf8(d.aiq(&["tenants", "list"]).stdout).unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("beta ") && l.contains("suspended")),
        "{listed}"
    );
    let (status, list) = d.call("GET", "/v1/tenants", &root, None);
    assert_eq!(status, 200);
    let states: Vec<(String, String)> = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().into(),
                t["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("acme".into(), "active".into()),
            ("beta".into(), "suspended".into())
        ]
    );

    // Each change is audited under the tenant it changed, and only there.
    let actions = |k: &str| -> BTreeSet<String> {
        d.all_pages("/v1/audit", k, "events")
            .iter()
            .filter_map(|e| e["action"].as_str().map(str::to_owned))
            .collect()
    };
    wait_until("the changes audited", Duration::from_secs(30), || {
        let a = actions(&key);
        [
            "tenant_created",
            "tenant_updated",
            "tenant_suspended",
            "tenant_resumed",
        ]
        .iter()
        .all(|x| a.contains(*x))
    });
    wait_until("the CLI's changes audited", Duration::from_secs(30), || {
        let b = actions(&beta_key);
        b.contains("tenant_created")
            && b.contains("tenant_suspended")
            && !b.contains("tenant_resumed")
    });
}
