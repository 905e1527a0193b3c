//! Redrive: a failed or timed-out run resumes at the top-level step it failed at, with
//! fresh attempts and everything its earlier steps did kept; only the failure it names
//! is resumed, once.
#![allow(clippy::unwrap_used)]

mod common;

use aiq_engine::run::{Command, Input};
use aiq_topics::{ErrorClass, RunStatus};
use chrono::Duration;
use common::Sim;
use serde_json::json;

const FIVE: &str = r#"
id: five
steps:
  - id: s1
    task: { connector: noop }
  - id: s2
    task: { connector: noop }
  - id: s3
    task: { connector: http, args: { n: "${steps.s1.output.n}" }, retry: { max_attempts: 2, initial_backoff: 1s } }
  - id: s4
    task: { connector: noop }
  - id: s5
    task: { connector: noop, args: { from: "${steps.s2.output}" } }
"#;

fn failed_at(sim: &Sim) -> chrono::DateTime<chrono::Utc> {
    sim.state().finished_at.unwrap()
}

#[test]
fn a_run_failed_at_step_three_resumes_there_and_never_reruns_steps_one_and_two() {
    let mut sim = Sim::start(FIVE, json!({}));
    sim.ok("s1", json!({"n": 41}));
    sim.ok("s2", json!("two"));
    sim.err("s3", ErrorClass::Retryable);
    sim.fire_next_timer();
    sim.err("s3", ErrorClass::Retryable);
    assert_eq!(sim.status(), RunStatus::Failed);
    let resume = sim.state().resume.clone().unwrap();
    assert_eq!(resume.at.as_str(), "s3");
    let ended = failed_at(&sim);

    // Another failure's time, or an input to a finished run, changes nothing.
    sim.advance_time(Duration::minutes(5));
    let nothing = sim.apply(Input::Redrive {
        failed_at: ended - Duration::seconds(1),
    });
    assert!(nothing.is_empty());
    assert_eq!(sim.status(), RunStatus::Failed);

    let out = sim.apply(Input::Redrive { failed_at: ended });
    assert_eq!(sim.status(), RunStatus::Running);
    assert_eq!(sim.state().redrives, 1);
    assert!(sim.state().resume.is_none());
    assert!(
        out.iter()
            .any(|c| matches!(c, Command::EmitRun(e) if e.status == RunStatus::Running)),
        "{out:?}"
    );
    // Only s3 is dispatched, as a new attempt, with what s1 returned.
    assert_eq!(sim.open_task_steps(), vec!["s3"]);
    let task = sim.open_tasks[0].clone();
    assert_eq!(task.attempt, 3);
    assert_eq!(task.args, json!({"n": 41}));
    sim.ok("s3", json!(3));
    sim.ok("s4", json!(4));
    assert_eq!(sim.open_tasks[0].args, json!({"from": "two"}));
    sim.ok("s5", json!(5));
    assert_eq!(sim.status(), RunStatus::Succeeded);

    // The same request again: the run is no longer that failure.
    assert!(sim.apply(Input::Redrive { failed_at: ended }).is_empty());
    assert_eq!(sim.status(), RunStatus::Succeeded);
    let dispatched_s1 = sim
        .step_events()
        .iter()
        .filter(|(step, status)| step == "s1" && status == "started")
        .count();
    assert_eq!(dispatched_s1, 1, "s1 ran again: {:?}", sim.step_events());
}

#[test]
fn a_timed_out_run_resumes_where_it_waited_with_a_fresh_timeout() {
    let mut sim = Sim::start(
        r#"
id: slow
timeout: 10s
steps:
  - id: first
    task: { connector: noop }
  - id: nap
    wait: { duration: 1m }
  - id: done
    task: { connector: noop }
"#,
        json!({}),
    );
    sim.ok("first", json!(1));
    sim.advance_time(Duration::seconds(11));
    sim.fire_next_timer();
    assert_eq!(sim.status(), RunStatus::TimedOut);
    assert_eq!(sim.state().resume.as_ref().unwrap().at.as_str(), "nap");
    let ended = failed_at(&sim);
    sim.apply(Input::Redrive { failed_at: ended });
    assert_eq!(sim.status(), RunStatus::Running);
    assert_eq!(sim.timers["run-timeout"], sim.now + Duration::seconds(10));
    assert!(sim.open_tasks.is_empty(), "the wait comes first");
}

#[test]
fn a_succeeded_or_cancelled_run_is_not_redriven() {
    let mut sim = Sim::start(FIVE, json!({}));
    sim.apply(Input::Cancel {
        reason: "no".into(),
    });
    assert_eq!(sim.status(), RunStatus::Cancelled);
    let ended = failed_at(&sim);
    assert!(sim.apply(Input::Redrive { failed_at: ended }).is_empty());
    assert_eq!(sim.status(), RunStatus::Cancelled);
    assert!(sim.state().resume.is_none());
}
