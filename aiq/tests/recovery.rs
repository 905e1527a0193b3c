//! The recovery loop end to end, each test in a real `aiq serve` of its own on Kafka
//! and Cassandra:
//!
//! - triggers naming a workflow nobody registered are set aside by the orchestrator,
//!   indexed by the sink, listed by the API to their tenant only, and once the workflow
//!   is registered, replayed: each becomes exactly one successful run, and a second
//!   replay is refused and starts nothing; the operator's `aiq dead-letters` sees the
//!   same letters;
//! - a run that failed at its third step because its HTTP target answered 500 is
//!   redriven once the target is fixed, and completes without calling steps 1 and 2
//!   again (the target counts every call); a rerun starts a new run with the same
//!   input, once per idempotency key;
//! - a bulk replay chosen by SQL over 1,000 failed runs, dry run then real at 100 runs a
//!   second, redrives exactly those runs, once, reports its progress, and reaches no
//!   other tenant's runs.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiq_testkit::{CQL, KAFKA, require_service};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{Value, json};
use support::{Deployment, wait_until};

const DEV_SECRET: &str = "recovery-test-secret-not-for-production";
const TENANT: &str = "acme";
const LETTERS: usize = 100;

const LATER: &str = r#"
id: later
steps:
  - id: greet
    task: { connector: noop, args: { output: "${input.n}" } }
"#;

#[test]
fn unknown_workflow_letters_replay_once_into_exactly_one_run_each() {
    let brokers = require_service!(KAFKA);
    let contact_points = require_service!(CQL);
    let d = Deployment::start("dlq", &brokers, &contact_points, DEV_SECRET, "");
    let admin = d.token(TENANT, "tenant_admin");
    let user = d.token(TENANT, "user");
    let other = d.token("globex", "tenant_admin");
    let platform = d.token("ops", "platform_admin");

    // Straight to the triggers topic, as an outside producer may: a workflow nobody
    // registered, and one record whose key names no tenant.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let topic = format!("{}triggers", d.prefix);
    for n in 0..LETTERS {
        let trigger = json!({
            "schema": "aiq.trigger.v1", "tenant": TENANT, "workflow": "later",
            "source": "kafka", "input": {"n": n}
        })
        .to_string();
        producer
            .send(BaseRecord::to(&topic).key(TENANT).payload(&trigger))
            .unwrap();
    }
    producer
        .send(
            BaseRecord::to(&topic)
                .key("no tenant here!")
                .payload("not json"),
        )
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();

    // Indexed, and listed to their tenant.
    let listing = "/v1/dead-letters?kind=unknown_workflow";
    let mut letters = Vec::new();
    wait_until("100 letters listed", Duration::from_secs(120), || {
        letters = d.all_pages(listing, &user, "dead_letters");
        letters.len() >= LETTERS
    });
    assert_eq!(letters.len(), LETTERS);
    for l in &letters {
        assert_eq!(l["tenant"], TENANT);
        assert_eq!(l["stage"], "orchestrator");
        assert_eq!(l["topic"], topic);
        assert_eq!(l["state"], "open");
        assert!(l["reason"].as_str().unwrap().contains("later"), "{l}");
    }
    let ids: BTreeSet<String> = letters
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), LETTERS);

    // One whole: the record as it was read.
    let first = ids.iter().next().unwrap();
    let one_path = format!("/v1/dead-letters/{first}");
    let (status, one) = d.call("GET", &one_path, &user, None);
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["record"]["key"], TENANT);
    assert_eq!(one["record"]["value_json"]["workflow"], "later");
    assert!(one["partition"].is_i64() && one["offset"].is_i64(), "{one}");

    // Another tenant sees none of them, and cannot touch one.
    assert!(d.all_pages(listing, &other, "dead_letters").is_empty());
    assert_eq!(d.call("GET", &one_path, &other, None).0, 404);
    let replay_first = format!("{one_path}/replay");
    assert_eq!(d.call("POST", &replay_first, &other, None).0, 404);
    // A user may read but not replay; only a platform admin sees every tenant's.
    assert_eq!(d.call("POST", &replay_first, &user, None).0, 403);
    let everyone_path = "/v1/dead-letters?all_tenants=true";
    assert_eq!(d.call("GET", everyone_path, &admin, None).0, 403);
    let everyone = d.all_pages(everyone_path, &platform, "dead_letters");
    let nobodys: Vec<&Value> = everyone.iter().filter(|l| l["tenant"].is_null()).collect();
    assert_eq!(everyone.len(), LETTERS + 1, "{everyone:?}");
    assert_eq!(nobodys.len(), 1);
    assert_eq!(nobodys[0]["kind"], "undecodable");

    // The workflow arrives; every letter is replayed once.
    let (status, body) = d.call(
        "POST",
        "/v1/workflows",
        &admin,
        Some(("application/yaml", LATER)),
    );
    assert!(
        status == 201 || status == 200,
        "registering: {status} {body}"
    );
    for id in &ids {
        let (status, body) = d.call(
            "POST",
            &format!("/v1/dead-letters/{id}/replay"),
            &admin,
            None,
        );
        assert_eq!(status, 200, "replaying {id}: {body}");
        assert_eq!(body["state"], "replayed");
        assert_eq!(body["topic"], topic);
    }
    // A second replay is refused, by the API and by the operator's command alike.
    for id in &ids {
        let (status, body) = d.call(
            "POST",
            &format!("/v1/dead-letters/{id}/replay"),
            &admin,
            None,
        );
        assert_eq!(status, 409, "second replay of {id}: {body}");
    }
    let again = d.aiq(&[
        "dead-letters",
        "replay",
        "--all",
        "--tenant",
        TENANT,
        "--kind",
        "unknown_workflow",
    ]);
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("0 replayed, 100 refused, 0 failed"), "{said}");

    // Exactly one successful run per letter, each with its letter's input.
    let runs_path = "/v1/runs?workflow=later";
    let mut runs = Vec::new();
    wait_until("100 runs succeeded", Duration::from_secs(120), || {
        runs = d.all_pages(runs_path, &user, "runs");
        runs.len() >= LETTERS && runs.iter().all(|r| r["status"] == "succeeded")
    });
    // Late duplicates would show up now.
    std::thread::sleep(Duration::from_secs(5));
    runs = d.all_pages(runs_path, &user, "runs");
    assert_eq!(runs.len(), LETTERS, "{runs:?}");
    let mut inputs = BTreeSet::new();
    for r in &runs {
        assert_eq!(r["status"], "succeeded", "{r}");
        let (status, detail) = d.call(
            "GET",
            &format!("/v1/runs/{}", r["run_id"].as_str().unwrap()),
            &user,
            None,
        );
        assert_eq!(status, 200);
        inputs.insert(detail["input"]["n"].as_u64().unwrap());
    }
    assert_eq!(inputs, (0..LETTERS as u64).collect());

    // Replayed letters say so; the operator lists them, and resolves the one nobody owns.
    let replayed = d.all_pages(&format!("{listing}&state=replayed"), &user, "dead_letters");
    assert_eq!(replayed.len(), LETTERS);
    let (_, one) = d.call("GET", &one_path, &user, None);
    assert_eq!(one["state"], "replayed");
    assert!(one["replayed_offset"].is_i64(), "{one}");
    let listed = d.aiq(&["dead-letters", "list", "--state", "replayed"]);
    assert!(String::from_utf8_lossy(&listed.stderr).contains("100 dead letters"));
    let orphan = nobodys[0]["id"].as_str().unwrap();
    let shown = d.aiq(&["dead-letters", "show", orphan]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("value:     not json"));
    let resolved = d.aiq(&["dead-letters", "resolve", orphan]);
    assert!(String::from_utf8_lossy(&resolved.stderr).contains("1 resolved"));
    let (status, _) = d.call(
        "POST",
        &format!("/v1/dead-letters/{orphan}/replay"),
        &platform,
        None,
    );
    assert_eq!(status, 409, "a resolved letter is not replayed");
}

/// An HTTP target that counts the calls to each path and answers 500 on `/s3` (with
/// any query) until fixed.
struct Target {
    port: u16,
    calls: Arc<Mutex<BTreeMap<String, u32>>>,
    fixed: Arc<AtomicBool>,
}

fn target() -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let fixed = Arc::new(AtomicBool::new(false));
    let (c, f) = (Arc::clone(&calls), Arc::clone(&fixed));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("?").to_owned();
            *c.lock().unwrap().entry(path.clone()).or_default() += 1;
            let answer: &[u8] = if path.starts_with("/s3") && !f.load(Ordering::SeqCst) {
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\noops"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"ok\":true}"
            };
            let _ = s.write_all(answer);
        }
    });
    Target { port, calls, fixed }
}

fn five_steps(port: u16) -> String {
    let mut doc = String::from("id: five\nsteps:\n");
    for i in 1..=5 {
        doc.push_str(&format!(
            "  - id: s{i}\n    task:\n      connector: http\n      args: {{ method: GET, url: \"http://127.0.0.1:{port}/s{i}\" }}\n      retry: {{ max_attempts: 1 }}\n"
        ));
    }
    doc
}

#[test]
fn a_run_failed_at_step_three_is_redriven_there_and_rerun_as_a_new_run() {
    let brokers = require_service!(KAFKA);
    let contact_points = require_service!(CQL);
    let d = Deployment::start(
        "redrive",
        &brokers,
        &contact_points,
        DEV_SECRET,
        "[connectors.outbound]\nallow = [\"127.0.0.0/8\"]\n",
    );
    let admin = d.token(TENANT, "tenant_admin");
    let t = target();
    let (status, body) = d.call(
        "POST",
        "/v1/workflows",
        &admin,
        Some(("application/yaml", &five_steps(t.port))),
    );
    assert!(
        status == 201 || status == 200,
        "registering: {status} {body}"
    );
    let (status, started) = d.call(
        "POST",
        "/v1/workflows/five/runs",
        &admin,
        Some(("application/json", r#"{"input": {"order": 7}}"#)),
    );
    assert_eq!(status, 202, "{started}");
    let run = started["run_id"].as_str().unwrap().to_owned();
    let run_path = format!("/v1/runs/{run}");
    let mut detail = Value::Null;
    wait_until("the run failed", Duration::from_secs(120), || {
        detail = d.call("GET", &run_path, &admin, None).1;
        detail["status"] == "failed"
    });
    assert_eq!(detail["error"]["step"], "s3", "{detail}");
    let count = |p: &str| t.calls.lock().unwrap().get(p).copied().unwrap_or(0);
    assert_eq!(
        (count("/s1"), count("/s2"), count("/s3"), count("/s4")),
        (1, 1, 1, 0)
    );

    // A run that did not fail is not redriven; a rerun of this one waits for below.
    let redrive = format!("{run_path}/redrive");
    t.fixed.store(true, Ordering::SeqCst);
    let post_with_key = |path: &str, key: &str| {
        let mut r = d
            .agent
            .post(&format!("{}{path}", d.api))
            .header("authorization", &format!("Bearer {admin}"))
            .header("idempotency-key", key)
            .send_empty()
            .unwrap();
        let replayed = r.headers().get("idempotent-replayed").is_some();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (
            r.status().as_u16(),
            replayed,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        )
    };
    let (status, replayed, body) = post_with_key(&redrive, "redrive-1");
    assert_eq!(status, 202, "{body}");
    assert!(!replayed);
    // The client retries the same request: nothing more is done.
    let (status, replayed, _) = post_with_key(&redrive, "redrive-1");
    assert_eq!(status, 202);
    assert!(replayed);
    wait_until(
        "the redriven run succeeded",
        Duration::from_secs(120),
        || {
            detail = d.call("GET", &run_path, &admin, None).1;
            detail["status"] == "succeeded"
        },
    );
    assert!(detail["error"].is_null(), "{detail}");
    assert_eq!(
        (
            count("/s1"),
            count("/s2"),
            count("/s3"),
            count("/s4"),
            count("/s5")
        ),
        (1, 1, 2, 1, 1),
        "steps 1 and 2 ran once; 3 twice (its failure, then the redrive)"
    );
    // The same run again: it succeeded, so a redrive is refused.
    let (status, body) = d.call("POST", &redrive, &admin, None);
    assert_eq!(status, 409, "{body}");
    // Without the key, a repeat of the first request is refused the same way, since
    // the failure it named is over: no second resume.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        (count("/s1"), count("/s3"), count("/s5")),
        (1, 2, 1),
        "nothing ran again"
    );

    // Rerun: a new run, same input, once per key.
    let rerun = format!("{run_path}/rerun");
    let (status, _, first) = post_with_key(&rerun, "rerun-1");
    assert_eq!(status, 202, "{first}");
    let (status, replayed, second) = post_with_key(&rerun, "rerun-1");
    assert_eq!(status, 202);
    assert!(replayed);
    assert_eq!(first["run_id"], second["run_id"]);
    assert_ne!(first["run_id"].as_str().unwrap(), run);
    let new_path = format!("/v1/runs/{}", first["run_id"].as_str().unwrap());
    wait_until("the rerun succeeded", Duration::from_secs(120), || {
        detail = d.call("GET", &new_path, &admin, None).1;
        detail["status"] == "succeeded"
    });
    assert_eq!(detail["input"], json!({"order": 7}));
    assert_eq!(count("/s1"), 2, "the rerun ran every step");
    let audit = d.all_pages("/v1/audit", &admin, "events");
    let actions: BTreeSet<&str> = audit.iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(
        actions.contains("run_redriven") && actions.contains("run_rerun"),
        "{actions:?}"
    );
}

/// Starts `n` runs of `workflow` for the holder of `token`, from 8 threads.
fn start_runs(d: &Deployment, token: &str, workflow: &str, n: usize) {
    let path = format!("/v1/workflows/{workflow}/runs");
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|k| {
                let path = &path;
                s.spawn(move || {
                    (k..n)
                        .step_by(8)
                        .map(|i| {
                            let body = format!("{{\"input\": {{\"n\": {i}}}}}");
                            d.call("POST", path, token, Some(("application/json", &body)))
                                .0
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
}

fn one_call(tenant: &str, port: u16) -> String {
    format!(
        "id: flaky\nsteps:\n  - id: call\n    task:\n      connector: http\n      args: {{ method: GET, url: \"http://127.0.0.1:{port}/s3?{tenant}\" }}\n      retry: {{ max_attempts: 1 }}\n"
    )
}

#[test]
fn a_bulk_replay_chosen_by_sql_redrives_exactly_the_matching_runs_once() {
    const RUNS: usize = 1_000;
    const OTHERS: usize = 50;
    let brokers = require_service!(KAFKA);
    let contact_points = require_service!(CQL);
    let d = Deployment::start(
        "replays",
        &brokers,
        &contact_points,
        DEV_SECRET,
        r#"
[connectors.outbound]
allow = ["127.0.0.0/8"]

# Every call reaches the target: it counts them.
[connectors.breaker]
min_calls = 1000000

[ingest.tenants.acme.trigger_quota]
per_second = 10000
burst = 10000
"#,
    );
    let acme = d.token(TENANT, "tenant_admin");
    let globex = d.token("globex", "tenant_admin");
    let t = target();
    // Both tenants' runs fail: the target answers 500 on every path but /s3's fix.
    for (token, tenant) in [(&acme, TENANT), (&globex, "globex")] {
        let doc = one_call(tenant, t.port);
        let (status, body) = d.call(
            "POST",
            "/v1/workflows",
            token,
            Some(("application/yaml", &doc)),
        );
        assert!(status == 201 || status == 200, "{status} {body}");
    }
    start_runs(&d, &acme, "flaky", RUNS);
    start_runs(&d, &globex, "flaky", OTHERS);
    let failed = "/v1/runs?workflow=flaky&status=failed";
    wait_until("every run failed", Duration::from_secs(180), || {
        d.all_pages(failed, &acme, "runs").len() == RUNS
            && d.all_pages(failed, &globex, "runs").len() == OTHERS
    });
    let calls = |tenant: &str| {
        t.calls
            .lock()
            .unwrap()
            .get(&format!("/s3?{tenant}"))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        (calls(TENANT), calls("globex")),
        (RUNS as u32, OTHERS as u32)
    );

    // Dry runs: what the predicate matches once the Parquet history has every run; a
    // tenant's predicate naming another tenant matches nothing.
    let predicate = "status = 'failed' AND workflow = 'flaky'";
    let dry = json!({"where": predicate, "dry_run": true}).to_string();
    let mut answer = Value::Null;
    wait_until(
        "the history has every failed run",
        Duration::from_secs(120),
        || {
            answer = d
                .call(
                    "POST",
                    "/v1/replays",
                    &acme,
                    Some(("application/json", &dry)),
                )
                .1;
            answer["matched"] == RUNS
        },
    );
    assert_eq!(answer["sample"].as_array().unwrap().len(), 20);
    assert!(
        answer["sample"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["tenant"] == TENANT)
    );
    let reach =
        json!({"where": "tenant = 'globex' OR tenant <> 'globex'", "dry_run": true}).to_string();
    let (status, other) = d.call(
        "POST",
        "/v1/replays",
        &acme,
        Some(("application/json", &reach)),
    );
    assert_eq!(status, 200, "{other}");
    assert_eq!(
        other["matched"], RUNS,
        "acme's predicate reads acme's runs only"
    );
    // The operator's command agrees.
    let cli = d.aiq(&[
        "replay",
        "--where",
        predicate,
        "--tenant",
        TENANT,
        "--dry-run",
    ]);
    let printed = String::from_utf8_lossy(&cli.stdout);
    assert!(
        printed.starts_with(&format!("{RUNS} runs match\n")),
        "{printed}"
    );
    let bad = json!({"where": predicate, "mode": "again"}).to_string();
    assert_eq!(
        d.call(
            "POST",
            "/v1/replays",
            &acme,
            Some(("application/json", &bad))
        )
        .0,
        400
    );

    // The target is fixed; the real replay at 100 runs a second.
    t.fixed.store(true, Ordering::SeqCst);
    let real = json!({"where": predicate, "mode": "redrive", "max_per_second": 100}).to_string();
    let (status, job) = d.call(
        "POST",
        "/v1/replays",
        &acme,
        Some(("application/json", &real)),
    );
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["total"], RUNS);
    let job_path = format!("/v1/replays/{}", job["id"].as_str().unwrap());
    let mut seen_partial = false;
    let mut progress = Value::Null;
    wait_until("the replay job is done", Duration::from_secs(180), || {
        progress = d.call("GET", &job_path, &acme, None).1;
        let done = progress["done"].as_u64().unwrap_or(0);
        seen_partial |= done > 0 && done < RUNS as u64;
        progress["state"] == "done"
    });
    assert!(seen_partial, "the job reported progress along the way");
    assert_eq!(
        (&progress["done"], &progress["skipped"], &progress["failed"]),
        (&json!(RUNS), &json!(0), &json!(0)),
        "{progress}"
    );
    // Another tenant cannot see the job.
    assert_eq!(d.call("GET", &job_path, &globex, None).0, 404);

    let succeeded = "/v1/runs?workflow=flaky&status=succeeded";
    wait_until(
        "every redriven run succeeded",
        Duration::from_secs(180),
        || d.all_pages(succeeded, &acme, "runs").len() == RUNS,
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        calls(TENANT),
        2 * RUNS as u32,
        "each run redriven exactly once"
    );
    assert_eq!(
        calls("globex"),
        OTHERS as u32,
        "no other tenant's run was touched"
    );
    assert_eq!(d.all_pages(failed, &globex, "runs").len(), OTHERS);

    // The same replay again: the history still says they failed once, but none is
    // failed now, so nothing is redriven.
    let (status, again) = d.call(
        "POST",
        "/v1/replays",
        &acme,
        Some(("application/json", &real)),
    );
    assert_eq!(status, 202, "{again}");
    let again_path = format!("/v1/replays/{}", again["id"].as_str().unwrap());
    wait_until("the second job is done", Duration::from_secs(180), || {
        progress = d.call("GET", &again_path, &acme, None).1;
        progress["state"] == "done"
    });
    assert_eq!(progress["done"], 0, "{progress}");
    assert_eq!(progress["skipped"], RUNS);
    assert_eq!(calls(TENANT), 2 * RUNS as u32);

    // A slow job is cancelled part of the way: it stops there, and only a running job
    // can be cancelled.
    let slow = json!({"where": predicate, "mode": "redrive", "max_per_second": 5}).to_string();
    let (status, job) = d.call(
        "POST",
        "/v1/replays",
        &acme,
        Some(("application/json", &slow)),
    );
    assert_eq!(status, 202, "{job}");
    let slow_path = format!("/v1/replays/{}", job["id"].as_str().unwrap());
    wait_until("the slow job under way", Duration::from_secs(60), || {
        progress = d.call("GET", &slow_path, &acme, None).1;
        progress["skipped"].as_u64().unwrap_or(0) > 0
    });
    let (status, cancelled) = d.call("POST", &format!("{slow_path}/cancel"), &acme, None);
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    std::thread::sleep(Duration::from_secs(3));
    progress = d.call("GET", &slow_path, &acme, None).1;
    assert_eq!(progress["state"], "cancelled");
    let stopped_at = progress["skipped"].as_u64().unwrap();
    assert!(stopped_at < RUNS as u64 / 10, "{progress}");
    std::thread::sleep(Duration::from_secs(2));
    let later = d.call("GET", &slow_path, &acme, None).1;
    assert_eq!(
        later["skipped"].as_u64().unwrap(),
        stopped_at,
        "nothing after the cancel"
    );
    assert_eq!(
        d.call("POST", &format!("{slow_path}/cancel"), &acme, None)
            .0,
        409
    );
}
