//! A workflow's lifecycle in a real `aiq serve`: disabling stops a per-second cron
//! within 2 s and refuses run starts, enabling brings both back; a default version pins
//! what triggers start and rolls back; deleting hides the workflow and refuses
//! triggers, and registering it again brings it back. Each change is audited.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use aiq_testkit::{CQL, KAFKA, require_service};
use chrono::{DateTime, Utc};
use serde_json::Value;
use support::{Deployment, wait_until};

const DEV_SECRET: &str = "lifecycle-test-secret-not-for-production";
const TENANT: &str = "acme";

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

fn pinned(output: &str) -> String {
    format!(
        "id: pinned\nsteps:\n  - id: say\n    task: {{ connector: noop, args: {{ output: {output} }} }}\n"
    )
}

fn started_at(run: &Value) -> DateTime<Utc> {
    run["started_at"].as_str().unwrap().parse().unwrap()
}

#[test]
fn disable_enable_pin_and_delete_take_effect_everywhere() {
    let brokers = require_service!(KAFKA);
    let contact_points = require_service!(CQL);
    let d = Deployment::start("life", &brokers, &contact_points, DEV_SECRET, "");
    let admin = d.token(TENANT, "tenant_admin");
    let yaml = |doc: &str| {
        let (status, body) = d.call(
            "POST",
            "/v1/workflows",
            &admin,
            Some(("application/yaml", doc)),
        );
        assert!(status == 201 || status == 200, "{status} {body}");
        body
    };
    let runs_of = |wf: &str| d.all_pages(&format!("/v1/runs?workflow={wf}"), &admin, "runs");

    // Disable stops the per-second cron within 2 s, and run starts.
    yaml(TICKER);
    wait_until("the cron ticking", Duration::from_secs(60), || {
        runs_of("ticker").len() >= 3
    });
    let (status, state) = d.call("POST", "/v1/workflows/ticker/disable", &admin, None);
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["disabled"], true);
    let disabled_at = Utc::now();
    let (status, refused) = d.call(
        "POST",
        "/v1/workflows/ticker/runs",
        &admin,
        Some(("application/json", "{}")),
    );
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["detail"].as_str().unwrap().contains("disabled"),
        "{refused}"
    );
    std::thread::sleep(Duration::from_secs(6));
    let late: Vec<Value> = runs_of("ticker")
        .into_iter()
        .filter(|r| started_at(r) > disabled_at + chrono::Duration::seconds(2))
        .collect();
    assert!(
        late.is_empty(),
        "ticks more than 2 s after disabling: {late:?}"
    );
    let listed = d.call("GET", "/v1/workflows", &admin, None).1;
    let ticker = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workflow"] == "ticker")
        .unwrap();
    assert_eq!(ticker["disabled"], true);
    // Enable brings the cron back.
    assert_eq!(
        d.call("POST", "/v1/workflows/ticker/enable", &admin, None)
            .0,
        200
    );
    let enabled_at = Utc::now();
    wait_until("the cron ticking again", Duration::from_secs(30), || {
        runs_of("ticker").iter().any(|r| started_at(r) > enabled_at)
    });
    assert_eq!(
        d.call("POST", "/v1/workflows/ticker/disable", &admin, None)
            .0,
        200
    );

    // The default version pins what a trigger without one starts, and rolls back.
    yaml(&pinned("one"));
    yaml(&pinned("two"));
    let start_version = || {
        let (status, body) = d.call(
            "POST",
            "/v1/workflows/pinned/runs",
            &admin,
            Some(("application/json", "{}")),
        );
        assert_eq!(status, 202, "{body}");
        body["version"].as_u64().unwrap()
    };
    assert_eq!(start_version(), 2);
    let pin = |v: &str| {
        d.call(
            "PUT",
            "/v1/workflows/pinned/default-version",
            &admin,
            Some(("application/json", &format!("{{\"version\": {v}}}"))),
        )
    };
    let (status, state) = pin("1");
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["default_version"], 1);
    assert_eq!(start_version(), 1);
    assert_eq!(pin("9").0, 404, "no version 9");
    assert_eq!(pin("null").0, 200);
    assert_eq!(start_version(), 2);

    // Delete hides it and refuses triggers; registering it again brings it back.
    let (status, state) = d.call("DELETE", "/v1/workflows/pinned", &admin, None);
    assert_eq!(status, 200, "{state}");
    let names = || -> BTreeSet<String> {
        d.call("GET", "/v1/workflows", &admin, None)
            .1
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["workflow"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(!names().contains("pinned"));
    let (status, _) = d.call(
        "POST",
        "/v1/workflows/pinned/runs",
        &admin,
        Some(("application/json", "{}")),
    );
    assert_eq!(status, 404);
    assert_eq!(
        d.call("POST", "/v1/workflows/pinned/disable", &admin, None)
            .0,
        404
    );
    yaml(&pinned("two"));
    assert!(names().contains("pinned"));
    assert_eq!(start_version(), 2);

    // Every change is in the audit trail.
    let mut actions = BTreeSet::new();
    wait_until("the changes audited", Duration::from_secs(30), || {
        actions = d
            .all_pages("/v1/audit", &admin, "events")
            .iter()
            .filter_map(|e| e["action"].as_str().map(str::to_owned))
            .collect();
        [
            "workflow_disabled",
            "workflow_enabled",
            "workflow_deleted",
            "default_version_set",
        ]
        .iter()
        .all(|a| actions.contains(*a))
    });
}
