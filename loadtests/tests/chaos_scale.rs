//! The short version of `scripts/chaos --scale` (RELIABILITY.md): the chaos mix at a
//! steady rate through `aiq serve` (ingest, worker, sink) and orchestrator processes of
//! their own going 1 → 2 → 3 → 2 → 1 instances with a SIGKILL at each change, on the
//! shared Kafka and Cassandra (a topic prefix and keyspace of its own). Every accepted
//! run must end once, as `succeeded`, in every witness, with no doubled run or step
//! event; the stall of each change is measured and printed. The `aiq` binary is
//! `$AIQ_BIN`, or `debug/aiq` under `$CARGO_TARGET_DIR` or the workspace's `target`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use aiq_loadtests::chaos::faults::ServeCommand;
use aiq_loadtests::chaos::scale::Scale;
use aiq_loadtests::chaos::workflows::Kind;
use aiq_loadtests::chaos::{Settings, run_with};
use aiq_testkit::{CQL, KAFKA, require_service};

const SECRET: &str = "chaos-test-development-secret-not-for-production";

mod common;

use common::{ChaosDeployment, aiq_bin, chaos_deployment, free_port};

// Not in the default test run: five phases of 15 s, each scale-down waits out the
// killed instance's session (10 s) and its open transaction (10 s), and four
// processes of `aiq serve` in debug on a loaded 2-core CI machine make it minutes long.
// `scripts/chaos --scale --quick` runs the same on services of its own:
// `cargo test -p aiq-loadtests --test chaos_scale -- --ignored --nocapture`.
#[ignore = "minutes long; scripts/chaos --scale --quick runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_end_once_while_orchestrators_scale_one_two_three_two_one() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let ChaosDeployment {
        dir,
        name,
        prefix,
        listen,
        history,
        env,
    } = chaos_deployment("chaos_scale", &brokers, &cql, SECRET);
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
            .env("AIQ_SERVE_OPS_LISTEN", format!("127.0.0.1:{}", free_port()))
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
    std::fs::create_dir_all(&out).unwrap();
    let mut serve_env = env.clone();
    serve_env.extend([
        (
            "AIQ_SERVE_ROLES".to_owned(),
            "ingest,worker,sink".to_owned(),
        ),
        (
            "AIQ_SERVE_OPS_LISTEN".to_owned(),
            format!("127.0.0.1:{}", free_port()),
        ),
    ]);
    let phase = Duration::from_secs(15);
    let rate = 20.0;
    let scale = Scale {
        bin: aiq_bin(),
        env: env.clone(),
        env_remove: env_remove.clone(),
        ops_ports: [free_port(), free_port(), free_port()],
        phase,
        kill_delay: Duration::from_secs(3),
        out: out.clone(),
    };
    let settings = Settings {
        api: format!("http://{listen}"),
        token,
        brokers,
        topic_prefix: prefix,
        cql,
        keyspace: name,
        history,
        rate,
        runs: (rate * phase.as_secs_f64() * 5.0) as u64,
        tenants: (0..24).map(|i| format!("chaos{i}")).collect(),
        mix: vec![
            (Kind::Noop1, 0.4),
            (Kind::Noop10, 0.2),
            (Kind::Signal, 0.2),
            (Kind::Flaky, 0.2),
        ],
        seed: 5,
        serve_kills: 0,
        kafka_kills: 0,
        cassandra_kills: 0,
        down_for: Duration::from_secs(1),
        serve: Some(ServeCommand {
            bin: aiq_bin(),
            env: serve_env,
            env_remove: env_remove.clone(),
            log: out.join("serve.log"),
            pid_file: None,
        }),
        services: None,
        drain: Duration::from_secs(150),
        give_up: Duration::from_secs(120),
        max_in_flight: 512,
        out: out.clone(),
    };
    let summary = run_with(&settings, Some(&scale)).await.unwrap();
    let report = summary.scale.as_ref().unwrap();
    println!("{}\n{}", summary.verdict.text(), report.table());
    assert!(summary.verdict.clean(), "{}", summary.verdict.text());
    assert_eq!(report.doubled_event_runs, 0, "{:?}", report);
    assert_eq!(summary.drive.accepted, settings.runs, "{:?}", summary.drive);
    // The steady phase and the four changes, each with what it did.
    assert_eq!(report.windows.len(), 5, "{:?}", report.windows);
    for w in &report.windows[1..] {
        let change = w.change.as_ref().unwrap();
        assert!(
            change.actions.iter().all(|a| a.contains("(pid ")),
            "{change:?}"
        );
    }
    // The two scale-up kills were restarted.
    assert!(report.orchestrator_restarts >= 2, "{report:?}");
}
