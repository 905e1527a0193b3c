//! Erasure by crypto-shredding, proved by search: a unique canary planted in a run's
//! input flows through every stage (trigger, task arguments, result, run events, the
//! orchestrator's changelog, Cassandra, Parquet); before erasure no byte the services
//! keep on disk (Kafka's log segments, Cassandra's data files and commit log after a
//! flush, the Parquet history, the process's log) holds it in clear, while the API
//! still answers it; after erasure a process reading the data-keys topic from the start
//! cannot open the tenant's records still retained in Kafka, the history is gone, and
//! the canary is still nowhere in clear. Bad requests change nothing.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiq_testkit::{CQL, KAFKA, require_service};
use serde_json::{Value, json};
use support::{Deployment, wait_until};

const DEV_SECRET: &str = "erasure-test-secret-not-for-production";
const JSON: &str = "application/json";

const ECHO: &str = r#"
id: echo
steps:
  - id: echo
    task:
      connector: noop
      args:
        output: { card: "${ input.card }", note: "echoed" }
"#;

/// Fails with the input in its message: error messages are sealed too.
const REFUSE: &str = r#"
id: refuse
steps:
  - id: refuse
    fail: { message: "card ${ input.card } refused", class: fatal }
"#;

/// Every file under `dir` whose bytes hold `needle`; files that vanish while the walk
/// runs (a rolled segment, a compacted SSTable) are skipped, and so are Kafka's offset
/// and time indexes (`.index`, `.timeindex`: positions only, preallocated to 10 MiB of
/// mostly zeros per segment, so reading them would cost minutes for no record byte).
fn files_holding(dir: &Path, needle: &[u8], found: &mut Vec<PathBuf>) {
    let finder = memchr::memmem::Finder::new(needle);
    holding(dir, &finder, found);
}

fn holding(dir: &Path, finder: &memchr::memmem::Finder<'_>, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => holding(&path, finder, found),
            Ok(t) if t.is_file() && !is_kafka_index(&path) => {
                if let Ok(bytes) = std::fs::read(&path)
                    && finder.find(&bytes).is_some()
                {
                    found.push(path);
                }
            }
            _ => {}
        }
    }
}

fn is_kafka_index(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e == "index" || e == "timeindex")
}

fn clear_copies(dirs: &[&Path], canary: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for d in dirs {
        files_holding(d, canary.as_bytes(), &mut found);
    }
    found
}

fn flush_cassandra(keyspace: &str) {
    let services = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services");
    let out = std::process::Command::new(services)
        .args(["nodetool", "flush", keyspace])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nodetool flush: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tenant's records of `topic` as retained by Kafka, read from the start.
fn retained(kafka: &aiq_kafka::KafkaSettings, topic: &str, tenant: &str) -> Vec<Value> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let feed = Arc::clone(&seen);
    let tenant = tenant.to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut tail = aiq_kafka::tail::tail_topic(kafka, topic, move |r| {
            if r.key == Some(tenant.as_bytes())
                && let Some(v) = r.payload.and_then(|p| serde_json::from_slice(p).ok())
            {
                feed.lock().unwrap().push(v);
            }
        })
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(30), tail.caught_up())
            .await
            .unwrap();
        tail.handle().stop();
    });
    seen.lock().unwrap().clone()
}

/// A fresh process's view of the data keys: the topic read from its start.
fn fresh_vault(
    kafka: &aiq_kafka::KafkaSettings,
    key_file: &Path,
) -> (tokio::runtime::Runtime, Arc<aiq_vault::Vault>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keyring = Arc::new(aiq_secrets::Keyring::load(key_file).unwrap());
    let vault = rt.block_on(async {
        let followed = aiq_vault::spawn(kafka, Some(keyring)).await.unwrap();
        let mut tail = followed.tail.unwrap();
        tokio::time::timeout(Duration::from_secs(30), tail.caught_up())
            .await
            .unwrap();
        // Keep following while the runtime lives.
        std::mem::forget(tail);
        followed.vault
    });
    (rt, vault)
}

#[test]
fn an_erased_tenants_canary_is_nowhere_in_clear_and_its_sealed_copies_never_open_again() {
    let brokers = require_service!(KAFKA);
    let contact_points = require_service!(CQL);
    let kafka_data = PathBuf::from(require_service!("AIQ_DATA_KAFKA"));
    let cassandra_data = PathBuf::from(require_service!("AIQ_DATA_CASSANDRA"));
    let d = Deployment::start_with_env(
        "erasure",
        &brokers,
        &contact_points,
        DEV_SECRET,
        "",
        &[("AIQ_INGEST_OPEN_TENANTS", "false")],
    );
    let kafka = aiq_kafka::KafkaSettings::plaintext(&brokers, &d.prefix, 4, 4);
    let key_file = d.dir.join("deployment.key");
    let root = d.token("ops", "platform_admin");
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());

    // Two tenants, each with its first key and the echo workflow.
    let onboard = |id: &str| {
        let body = json!({"id": id, "display_name": id}).to_string();
        let (status, created) = d.call("POST", "/v1/tenants", &root, Some((JSON, &body)));
        assert_eq!(status, 201, "{created}");
        let key = created["api_key"]["key"].as_str().unwrap().to_owned();
        for doc in [ECHO, REFUSE] {
            let (status, body) = d.call(
                "POST",
                "/v1/workflows",
                &key,
                Some(("application/yaml", doc)),
            );
            assert_eq!(status, 201, "{body}");
        }
        key
    };
    let doomed = onboard("doomed");
    let kept = onboard("kept");
    let run = |key: &str, card: &str| {
        let body = json!({"input": {"card": card}}).to_string();
        let (status, r) = d.call("POST", "/v1/workflows/echo/runs", key, Some((JSON, &body)));
        assert_eq!(status, 202, "{r}");
        let id = r["run_id"].as_str().unwrap().to_owned();
        let mut detail = Value::Null;
        wait_until("the echo run succeeding", Duration::from_secs(60), || {
            detail = d.call("GET", &format!("/v1/runs/{id}"), key, None).1;
            detail["status"] == "succeeded"
        });
        (id, detail)
    };
    let (doomed_run, detail) = run(&doomed, &canary);
    // The API reader opens the seals: the tenant sees its own data.
    assert_eq!(detail["input"]["card"], canary.as_str(), "{detail}");
    assert_eq!(detail["output"]["card"], canary.as_str(), "{detail}");
    // A run that fails quoting the canary: its message reads back opened.
    let body = json!({"input": {"card": canary}}).to_string();
    let (status, r) = d.call(
        "POST",
        "/v1/workflows/refuse/runs",
        &doomed,
        Some((JSON, &body)),
    );
    assert_eq!(status, 202, "{r}");
    let refused = r["run_id"].as_str().unwrap().to_owned();
    let mut failed = Value::Null;
    wait_until("the refusing run failing", Duration::from_secs(60), || {
        failed = d
            .call("GET", &format!("/v1/runs/{refused}"), &doomed, None)
            .1;
        failed["status"] == "failed"
    });
    assert_eq!(
        failed["error"]["message"],
        format!("card {canary} refused"),
        "{failed}"
    );
    let kept_card = format!("kept-{}", uuid::Uuid::new_v4().simple());
    let (kept_run, _) = run(&kept, &kept_card);

    // Sealed where it rests: the trigger retained in Kafka holds a sealed input that a
    // fresh process (the data-keys topic read from its start) opens to the canary.
    let triggers = format!("{}triggers", d.prefix);
    let sealed = retained(&kafka, &triggers, "doomed");
    assert!(!sealed.is_empty());
    for t in &sealed {
        assert!(t["input"]["aiq_sealed"].is_string(), "not sealed: {t}");
    }
    let tenant = aiq_topics::TenantId::new("doomed").unwrap();
    {
        let (_rt, vault) = fresh_vault(&kafka, &key_file);
        let mut opened = sealed[0].clone();
        vault.open_tree(&tenant, &mut opened).unwrap();
        assert_eq!(opened["input"]["card"], canary.as_str());
    }
    // ... and nowhere in clear: Kafka's segments, Cassandra's files once flushed, the
    // Parquet history, the process's log.
    // Both runs' ends in the Parquet history (the failed one carries its message, sealed).
    let q = json!({"query": "SELECT status, error_message FROM runs WHERE status = 'failed'"})
        .to_string();
    let mut rows = Value::Null;
    wait_until("the failed run in SQL", Duration::from_secs(90), || {
        rows = d.call("POST", "/v1/sql", &doomed, Some((JSON, &q))).1;
        rows["rows"].as_array().is_some_and(|r| !r.is_empty())
    });
    assert!(
        !rows.to_string().contains(&canary),
        "a clear message in SQL: {rows}"
    );
    flush_cassandra(&d.name);
    let dirs = [
        kafka_data.as_path(),
        cassandra_data.as_path(),
        d.dir.as_path(),
    ];
    let before = clear_copies(&dirs, &canary);
    assert!(
        before.is_empty(),
        "the canary in clear before erasure: {before:?}"
    );

    // Bad requests change nothing: a tenant admin erasing another tenant, an unknown
    // tenant, a wrong token.
    let (status, body) = d.call("DELETE", "/v1/tenants/kept/data", &doomed, None);
    assert_eq!(status, 403, "{body}");
    let (status, body) = d.call("DELETE", "/v1/tenants/nobody/data", &root, None);
    assert_eq!(status, 404, "{body}");
    let (status, plan) = d.call("DELETE", "/v1/tenants/doomed/data", &root, None);
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["erased"], false, "{plan}");
    assert_eq!(plan["plan"]["definitions"], 2, "{plan}");
    assert!(plan["plan"]["data_keys"].as_u64().unwrap() >= 1, "{plan}");
    let (status, body) = d.call(
        "DELETE",
        "/v1/tenants/doomed/data?confirmation=0000",
        &root,
        None,
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with("confirmation-mismatch")
    );
    assert_eq!(
        d.call("GET", &format!("/v1/runs/{doomed_run}"), &doomed, None)
            .0,
        200,
        "a refused erasure changed something"
    );

    // The erasure.
    let token = plan["plan"]["confirmation"].as_str().unwrap();
    let (status, done) = d.call(
        "DELETE",
        &format!("/v1/tenants/doomed/data?confirmation={token}"),
        &root,
        None,
    );
    assert_eq!(status, 200, "{done}");
    let cert = &done["certificate"];
    assert_eq!(done["erased"], true, "{done}");
    assert!(
        !cert["data_keys_destroyed"].as_array().unwrap().is_empty(),
        "{cert}"
    );
    assert_eq!(cert["history"]["runs"], 2, "{cert}");
    assert_eq!(cert["definitions_tombstoned"], 2, "{cert}");
    assert!(
        !cert["parquet_folders_deleted"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{cert}"
    );

    // Twice: a clear problem, nothing changed.
    let (status, again) = d.call(
        "DELETE",
        &format!("/v1/tenants/doomed/data?confirmation={token}"),
        &root,
        None,
    );
    assert_eq!(status, 409, "{again}");
    assert!(
        again["type"].as_str().unwrap().ends_with("tenant-erased"),
        "{again}"
    );

    // The sealed records Kafka still retains open for nobody: a fresh process has no key.
    let (_rt, vault) = fresh_vault(&kafka, &key_file);
    assert!(vault.key_ids(&tenant).is_empty());
    let retained_after = retained(&kafka, &triggers, "doomed");
    assert!(
        !retained_after.is_empty(),
        "Kafka still retains the triggers"
    );
    for t in &retained_after {
        let mut v = t.clone();
        assert!(
            vault.open_tree(&tenant, &mut v).is_err(),
            "opened after erasure: {t}"
        );
    }
    // The history is gone; the tenant's key no longer works; the platform's audit holds
    // the certificate.
    let (status, _) = d.call("GET", &format!("/v1/runs/{doomed_run}"), &doomed, None);
    assert!(status == 401 || status == 403 || status == 404, "{status}");
    let mut parquet = Vec::new();
    for table in ["runs", "steps"] {
        files_holding(
            &d.dir.join(format!("history/warm/{table}/tenant=doomed")),
            b"PAR1",
            &mut parquet,
        );
    }
    assert!(parquet.is_empty(), "Parquet files left: {parquet:?}");
    let auditor = d.token("doomed", "platform_admin");
    wait_until(
        "the certificate in the audit trail",
        Duration::from_secs(30),
        || {
            d.all_pages("/v1/audit", &auditor, "events")
                .iter()
                .any(|e| e["action"] == "tenant_erased")
        },
    );
    // Still nowhere in clear, and the other tenant untouched.
    flush_cassandra(&d.name);
    let after = clear_copies(&dirs, &canary);
    assert!(
        after.is_empty(),
        "the canary in clear after erasure: {after:?}"
    );
    let (status, other) = d.call("GET", &format!("/v1/runs/{kept_run}"), &kept, None);
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["output"]["card"], kept_card.as_str());
    let (status, r) = d.call(
        "POST",
        "/v1/workflows/echo/runs",
        &kept,
        Some((JSON, r#"{"input":{"card":"still-works"}}"#)),
    );
    assert_eq!(status, 202, "{r}");
}

/// The value Kafka retains last under `key` on `topic` (`Some(None)`: a tombstone),
/// read from the start; `None` when the key never appears.
fn last_under(kafka: &aiq_kafka::KafkaSettings, topic: &str, key: &str) -> Option<Option<Vec<u8>>> {
    let seen = Arc::new(Mutex::new(None));
    let feed = Arc::clone(&seen);
    let key = key.to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut tail = aiq_kafka::tail::tail_topic(kafka, topic, move |r| {
            if r.key == Some(key.as_bytes()) {
                *feed.lock().unwrap() = Some(r.payload.map(<[u8]>::to_vec));
            }
        })
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(30), tail.caught_up())
            .await
            .unwrap();
        tail.handle().stop();
    });
    seen.lock().unwrap().clone()
}

const WAITER: &str =
    "id: waiter\nsteps:\n  - id: wait\n    wait_for_event: { signal: go, timeout: 1h }\n";

#[test]
fn one_erased_runs_payloads_leave_the_history_and_parquet_and_it_cannot_come_back() {
    let brokers = require_service!(KAFKA);
    let contact_points = require_service!(CQL);
    let d = Deployment::start("eraserun", &brokers, &contact_points, DEV_SECRET, "");
    let kafka = aiq_kafka::KafkaSettings::plaintext(&brokers, &d.prefix, 4, 4);
    let admin = d.token("acme", "tenant_admin");
    let user = d.token("acme", "user");
    let stranger = d.token("other", "tenant_admin");
    for doc in [ECHO, REFUSE, WAITER] {
        let (status, body) = d.call(
            "POST",
            "/v1/workflows",
            &admin,
            Some(("application/yaml", doc)),
        );
        assert_eq!(status, 201, "{body}");
    }
    let start = |workflow: &str, card: &str| {
        let body = json!({"input": {"card": card}}).to_string();
        let (status, r) = d.call(
            "POST",
            &format!("/v1/workflows/{workflow}/runs"),
            &admin,
            Some((JSON, &body)),
        );
        assert_eq!(status, 202, "{r}");
        r["run_id"].as_str().unwrap().to_owned()
    };
    let ended = |id: &str, status: &str| {
        let mut detail = Value::Null;
        wait_until(
            &format!("run {id} {status}"),
            Duration::from_secs(60),
            || {
                detail = d.call("GET", &format!("/v1/runs/{id}"), &admin, None).1;
                detail["status"] == status
            },
        );
        detail
    };
    let canary = |label: &str| format!("{label}-{}", uuid::Uuid::new_v4().simple());
    let (doomed_card, kept_card, echoed_card) = (canary("doomed"), canary("kept"), canary("echo"));
    let doomed = start("refuse", &doomed_card);
    let kept = start("refuse", &kept_card);
    let echoed = start("echo", &echoed_card);
    let waiting = start("waiter", "w");
    let before = ended(&doomed, "failed");
    assert_eq!(
        before["error"]["message"],
        format!("card {doomed_card} refused")
    );
    ended(&kept, "failed");
    assert_eq!(
        ended(&echoed, "succeeded")["output"]["card"],
        echoed_card.as_str()
    );

    // Both failures' messages reach the Parquet history (sealed) before the erasure.
    let sql = |q: String| {
        let body = json!({ "query": q }).to_string();
        let (status, rows) = d.call("POST", "/v1/sql", &admin, Some((JSON, &body)));
        assert_eq!(status, 200, "{rows}");
        rows["rows"].as_array().unwrap().clone()
    };
    let messages = |table: &str, run: &str| -> Vec<Value> {
        sql(format!(
            "SELECT error_message FROM {table} WHERE run_id = '{run}' AND error_message IS NOT NULL"
        ))
    };
    wait_until("both messages in Parquet", Duration::from_secs(90), || {
        [&doomed, &kept]
            .iter()
            .all(|r| !messages("runs", r).is_empty() && !messages("steps", r).is_empty())
    });

    // Bad requests change nothing: a user may not erase, another tenant finds no such
    // run, a run still in flight is refused, and so is an id that is no run.
    let (status, body) = d.call("DELETE", &format!("/v1/runs/{doomed}"), &user, None);
    assert_eq!(status, 403, "{body}");
    let (status, body) = d.call("DELETE", &format!("/v1/runs/{doomed}"), &stranger, None);
    assert_eq!(status, 404, "{body}");
    ended(&waiting, "running");
    let (status, body) = d.call("DELETE", &format!("/v1/runs/{waiting}"), &admin, None);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["type"].as_str().unwrap().ends_with("run-not-ended"),
        "{body}"
    );
    let (status, body) = d.call("DELETE", "/v1/runs/not-a-run", &admin, None);
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        d.call("GET", &format!("/v1/runs/{doomed}"), &admin, None).1,
        before,
        "a refused erasure changed the run"
    );

    // The erasures.
    let (status, cert) = d.call("DELETE", &format!("/v1/runs/{doomed}"), &admin, None);
    assert_eq!(status, 200, "{cert}");
    assert_eq!(cert["run_id"], doomed.as_str(), "{cert}");
    assert_eq!(cert["status"], "failed", "{cert}");
    assert_eq!(cert["history"]["run"], true, "{cert}");
    assert!(cert["history"]["steps"].as_u64().unwrap() >= 1, "{cert}");
    let (status, cert) = d.call("DELETE", &format!("/v1/runs/{echoed}"), &admin, None);
    assert_eq!(status, 200, "{cert}");

    // The history reads the payloads as gone, the rest as it was.
    let after = d.call("GET", &format!("/v1/runs/{doomed}"), &admin, None).1;
    assert!(after["payloads_erased_at"].is_string(), "{after}");
    assert_eq!(after["input"], Value::Null, "{after}");
    assert_eq!(after["error"]["message"], Value::Null, "{after}");
    assert_eq!(after["error"]["class"], before["error"]["class"], "{after}");
    assert_eq!(after["status"], "failed");
    assert_eq!(
        after["steps"].as_array().unwrap().len(),
        before["steps"].as_array().unwrap().len()
    );
    for s in after["steps"].as_array().unwrap() {
        assert!(s["error"]["message"].is_null(), "{after}");
    }
    let echo_after = d.call("GET", &format!("/v1/runs/{echoed}"), &admin, None).1;
    assert_eq!(echo_after["input"], Value::Null, "{echo_after}");
    assert_eq!(echo_after["output"], Value::Null, "{echo_after}");
    assert!(!after.to_string().contains(&doomed_card));
    let other = d.call("GET", &format!("/v1/runs/{kept}"), &admin, None).1;
    assert_eq!(
        other["error"]["message"],
        format!("card {kept_card} refused")
    );
    assert_eq!(other["input"]["card"], kept_card.as_str());

    // Twice: a clear problem. Redrive and rerun, which would need what is gone, refused.
    let (status, body) = d.call("DELETE", &format!("/v1/runs/{doomed}"), &admin, None);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with("run-already-erased"),
        "{body}"
    );
    for action in ["redrive", "rerun"] {
        let (status, body) = d.call(
            "POST",
            &format!("/v1/runs/{doomed}/{action}"),
            &admin,
            Some((JSON, "{}")),
        );
        assert_eq!(status, 409, "{action}: {body}");
        assert!(
            body["type"].as_str().unwrap().ends_with("run-erased"),
            "{body}"
        );
    }

    // The orchestrator dropped the failed run's state kept for redrive (its input): the
    // changelog's last word on it is a tombstone. The kept run's state is still there.
    let changelog = format!("{}orchestrator-changelog", d.prefix);
    wait_until("the kept state tombstoned", Duration::from_secs(30), || {
        last_under(&kafka, &changelog, &format!("acme/run/{doomed}")) == Some(None)
    });
    assert!(
        matches!(
            last_under(&kafka, &changelog, &format!("acme/run/{kept}")),
            Some(Some(_))
        ),
        "the other failed run's state went too"
    );

    // The sink rewrote the Parquet files without the erased run's messages, and only
    // those: the other run's are there, and every row of both runs is still counted.
    wait_until(
        "the messages gone from Parquet",
        Duration::from_secs(60),
        || messages("runs", &doomed).is_empty() && messages("steps", &doomed).is_empty(),
    );
    assert!(!messages("runs", &kept).is_empty());
    assert!(!messages("steps", &kept).is_empty());
    let mut counted = sql(format!(
        "SELECT status, error_class FROM runs WHERE run_id = '{doomed}'"
    ));
    counted.sort_by_key(|r| r.to_string());
    assert_eq!(
        counted,
        vec![json!(["failed", "fatal"]), json!(["running", null])],
        "{counted:?}"
    );

    // The certificate is in the tenant's audit trail.
    wait_until(
        "the certificate in the audit",
        Duration::from_secs(30),
        || {
            d.all_pages("/v1/audit", &admin, "events")
                .iter()
                .any(|e| e["action"] == "run_erased" && e["subject"] == doomed.as_str())
        },
    );
}
