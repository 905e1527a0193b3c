//! `aiq-load sql-isolation` against a real `aiq serve` started here (ingest, orchestrator
//! and worker over the real Kafka and Cassandra): tenant A's concurrent heavy queries get
//! 429s with `Retry-After` beyond its limit, the queries that run burn CPU on the
//! `aiq-sql` threads (none when no query runs), and every run of tenant B ends in both
//! phases. Latency is not asserted here (a debug build on a shared CI machine); the
//! release figures are `scripts/bench-sql`'s, in BENCHMARKS.md. The `aiq` binary is
//! `$AIQ_BIN`, or `debug/aiq` under `$CARGO_TARGET_DIR` or the workspace's `target`.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use aiq_testkit::{CQL, KAFKA, require_service, unique};

const SECRET: &str = "sql-isolation-test-development-secret-not-for-production";

mod common;

use common::{Served, free_port, serve_ready};

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn heavy_queries_are_refused_beyond_the_limit_and_run_on_the_sql_threads() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let name = unique("sqliso");
    let prefix = format!("{}.", name.replace('_', "-"));
    let listen = format!("127.0.0.1:{}", free_port());
    let history = tempfile::tempdir().unwrap();
    let env = vec![
        ("AIQ_KAFKA_BROKERS", brokers.clone()),
        ("AIQ_KAFKA_TOPIC_PREFIX", prefix.clone()),
        ("AIQ_CQL_CONTACT_POINTS", cql),
        ("AIQ_CQL_KEYSPACE", name.clone()),
        ("AIQ_SERVE_ROLES", "ingest,orchestrator,worker".into()),
        ("AIQ_SERVE_HTTP_LISTEN", listen.clone()),
        ("AIQ_SERVE_OPS_LISTEN", format!("127.0.0.1:{}", free_port())),
        ("AIQ_ORCHESTRATOR_INSTANCE_ID", name.clone()),
        ("AIQ_ANALYTICS_ROOT", history.path().display().to_string()),
        ("AIQ_ANALYTICS_MAX_QUERIES_PER_TENANT", "2".into()),
        ("AIQ_DEV_JWT_SECRET", SECRET.into()),
        ("AIQ_LOG_FILTER", "warn".into()),
    ];
    let Served {
        mut serve,
        token,
        api,
    } = serve_ready(&env, &listen).await;

    let out = tempfile::tempdir().unwrap();
    let mut load = Command::new(env!("CARGO_BIN_EXE_aiq-load"));
    load.args(["sql-isolation", "--api", &api, "--brokers", &brokers])
        .args(["--topic-prefix", &prefix, "--rate", "20", "--duration", "6"])
        .args(["--clients", "6", "--warmup", "0.5", "--drain-timeout", "90"])
        // A few seconds of a debug build's SQL threads per query.
        .args([
            "--query",
            "SELECT count(*) FROM generate_series(1, 2000) a \
             CROSS JOIN generate_series(1, 2000) b WHERE (a.value + b.value) % 7 = 0",
        ])
        .args(["--pid", &serve.0.id().to_string()])
        .arg("--out")
        .arg(out.path())
        .env("AIQ_LOAD_TOKEN", &token);
    let run = tokio::task::spawn_blocking(move || load.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(serve.0.try_wait().unwrap().is_none(), "aiq serve died");

    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    println!("{s:#}");
    let sql = &s["beside_sql"]["sql"];
    let refused = sql["statuses"]["429"].as_u64().unwrap_or(0);
    assert!(refused > 0, "six clients, a limit of two, no 429: {sql}");
    assert_eq!(sql["refused_with_retry_after"], refused, "{sql}");
    assert_eq!(
        sql["problem_types"],
        serde_json::json!(["https://automateiq.dev/problems/tenant-query-limit"]),
        "{sql}"
    );
    assert!(sql["statuses"]["200"].as_u64().unwrap_or(0) > 0, "{sql}");
    assert!(
        s["alone"]["sql"]["statuses"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    // The queries' work is on the SQL threads, and only while queries run.
    let sql_cpu = |phase: &str| s[phase]["cpu_seconds"]["sql_threads"].as_f64().unwrap();
    assert!(sql_cpu("beside_sql") >= 1.0, "{s}");
    assert!(sql_cpu("alone") <= 0.1, "{s}");
    for phase in ["alone", "beside_sql"] {
        let runs = &s[phase]["runs"];
        assert_eq!(runs["completed"], runs["sent"], "{phase}: {runs}");
        assert_eq!(runs["sent"], 120, "{phase}: {runs}");
    }
}
