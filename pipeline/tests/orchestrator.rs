//! The orchestrator against a real Kafka, with tasks answered by a test worker.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use aiq_topics::{Event, RunStatus, TopicKind};
use serde_json::json;

use common::env;

const FLOW: &str = r#"
id: flow
steps:
  - id: route
    choice:
      cases:
        - when: input.kind == 'fanout'
          next: both
      default: single
  - id: both
    parallel:
      branches:
        - steps:
            - id: left
              task: { connector: noop, args: { output: "L" } }
        - steps:
            - id: flaky
              task:
                connector: noop
                args: { fail_first: 2 }
                retry: { max_attempts: 3, initial_backoff: 200ms, multiplier: 2, jitter: 0 }
  - id: slow
    task: { connector: noop, args: { hang: true }, timeout: 1s }
    catch:
      - errors: [timeout]
        next: done
  - id: single
    task: { connector: noop, args: { output: "S" } }
  - id: done
    succeed: { output: { both: "${ steps.both.output }" } }
"#;

fn summary(events: &[Event], run: aiq_topics::RunId) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.run() == run)
        .map(|e| match e {
            Event::Run(r) => format!("run {}", r.status.as_str()),
            Event::Step(s) => format!(
                "{} {}#{} {}",
                s.kind,
                s.step,
                s.attempt,
                serde_json::to_value(s.status).unwrap().as_str().unwrap()
            ),
        })
        .collect()
}

#[test]
fn a_run_with_choice_parallel_retries_and_a_step_timeout_completes_with_the_expected_events() {
    let Some(env) = env("orch_flow", 4) else {
        return;
    };
    env.register("acme", 1, FLOW);
    let _worker = env.worker();
    let orch = env.orchestrator("flow-1");
    let run = env.trigger("acme", "flow", json!({"kind": "fanout"}), "r1");
    env.flush();

    let mut events = env.reader(TopicKind::Events);
    let done = events.read_until(Duration::from_secs(60), |rs| {
        rs.iter().any(|r| {
            matches!(Event::decode(&r.payload), Ok(Event::Run(e)) if e.run == run && e.status.is_terminal())
        })
    });
    let got = summary(&events.events(), run);
    assert!(done, "run did not finish: {got:#?}");
    let end = events.events().into_iter().find_map(|e| match e {
        Event::Run(r) if r.run == run && r.status.is_terminal() => Some(r),
        _ => None,
    });
    let end = end.unwrap();
    assert_eq!(end.status, RunStatus::Succeeded, "{got:#?}");
    assert_eq!(end.output.unwrap(), json!({"both": ["L", {"attempt": 3}]}));
    insta::assert_snapshot!(got.join("\n"));
    orch.stop().unwrap();
}
