//! A second instance started with the same instance id fences the first: the first
//! stops with an error that says so (it does not replace its producer and fence the
//! newer one back), and the newer one carries on.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use aiq_orchestrator::OrchestratorError;
use aiq_topics::{Event, TopicKind};
use common::{Read, env};
use serde_json::json;

const QUICK: &str = r#"
id: quick
steps:
  - id: done
    succeed: {}
"#;

fn ended(rs: &[Read], key: &str) -> bool {
    rs.iter().any(|r| {
        matches!(Event::decode(&r.payload), Ok(Event::Run(e))
            if e.status.is_terminal() && e.run.to_string() == key)
    })
}

#[test]
fn an_instance_fenced_by_a_newer_one_with_its_id_stops_with_a_clear_error() {
    let Some(env) = env("orch_fenced", 2) else {
        return;
    };
    env.register("acme", 1, QUICK);
    let first = env.orchestrator("twin");
    let run = env.trigger("acme", "quick", json!({}), "before");
    env.flush();
    let mut events = env.reader(TopicKind::Events);
    let key = run.to_string();
    assert!(events.read_until(Duration::from_secs(60), |rs| ended(rs, &key)));

    let second = env.orchestrator("twin");
    // Inputs keep coming, so the first instance meets its fencing in a transaction
    // call or through its consumer, whichever comes first.
    let mut last = run;
    let outcome = (0..600).find_map(|i| {
        last = env.trigger("acme", "quick", json!({}), &format!("after-{i}"));
        env.flush();
        first.wait_blocking(Some(Duration::from_millis(100)))
    });
    let failure = outcome
        .expect("the first instance kept running next to a newer one with its id")
        .expect_err("the first instance stopped without an error");
    assert!(
        matches!(
            failure.downcast_ref::<OrchestratorError>(),
            Some(OrchestratorError::Fenced { .. })
        ),
        "{failure}"
    );
    assert!(failure.to_string().contains("\"twin\""), "{failure}");

    // The newer instance handles what came after.
    let key = last.to_string();
    assert!(events.read_until(Duration::from_secs(60), |rs| ended(rs, &key)));
    assert!(!second.is_finished());
    second.shutdown_blocking().unwrap();
}
