//! `aiq-load run` against a real `aiq serve` started here (ingest, orchestrator and
//! worker over the real Kafka and Cassandra): every triggered run is seen to end, and the
//! report files are written. The `aiq` binary is `$AIQ_BIN`, or `debug/aiq` under
//! `$CARGO_TARGET_DIR` or the workspace's `target` (`cargo build -p aiq`).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Instant;

use aiq_testkit::{CQL, KAFKA, require_service, unique};

const SECRET: &str = "load-test-development-secret-not-for-production";

mod common;

use common::{Served, free_port, serve_ready};

#[tokio::test(flavor = "multi_thread")]
async fn every_triggered_run_completes_and_the_report_is_written() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let name = unique("load");
    let prefix = format!("{}.", name.replace('_', "-"));
    let listen = format!("127.0.0.1:{}", free_port());
    let ops_listen = format!("127.0.0.1:{}", free_port());
    let env = vec![
        ("AIQ_KAFKA_BROKERS", brokers.clone()),
        ("AIQ_KAFKA_TOPIC_PREFIX", prefix.clone()),
        ("AIQ_CQL_CONTACT_POINTS", cql),
        ("AIQ_CQL_KEYSPACE", name.clone()),
        ("AIQ_SERVE_ROLES", "ingest,orchestrator,worker".into()),
        ("AIQ_SERVE_HTTP_LISTEN", listen.clone()),
        ("AIQ_SERVE_OPS_LISTEN", ops_listen),
        ("AIQ_ORCHESTRATOR_INSTANCE_ID", name.clone()),
        ("AIQ_DEV_JWT_SECRET", SECRET.into()),
        ("AIQ_LOG_FILTER", "warn".into()),
    ];
    let Served {
        mut serve,
        token,
        api,
    } = serve_ready(&env, &listen).await;

    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut load = Command::new(env!("CARGO_BIN_EXE_aiq-load"));
    load.args([
        "run",
        "--api",
        &api,
        "--brokers",
        &brokers,
        "--topic-prefix",
        &prefix,
    ])
    .args([
        "--rate",
        "20",
        "--duration",
        "3",
        "--tenants",
        "5",
        "--warmup",
        "0.5",
    ])
    .args([
        "--mix",
        "hello=0.5,ten-steps=0.5",
        "--baseline-messages",
        "300",
        "--pipe-messages",
        "300",
    ])
    .args(["--drain-timeout", "90", "--tenant-prefix", "lt-"])
    .arg("--out")
    .arg(out.path())
    .env("AIQ_LOAD_TOKEN", &token);
    let run = tokio::task::spawn_blocking(move || load.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    println!("aiq-load run took {:?}", started.elapsed());
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(serve.0.try_wait().unwrap().is_none(), "aiq serve died");

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["planned"], 60);
    assert_eq!(summary["sent"], 60);
    assert_eq!(summary["accepted"], 60, "{summary}");
    assert_eq!(summary["completed"], 60, "{summary}");
    assert_eq!(summary["not_completed"], 0);
    assert_eq!(summary["terminal"]["succeeded"], 60, "{summary}");
    assert_eq!(summary["e2e_ms"]["count"], 60);
    assert!(summary["baseline_ratio"].as_f64().unwrap() > 0.0);
    // The hop tap saw every run at every point, and more tasks than runs (ten-steps).
    let hops = &summary["hops_ms"];
    assert_eq!(hops["runs"], 60, "{summary}");
    assert_eq!(hops["hops"].as_array().unwrap().len(), 8);
    assert!(hops["total"]["p50"].as_f64().unwrap() > 0.0, "{summary}");
    assert!(
        summary["tasks_per_sec"].as_f64().unwrap()
            > summary["sustained_runs_per_sec"].as_f64().unwrap()
    );
    assert!(
        summary["pipe_records_per_sec"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    assert!(summary["pipe_ratio"].as_f64().unwrap() > 0.0, "{summary}");
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert_eq!(report.trim(), stdout.trim());
    assert!(report.contains("% of raw Kafka produce+consume"));
    assert!(report.contains("### Where the time goes") && report.contains("% of the pipe"));
    let svg = std::fs::read_to_string(out.path().join("latency.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
}
