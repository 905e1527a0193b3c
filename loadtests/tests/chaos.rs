//! The short version of `scripts/chaos` (RELIABILITY.md): a few hundred runs of the chaos
//! mix through a real `aiq serve` (every role) on the shared Kafka and Cassandra, with
//! `aiq serve` SIGKILLed twice and restarted; every accepted run must end once, as
//! `succeeded`, on the events topic, in the store and in the Parquet history. Kafka and
//! Cassandra are not killed here: other tests use them. The `aiq` binary is `$AIQ_BIN`,
//! or `debug/aiq` under `$CARGO_TARGET_DIR` or the workspace's `target`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use aiq_loadtests::chaos::faults::ServeCommand;
use aiq_loadtests::chaos::workflows::Kind;
use aiq_loadtests::chaos::{Settings, run};
use aiq_testkit::{CQL, KAFKA, require_service};

const SECRET: &str = "chaos-test-development-secret-not-for-production";

mod common;

use common::{ChaosDeployment, aiq_bin, chaos_deployment, free_port};

// In the default test run (and CI) since a SIGKILL's stall fell from tens of seconds to
// a few (10 s group sessions, restores that do not wait on fetches): three runs in a row
// here took 52-54 s each (debug build), inside a drain budget of 150 s (RELIABILITY.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_survive_two_sigkills_of_aiq_serve() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let ops_listen = format!("127.0.0.1:{}", free_port());
    let ChaosDeployment {
        dir,
        name,
        prefix,
        listen,
        history,
        mut env,
    } = chaos_deployment("chaos", &brokers, &cql, SECRET);
    env.extend(
        [
            (
                "AIQ_SERVE_ROLES",
                "ingest,orchestrator,worker,sink".to_owned(),
            ),
            ("AIQ_SERVE_OPS_LISTEN", ops_listen),
            ("AIQ_ORCHESTRATOR_INSTANCE_ID", name.clone()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    // Only this deployment's AIQ_ variables reach aiq.
    let env_remove: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("AIQ_"))
        .collect();
    let aiq = |args: &[&str]| {
        let mut c = std::process::Command::new(aiq_bin());
        for k in &env_remove {
            c.env_remove(k);
        }
        let out = c
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "aiq {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    aiq(&["topics", "apply"]);
    aiq(&["schema", "apply"]);
    let token = aiq(&["token", "--tenant", "ops", "--role", "platform_admin"])
        .trim()
        .to_owned();

    let out = dir.path().join("out");
    let settings = Settings {
        api: format!("http://{listen}"),
        token,
        brokers,
        topic_prefix: prefix,
        cql,
        keyspace: name,
        history,
        rate: 20.0,
        runs: 300,
        tenants: vec!["chaos0".into(), "chaos1".into()],
        mix: vec![
            (Kind::Noop1, 0.4),
            (Kind::Noop10, 0.2),
            (Kind::Signal, 0.2),
            (Kind::Flaky, 0.2),
        ],
        seed: 3,
        serve_kills: 2,
        kafka_kills: 0,
        cassandra_kills: 0,
        down_for: Duration::from_secs(1),
        serve: Some(ServeCommand {
            bin: aiq_bin(),
            env: env.clone(),
            env_remove: env_remove.clone(),
            log: dir.path().join("serve.log"),
            pid_file: None,
        }),
        services: None,
        drain: Duration::from_secs(150),
        give_up: Duration::from_secs(120),
        max_in_flight: 512,
        out: out.clone(),
    };
    let summary = run(&settings).await.unwrap();
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    let tail: String = log.lines().rev().take(40).collect::<Vec<_>>().join("\n");
    assert!(
        summary.verdict.clean(),
        "{}\nlast lines of serve.log (newest first):\n{tail}",
        summary.verdict.text()
    );
    assert_eq!(summary.faults.len(), 2, "{:?}", summary.faults);
    assert!(summary.serve_restarts >= 2, "{}", summary.serve_restarts);
    assert_eq!(summary.drive.accepted, 300, "{:?}", summary.drive);
    assert!(summary.flaky_refused > 0);
    assert!(out.join("summary.json").is_file() && out.join("accepted.jsonl").is_file());
}
