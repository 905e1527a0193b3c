//! Two `aiq serve` processes, one history: both run every role over the same Kafka
//! topics, Cassandra keyspace and Azurite container (each in a working folder of its
//! own), so their sinks share the events partitions. A third process (`aiq sql`) then
//! finds every run of both exactly once in `runs` and in a ready report, and neither
//! node wrote a file to its local disk. Needs Kafka, Cassandra and Azurite
//! (`scripts/services up kafka cassandra azurite`).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aiq_testkit::{CQL, KAFKA, require_service, unique};

const SECRET: &str = "two-nodes-test-development-secret-not-for-production";
const TENANTS: [&str; 4] = ["north", "south", "east", "west"];
const RUNS_PER_TENANT: usize = 15;

mod common;

use common::{Serve, aiq, free_port, ok, serve_ready_in};

fn node_env(
    shared: &[(&'static str, String)],
    name: &str,
    listen: &str,
) -> Vec<(&'static str, String)> {
    let mut env = shared.to_vec();
    env.extend([
        ("AIQ_SERVE_HTTP_LISTEN", listen.to_owned()),
        ("AIQ_SERVE_OPS_LISTEN", format!("127.0.0.1:{}", free_port())),
        ("AIQ_ORCHESTRATOR_INSTANCE_ID", name.to_owned()),
    ]);
    env
}

/// Every file under `dir`, at any depth.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_one_history_in_azure_blob_storage() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let Some(history) = aiq_testkit::azurite_root("two-nodes") else {
        return;
    };
    let name = unique("twonodes");
    let prefix = format!("{}.", name.replace('_', "-"));
    let shared = vec![
        ("AIQ_KAFKA_BROKERS", brokers.clone()),
        ("AIQ_KAFKA_TOPIC_PREFIX", prefix),
        // Four events partitions: each sink gets some.
        ("AIQ_KAFKA_TENANT_PARTITIONS", "4".to_owned()),
        ("AIQ_KAFKA_WORK_PARTITIONS", "4".to_owned()),
        ("AIQ_CQL_CONTACT_POINTS", cql),
        ("AIQ_CQL_KEYSPACE", name.clone()),
        ("AIQ_SINK_PARQUET__ROOT", history.clone()),
        ("AIQ_ANALYTICS_ROOT", history.clone()),
        ("AIQ_SINK_COMMIT_INTERVAL_MS", "200".to_owned()),
        ("AIQ_INGEST_TRIGGER_QUOTA__PER_SECOND", "10000".to_owned()),
        ("AIQ_INGEST_TRIGGER_QUOTA__BURST", "10000".to_owned()),
        ("AIQ_DEV_JWT_SECRET", SECRET.to_owned()),
        ("AIQ_LOG_FILTER", "warn".to_owned()),
    ];
    let (listen_a, listen_b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let env_a = node_env(&shared, &format!("{name}-a"), &listen_a);
    let env_b = node_env(&shared, &format!("{name}-b"), &listen_b);
    // Each node in a working folder of its own: a relative default path would land there.
    let (cwd_a, cwd_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    let served_a = serve_ready_in(&env_a, &listen_a, Some(cwd_a.path())).await;
    let _b = start_in(&env_b, cwd_b.path());
    let client = reqwest::Client::new();
    let api_b = format!("http://{listen_b}");
    wait_ready(&client, &api_b).await;
    let token = served_a.token.clone();

    // Workflows through node A, runs through both.
    let doc = serde_json::json!({
        "id": "hello",
        "steps": [{"id": "s0", "task": {"connector": "noop", "args": {"output": 1}}}]
    });
    for t in TENANTS {
        let r = client
            .post(format!("{}/v1/workflows", served_a.api))
            .bearer_auth(&token)
            .header("x-aiq-tenant", t)
            .json(&doc)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    // Node B's catalog follows the definitions topic: wait until it knows them.
    let mut accepted: BTreeMap<String, &str> = BTreeMap::new();
    let apis = [served_a.api.clone(), api_b.clone()];
    for (i, t) in TENANTS
        .iter()
        .cycle()
        .take(TENANTS.len() * RUNS_PER_TENANT)
        .enumerate()
    {
        let api = &apis[i % 2];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = client
                .post(format!("{api}/v1/workflows/hello/runs"))
                .bearer_auth(&token)
                .header("x-aiq-tenant", *t)
                .header("idempotency-key", format!("run-{i}"))
                .json(&serde_json::json!({"input": {"n": i}}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            if status == 202 {
                accepted.insert(body["run_id"].as_str().unwrap().to_owned(), t);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "run {i} on {api}: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(accepted.len(), TENANTS.len() * RUNS_PER_TENANT);

    // A third process, with only the analytics settings, reads what both sinks wrote.
    let sql_env = [
        ("AIQ_ANALYTICS_ROOT", history.clone()),
        ("AIQ_LOG_FILTER", "warn".to_owned()),
    ];
    let sql = |query: &str| {
        let mut c = aiq(&sql_env);
        c.args(["sql", "--format", "csv", query]);
        ok(c)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let rows = loop {
        let out = sql("SELECT run_id, tenant FROM runs WHERE status = 'succeeded' ORDER BY run_id");
        let rows: Vec<(String, String)> = out
            .lines()
            .skip(1)
            .filter_map(|l| {
                let (r, t) = l.trim().split_once(',')?;
                Some((r.to_owned(), t.to_owned()))
            })
            .collect();
        if rows.len() >= accepted.len() || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let found: BTreeSet<&str> = rows.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(rows.len(), found.len(), "a run appears twice: {rows:?}");
    let want: BTreeSet<&str> = accepted.keys().map(String::as_str).collect();
    assert_eq!(found, want, "the history's runs are the accepted ones");
    for (run, tenant) in &rows {
        assert_eq!(accepted[run], tenant.as_str(), "{run}");
    }

    // The ready report counts each run once, per tenant.
    let mut report = aiq(&sql_env);
    report.args(["report", "workflow_success", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_str(&ok(report)).unwrap();
    let total: u64 = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let cols = report["columns"].as_array().unwrap();
            let runs = cols
                .iter()
                .position(|c| c["name"] == "runs_finished")
                .unwrap();
            r[runs].as_u64().unwrap()
        })
        .sum();
    assert_eq!(total, accepted.len() as u64, "{report}");

    // A tenant's POST /v1/sql on either node reads the same shared history.
    for (api, t) in [(&served_a.api, "north"), (&api_b, "east")] {
        let r = client
            .post(format!("{api}/v1/sql"))
            .bearer_auth(&token)
            .header("x-aiq-tenant", t)
            .json(&serde_json::json!({"query": "SELECT count(*) AS n FROM runs WHERE status = 'succeeded'"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["rows"][0][0], RUNS_PER_TENANT as u64, "{t}: {body}");
    }

    // Both sinks wrote: each read events from its share of the partitions.
    for api_ops in [&env_a, &env_b] {
        let ops = &api_ops
            .iter()
            .find(|(k, _)| *k == "AIQ_SERVE_OPS_LISTEN")
            .unwrap()
            .1;
        let metrics = client
            .get(format!("http://{ops}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let events: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("aiq_sink_records_total") && l.contains("events"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(events > 0.0, "a node's sink read no events: {ops}");
    }
    for cwd in [&cwd_a, &cwd_b] {
        assert_eq!(files_under(cwd.path()), Vec::<std::path::PathBuf>::new());
    }
}

fn start_in(env: &[(&str, String)], cwd: &std::path::Path) -> Serve {
    let mut serve = aiq(env);
    serve
        .arg("serve")
        .current_dir(cwd)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    Serve(serve.spawn().unwrap())
}

async fn wait_ready(client: &reqwest::Client, api: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = client.get(format!("{api}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{api} not ready");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
