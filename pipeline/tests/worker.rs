//! The worker stage with the orchestrator, against a real Kafka.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use aiq_connectors::{ConnectorSettings, Connectors, SecretStore};
use aiq_pipeline::worker::{Worker, WorkerSettings};
use aiq_topics::{ErrorClass, Event, RunStatus, StepStatus, TopicKind};
use serde_json::json;

const NOOP: &str = r#"
id: noop
steps:
  - id: one
    task: { connector: noop, args: { output: "${ input.n }", delay_ms: 5 } }
  - id: two
    task: { connector: noop, args: { output: "${ steps.one.output + 1 }" } }
"#;

const FILES: &str = r#"
id: files
steps:
  - id: save
    task: { connector: file, args: { op: write, path: "reports/${ input.name }.txt", content: "n=${ string(input.n) }" } }
  - id: load
    task: { connector: file, args: { op: read, path: "reports/${ input.name }.txt" } }
  - id: done
    succeed: { output: "${ steps.load.output.content }" }
"#;

const TOO_SLOW: &str = r#"
id: too-slow
steps:
  - id: sleepy
    task: { connector: noop, args: { delay_ms: 3000 }, timeout: 200ms }
"#;

#[test]
fn the_worker_runs_tasks_reports_results_and_cuts_off_a_task_at_its_timeout() {
    const RUNS: usize = 300;
    let Some(env) = common::env("worker", 4) else {
        return;
    };
    env.register("acme", 1, NOOP);
    env.register("acme", 1, TOO_SLOW);
    env.register("acme", 1, FILES);
    let file_root = std::env::temp_dir().join(aiq_testkit::unique("files"));
    let settings = WorkerSettings {
        max_in_flight: 16,
        ..WorkerSettings::default()
    };
    let connector_settings = ConnectorSettings {
        file_root: file_root.display().to_string(),
        ..ConnectorSettings::default()
    };
    let orch = env.orchestrator("worker-test");
    let worker = env.rt.block_on(async {
        Worker::start(
            &env.kafka,
            settings.clone(),
            Connectors::builtin(
                &connector_settings,
                Arc::new(SecretStore::fixed(None, Vec::new())),
                None,
                &prometheus::Registry::new(),
            )
            .unwrap(),
            &prometheus::Registry::new(),
        )
        .unwrap()
    });
    let runs: Vec<_> = (0..RUNS)
        .map(|i| env.trigger("acme", "noop", json!({"n": i}), &format!("n{i}")))
        .collect();
    let slow = env.trigger("acme", "too-slow", json!({}), "slow");
    let file_run = env.trigger("acme", "files", json!({"name": "daily", "n": 7}), "f1");
    env.flush();

    let mut events = env.reader(TopicKind::Events);
    let done = events.read_until(Duration::from_secs(120), |rs| {
        rs.iter()
            .filter(|r| matches!(Event::decode(&r.payload), Ok(Event::Run(e)) if e.status.is_terminal()))
            .count()
            > RUNS + 1
    });
    assert!(done, "runs did not finish");
    let all = events.events();
    for (i, run) in runs.iter().enumerate() {
        let end = all
            .iter()
            .find_map(|e| match e {
                Event::Run(r) if r.run == *run && r.status.is_terminal() => Some(r.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(end.status, RunStatus::Succeeded);
        assert_eq!(end.output, Some(json!(i + 1)));
    }
    let timed_out = all.iter().find_map(|e| match e {
        Event::Step(s) if s.run == slow && s.status == StepStatus::TimedOut => Some(s.clone()),
        _ => None,
    });
    let timed_out = timed_out.expect("the slow step timed out");
    assert_eq!(timed_out.error.unwrap().class, ErrorClass::Timeout);
    // Cut off by the worker at 200 ms, not by the orchestrator's backstop 5 s later.
    assert!(
        timed_out.duration_ms.unwrap() < 3_000,
        "{:?}",
        timed_out.duration_ms
    );

    let file_end = all.iter().find_map(|e| match e {
        Event::Run(r) if r.run == file_run && r.status.is_terminal() => Some(r.clone()),
        _ => None,
    });
    assert_eq!(file_end.unwrap().output, Some(json!("n=7")));
    assert_eq!(
        std::fs::read_to_string(file_root.join("acme/reports/daily.txt")).unwrap(),
        "n=7"
    );
    let _ = std::fs::remove_dir_all(&file_root);

    env.rt.block_on(worker.stop()).unwrap();
    orch.stop().unwrap();
}
