//! Signals and cancels sent right after their trigger, with a backlog of triggers
//! ahead: the orchestrator consumes them long before it reaches their runs, keeps them,
//! and applies them when the runs appear.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aiq_topics::{Event, RunId, RunStatus, SignalAction, SignalEvent, TopicKind};
use serde_json::json;

use common::{Read, env, tenant};

const BULK: &str = r#"
id: bulk
steps:
  - id: done
    succeed: {}
"#;

const APPROVAL: &str = r#"
id: approval
steps:
  - id: wait
    wait_for_event: { signal: approved, timeout: 1h }
  - id: done
    succeed: { output: "${ steps.wait.output }" }
"#;

const BACKLOG: usize = 20_000;
const SIGNALLED: usize = 1_000;
const CANCELLED: usize = 100;

#[test]
fn signals_and_cancels_sent_before_their_run_is_seen_all_reach_it() {
    let Some(env) = env("orch_early", 4) else {
        return;
    };
    env.register("acme", 1, BULK);
    env.register("acme", 1, APPROVAL);
    let signals = env.topic(TopicKind::Signals);
    let send = |run, action| {
        let s = SignalEvent {
            tenant: tenant("acme"),
            run,
            action,
        };
        env.send_nowait(&signals, None, b"acme", &s.encode());
    };
    let started = Instant::now();
    // All of acme's triggers share one partition: these are ahead of the others.
    for i in 0..BACKLOG {
        env.trigger("acme", "bulk", json!({}), &format!("b{i}"));
    }
    let mut expect: HashMap<RunId, RunStatus> = HashMap::new();
    for i in 0..SIGNALLED + CANCELLED {
        let run = env.trigger("acme", "approval", json!({}), &format!("a{i}"));
        if i < SIGNALLED {
            let payload = json!({ "i": i });
            let name = "approved".into();
            let correlation = None;
            send(
                run,
                SignalAction::Signal {
                    name,
                    correlation,
                    payload,
                },
            );
            expect.insert(run, RunStatus::Succeeded);
        } else {
            let reason = "not needed".into();
            send(run, SignalAction::Cancel { reason });
            expect.insert(run, RunStatus::Cancelled);
        }
    }
    env.flush();
    let produced = started.elapsed();
    let orch = env.orchestrator("early-1");

    let mut events = env.reader(TopicKind::Events);
    let ended = |rs: &[Read]| -> HashMap<RunId, RunStatus> {
        rs.iter()
            .filter_map(|r| match Event::decode(&r.payload) {
                Ok(Event::Run(e)) if e.status.is_terminal() && expect.contains_key(&e.run) => {
                    Some((e.run, e.status))
                }
                _ => None,
            })
            .collect()
    };
    let all_ended = events.read_until(Duration::from_secs(240), |rs| {
        ended(rs).len() == expect.len()
    });
    let drained = started.elapsed();
    let got = ended(&events.records);
    let succeeded = got.values().filter(|s| **s == RunStatus::Succeeded).count();
    let cancelled = got.values().filter(|s| **s == RunStatus::Cancelled).count();
    assert!(
        all_ended,
        "{} of {} runs ended ({succeeded} succeeded, {cancelled} cancelled)",
        got.len(),
        expect.len()
    );
    let wrong: Vec<_> = expect
        .iter()
        .filter(|(run, want)| got.get(run) != Some(want))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} runs ended otherwise: {wrong:?}",
        wrong.len()
    );
    assert_eq!((succeeded, cancelled), (SIGNALLED, CANCELLED));
    // The succeeded runs carry their own signal's payload.
    let outputs = events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Run(e) if e.status == RunStatus::Succeeded && expect.contains_key(&e.run) => {
                e.output
            }
            _ => None,
        })
        .filter(|o| o.get("i").is_some())
        .count();
    assert_eq!(outputs, SIGNALLED);

    // Dead letters are committed with the events of their batch: all are there by now.
    let mut dead = env.reader(TopicKind::DeadLetters);
    dead.read_until(Duration::from_secs(3), |_| false);
    let unknown = dead
        .records
        .iter()
        .filter(|r| r.headers.get("aiq-dlq-kind").map(String::as_str) == Some("unknown_run"))
        .count();
    assert_eq!(unknown, 0, "signals set aside as unknown_run");
    assert!(!orch.is_finished(), "the orchestrator stage ended");
    eprintln!(
        "{BACKLOG} backlog runs, {SIGNALLED} signalled, {CANCELLED} cancelled: produced in \
         {produced:?}, all ended after {drained:?}; {} dead letters",
        dead.records.len()
    );
    orch.shutdown_blocking().unwrap();
}
