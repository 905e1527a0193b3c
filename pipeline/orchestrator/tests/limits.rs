//! One tenant's oversized data against the size bounds: its run fails `too_large`, the
//! orchestrator stays up, and another tenant's runs go on.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aiq_orchestrator::OrchestratorSettings;
use aiq_topics::{ErrorClass, Event, RunEvent, RunId, RunStatus, TopicKind};
use serde_json::json;

use common::{Read, env};

/// Copies its input into two variables, then waits: the state to keep holds the input
/// several times (variables and step outputs).
const COPY: &str = r#"
id: copy
steps:
  - id: one
    set: { vars: { one: "${ input.blob }" } }
  - id: two
    set: { vars: { two: "${ input.blob }" } }
  - id: pause
    wait: { duration: 1s }
  - id: done
    succeed: {}
"#;

/// Ends with its input twice in the output: a run event twice the input's size.
const ECHO: &str = r#"
id: echo
steps:
  - id: done
    succeed: { output: { a: "${ input.blob }", b: "${ input.blob }" } }
"#;

const QUICK: &str = r#"
id: quick
steps:
  - id: mark
    set: { vars: { seen: true } }
  - id: done
    succeed: { output: "${ vars.seen }" }
"#;

fn terminal(rs: &[Read]) -> HashMap<RunId, RunEvent> {
    rs.iter()
        .filter_map(|r| match Event::decode(&r.payload) {
            Ok(Event::Run(e)) if e.status.is_terminal() => Some((e.run, e)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_run_growing_past_the_state_limit_fails_too_large_while_other_tenants_go_on() {
    let Some(env) = env("orch_limits", 4) else {
        return;
    };
    env.register("noisy", 1, COPY);
    env.register("quiet", 1, QUICK);
    let orch = env.orchestrator("limits-1");
    let started = Instant::now();
    let blob = "x".repeat(600 * 1024);
    let noisy = env.trigger("noisy", "copy", json!({ "blob": blob }), "big");
    let quiet: Vec<RunId> = (0..500)
        .map(|i| env.trigger("quiet", "quick", json!({}), &format!("q{i}")))
        .collect();
    env.flush();

    let mut events = env.reader(TopicKind::Events);
    assert!(
        events.read_until(Duration::from_secs(10), |rs| terminal(rs)
            .contains_key(&noisy)),
        "the noisy run did not end within 10 s of its trigger"
    );
    let ended_after = started.elapsed();
    let e = terminal(&events.records).remove(&noisy).unwrap();
    assert_eq!(e.status, RunStatus::Failed);
    let err = e.error.unwrap();
    assert_eq!(err.class, ErrorClass::TooLarge);
    assert!(
        err.message.starts_with("run state is ")
            && err
                .message
                .ends_with("bytes, over orchestrator.max_state_bytes = 921,600"),
        "{}",
        err.message
    );
    assert!(!orch.is_finished(), "the orchestrator stage ended");

    assert!(
        events.read_until(Duration::from_secs(60), |rs| {
            let t = terminal(rs);
            quiet.iter().all(|r| t.contains_key(r))
        }),
        "not every quiet run ended"
    );
    let t = terminal(&events.records);
    let succeeded = quiet
        .iter()
        .filter(|r| t[r].status == RunStatus::Succeeded)
        .count();
    assert_eq!(succeeded, 500);
    // The one event of the failed run is small; no event carries the blob.
    let largest = events.records.iter().map(|r| r.payload.len()).max();
    assert!(largest.is_some_and(|n| n < 700 * 1024), "{largest:?}");
    assert!(!orch.is_finished(), "the orchestrator stage ended");
    eprintln!(
        "noisy run failed after {ended_after:?}; 500 quiet runs succeeded after {:?}",
        started.elapsed()
    );
    orch.shutdown_blocking().unwrap();
}

#[test]
fn an_output_the_producer_refuses_is_dead_lettered_small_and_the_batch_goes_on() {
    let Some(env) = env("orch_refused", 4) else {
        return;
    };
    env.register("noisy", 1, ECHO);
    env.register("quiet", 1, QUICK);
    // The core's own bounds out of the way: the producer's 1 MB limit is met instead.
    let orch = env.orchestrator_with(OrchestratorSettings {
        max_event_bytes: 8 << 20,
        ..common::settings("refused-1")
    });
    let blob = "y".repeat(600 * 1024);
    let noisy = env.trigger("noisy", "echo", json!({ "blob": blob }), "big");
    let quiet: Vec<RunId> = (0..100)
        .map(|i| env.trigger("quiet", "quick", json!({}), &format!("q{i}")))
        .collect();
    env.flush();

    let mut events = env.reader(TopicKind::Events);
    assert!(
        events.read_until(Duration::from_secs(60), |rs| {
            let t = terminal(rs);
            quiet.iter().all(|r| t.contains_key(r))
        }),
        "the quiet runs did not all end"
    );
    let mut dead = env.reader(TopicKind::DeadLetters);
    let too_large = |rs: &[Read]| {
        rs.iter()
            .filter(|r| r.headers.get("aiq-dlq-kind").map(String::as_str) == Some("too_large"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(dead.read_until(Duration::from_secs(10), |rs| !too_large(rs).is_empty()));
    let d = too_large(&dead.records);
    assert_eq!(d.len(), 1, "one refused output");
    let h = &d[0].headers;
    assert_eq!(h["aiq-dlq-topic"], env.topic(TopicKind::Triggers));
    assert_eq!(h["aiq-dlq-stage"], "orchestrator");
    assert!(h["aiq-dlq-offset"].parse::<i64>().unwrap() >= 0);
    assert!(h["aiq-dlq-reason"].contains(&env.topic(TopicKind::Events)));
    assert!(d[0].payload.is_empty(), "no payload kept");
    let t = terminal(&events.records);
    assert!(
        !t.contains_key(&noisy),
        "its refused event is not on the topic"
    );
    assert_eq!(
        quiet
            .iter()
            .filter(|r| t[r].status == RunStatus::Succeeded)
            .count(),
        100
    );
    assert!(!orch.is_finished(), "the orchestrator stage ended");
    orch.shutdown_blocking().unwrap();
}
