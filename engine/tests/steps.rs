//! Every step kind and policy, driven through `advance`.

mod common;

use aiq_engine::run::{Command, Input};
use aiq_topics::{ErrorClass, RunStatus};
use chrono::Duration;
use common::Sim;
use serde_json::json;

#[test]
fn a_task_dispatches_with_rendered_args_and_its_output_is_the_runs() {
    let mut sim = Sim::start(
        r#"
id: w
steps:
  - id: fetch
    task:
      connector: http
      args: { url: "https://api.example.com/orders/${ input.order }", method: GET }
      timeout: 10s
"#,
        json!({"order": 7}),
    );
    assert_eq!(sim.status(), RunStatus::Running);
    let task = sim.open_tasks[0].clone();
    assert_eq!(task.connector, "http");
    assert_eq!(
        task.args,
        json!({"url": "https://api.example.com/orders/7", "method": "GET"})
    );
    assert_eq!(task.timeout_ms, 10_000);
    assert_eq!(task.attempt, 1);
    assert_eq!(task.idempotency_key(), format!("{}/fetch/1", task.run));
    // The orchestrator's own backstop timer: the default 10 minutes to be picked up,
    // the timeout, and grace; the task expires at the same instant.
    let due = common::t0() + Duration::seconds(600 + 10 + 5);
    assert_eq!(sim.timers["timeout/fetch/1"], due);
    assert_eq!(task.expires_at, Some(due));
    sim.ok("fetch", json!({"paid": true}));
    assert_eq!(sim.status(), RunStatus::Succeeded);
    assert_eq!(sim.output(), Some(&json!({"paid": true})));
    assert!(sim.timers.is_empty(), "timers left: {:?}", sim.timers);
    assert!(matches!(
        sim.log.last(),
        Some(Command::CompleteRun {
            status: RunStatus::Succeeded,
            ..
        })
    ));
}

/// Waiting for a worker is bounded by `schedule_to_start`, apart from the timeout: the
/// backstop (and the task's expiry) is dispatch + schedule-to-start + timeout + grace,
/// so a task waiting out a worker's restart is delayed, not failed.
#[test]
fn a_tasks_backstop_allows_for_its_schedule_to_start() {
    let mut sim = Sim::start(
        r#"
id: w
steps:
  - id: call
    task: { connector: noop, timeout: 10s, schedule_to_start: 2m }
"#,
        json!({}),
    );
    let due = common::t0() + Duration::seconds(120 + 10 + 5);
    assert_eq!(sim.timers["timeout/call/1"], due);
    assert_eq!(sim.open_tasks[0].expires_at, Some(due));
    // A worker that picked the task up late answers within the window: it counts.
    sim.now = common::t0() + Duration::seconds(125);
    sim.ok("call", json!(1));
    assert_eq!(sim.status(), RunStatus::Succeeded);
}

#[test]
fn retries_back_off_exponentially_and_stop_at_max_attempts() {
    let mut sim = Sim::start(
        r#"
id: w
steps:
  - id: call
    task:
      connector: http
      retry: { max_attempts: 3, initial_backoff: 2s, max_backoff: 5s, multiplier: 3 }
"#,
        json!({}),
    );
    sim.err("call", ErrorClass::Retryable);
    assert_eq!(
        sim.timers.keys().collect::<Vec<_>>(),
        vec!["retry/0/call/1"]
    );
    assert_eq!(
        sim.timers["retry/0/call/1"],
        common::t0() + Duration::seconds(2)
    );
    sim.fire_next_timer();
    assert_eq!(sim.open_tasks[0].attempt, 2);
    sim.err("call", ErrorClass::Timeout);
    // 2s * 3 = 6s, capped at 5s.
    assert_eq!(sim.timers["retry/0/call/2"], sim.now + Duration::seconds(5));
    sim.fire_next_timer();
    assert_eq!(sim.open_tasks[0].attempt, 3);
    sim.err("call", ErrorClass::Retryable);
    assert_eq!(sim.status(), RunStatus::Failed);
    let err = sim.state().error.clone().unwrap();
    assert_eq!(err.class, ErrorClass::Retryable);
    assert_eq!(err.step.unwrap().as_str(), "call");
    let retrying = sim
        .step_events()
        .iter()
        .filter(|(_, s)| s == "retrying")
        .count();
    assert_eq!(retrying, 2);
}

#[test]
fn only_listed_error_classes_are_retried() {
    let mut sim = Sim::start(
        r#"
id: w
steps:
  - id: call
    task:
      connector: http
      retry: { max_attempts: 5, retry_on: [retryable] }
"#,
        json!({}),
    );
    sim.err("call", ErrorClass::Fatal);
    assert_eq!(sim.status(), RunStatus::Failed);
    assert!(sim.timers.is_empty());
}

#[test]
fn catch_routes_by_error_class_and_stores_the_error() {
    let yaml = r#"
id: w
steps:
  - id: call
    task: { connector: http }
    catch:
      - errors: [timeout]
        next: slow
      - errors: [all]
        next: dead_letter
        as: failure
  - id: happy
    end: true
    set: { vars: { path: "happy" } }
  - id: slow
    end: true
    set: { vars: { path: "slow" } }
  - id: dead_letter
    task: { connector: kafka, args: { topic: dlq, message: "${ vars.failure.message }" } }
"#;
    let mut sim = Sim::start(yaml, json!({}));
    sim.err("call", ErrorClass::Timeout);
    assert_eq!(sim.status(), RunStatus::Succeeded);
    assert_eq!(sim.state().vars["path"], json!("slow"));

    let mut sim = Sim::start(yaml, json!({}));
    sim.err("call", ErrorClass::Fatal);
    let dlq = sim.take_task("dead_letter");
    assert_eq!(dlq.args, json!({"topic": "dlq", "message": "call failed"}));
    assert_eq!(sim.state().vars["failure"]["class"], json!("fatal"));
}

#[test]
fn a_task_without_a_result_times_out_at_its_backstop_timer() {
    let mut sim = Sim::start(
        r#"
id: w
steps:
  - id: hang
    task: { connector: http, timeout: 2s }
"#,
        json!({}),
    );
    let task = sim.open_tasks[0].clone();
    assert_eq!(sim.fire_next_timer().as_deref(), Some("timeout/hang/1"));
    assert_eq!(sim.status(), RunStatus::Failed);
    assert!(
        sim.step_events()
            .contains(&("hang".to_owned(), "timed_out".to_owned())),
        "{:?}",
        sim.step_events()
    );
    assert_eq!(
        sim.state().error.as_ref().unwrap().class,
        ErrorClass::Timeout
    );
    // The late result changes nothing.
    let before = sim.state().clone();
    let late = sim.result(&task, aiq_topics::TaskOutcome::Ok { output: json!(1) });
    assert!(sim.apply(late).is_empty());
    assert_eq!(sim.state(), &before);
}

#[test]
fn choice_takes_the_first_true_case_else_the_default() {
    let yaml = r#"
id: w
steps:
  - id: route
    choice:
      cases:
        - when: input.amount > 1000
          next: big
        - when: input.amount > 100
          next: medium
      default: small
  - id: big
    succeed: { output: "big" }
  - id: medium
    succeed: { output: "medium" }
  - id: small
    succeed: { output: "${ 'small ' + string(input.amount) }" }
"#;
    for (amount, expected) in [(5000, "big"), (500, "medium"), (5, "small 5")] {
        let sim = Sim::start(yaml, json!({ "amount": amount }));
        assert_eq!(sim.status(), RunStatus::Succeeded);
        assert_eq!(sim.output(), Some(&json!(expected)), "amount {amount}");
    }
}

#[test]
fn choice_without_a_match_or_default_fails_and_non_booleans_are_errors() {
    let sim = Sim::start(
        r#"
id: w
steps:
  - id: route
    choice: { cases: [ { when: "input.x == 1", next: a } ] }
  - id: a
    succeed: {}
"#,
        json!({"x": 2}),
    );
    assert_eq!(sim.status(), RunStatus::Failed);
    assert!(
        sim.state()
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("no case matched")
    );

    let sim = Sim::start(
        r#"
id: w
steps:
  - id: route
    choice: { cases: [ { when: "input.x", next: a } ] }
  - id: a
    succeed: {}
"#,
        json!({"x": "yes"}),
    );
    assert_eq!(sim.status(), RunStatus::Failed);
    assert!(
        sim.state()
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("not true or false")
    );
}

const PARALLEL: &str = r#"
id: w
steps:
  - id: fan
    parallel:
      join: JOIN
      fail_fast: FAIL_FAST
      branches:
        - steps:
            - id: a
              task: { connector: http }
        - steps:
            - id: b
              task: { connector: sql }
            - id: b2
              set: { vars: { b_done: true } }
  - id: after
    succeed: { output: { fan: "${ steps.fan.output }", a: "${ steps.a.output }" } }
"#;

fn parallel(join: &str, fail_fast: bool) -> String {
    PARALLEL
        .replace("JOIN", join)
        .replace("FAIL_FAST", &fail_fast.to_string())
}

#[test]
fn parallel_all_waits_for_every_branch_and_keeps_branch_order() {
    let mut sim = Sim::start(&parallel("all", true), json!({}));
    assert_eq!(sim.open_task_steps(), vec!["a", "b"]);
    sim.ok("b", json!("B"));
    assert_eq!(sim.status(), RunStatus::Running);
    sim.ok("a", json!("A"));
    assert_eq!(sim.status(), RunStatus::Succeeded);
    assert_eq!(
        sim.output(),
        Some(&json!({"fan": ["A", {"b_done": true}], "a": "A"}))
    );
}

#[test]
fn parallel_first_takes_the_first_branch_and_cancels_the_rest() {
    let mut sim = Sim::start(&parallel("first", true), json!({}));
    let b = sim.take_task("b");
    sim.ok("a", json!("A"));
    assert_eq!(sim.status(), RunStatus::Succeeded);
    assert_eq!(sim.output().unwrap()["fan"], json!("A"));
    assert!(
        sim.step_events()
            .contains(&("b".into(), "cancelled".into()))
    );
    let late = sim.result(&b, aiq_topics::TaskOutcome::Ok { output: json!("B") });
    assert!(
        sim.apply(late).is_empty(),
        "a cancelled branch's result is ignored"
    );
}

#[test]
fn parallel_fail_fast_cancels_siblings_and_without_it_waits_for_them() {
    let mut sim = Sim::start(&parallel("all", true), json!({}));
    sim.err("a", ErrorClass::Fatal);
    assert_eq!(sim.status(), RunStatus::Failed);
    assert!(sim.timers.is_empty());

    let mut sim = Sim::start(&parallel("all", false), json!({}));
    sim.err("a", ErrorClass::Fatal);
    assert_eq!(
        sim.status(),
        RunStatus::Running,
        "the other branch still runs"
    );
    sim.ok("b", json!("B"));
    assert_eq!(sim.status(), RunStatus::Failed);
    assert_eq!(
        sim.state()
            .error
            .as_ref()
            .unwrap()
            .step
            .as_ref()
            .unwrap()
            .as_str(),
        "a"
    );
}

#[test]
fn foreach_respects_its_concurrency_limit_and_collects_outputs_in_order() {
    let mut sim = Sim::start(
        r#"
id: w
steps:
  - id: each
    foreach:
      items: input.orders
      concurrency: 2
      steps:
        - id: ship
          task: { connector: http, args: { order: "${ item.id }", n: "${ index }" } }
"#,
        json!({"orders": [{"id": "o1"}, {"id": "o2"}, {"id": "o3"}, {"id": "o4"}, {"id": "o5"}]}),
    );
    assert_eq!(sim.open_tasks.len(), 2);
    assert_eq!(sim.open_tasks[0].args, json!({"order": "o1", "n": 0}));
    let mut max_open = 0;
    // Answer out of order: the second first.
    let second = sim.open_tasks.remove(1);
    let r = sim.result(
        &second,
        aiq_topics::TaskOutcome::Ok {
            output: json!("r2"),
        },
    );
    sim.apply(r);
    while !sim.open_tasks.is_empty() {
        max_open = max_open.max(sim.open_tasks.len());
        let t = sim.open_tasks.remove(0);
        let order = t.args["order"].as_str().unwrap().to_owned();
        let r = sim.result(
            &t,
            aiq_topics::TaskOutcome::Ok {
                output: json!(format!("r{}", &order[1..])),
            },
        );
        sim.apply(r);
    }
    assert!(max_open <= 2);
    assert_eq!(sim.status(), RunStatus::Succeeded);
    assert_eq!(sim.output(), Some(&json!(["r1", "r2", "r3", "r4", "r5"])));
    // Attempt numbers are unique per step across iterations.
    let mut attempts: Vec<u32> = sim
        .log
        .iter()
        .filter_map(|c| match c {
            Command::DispatchTask(t) => Some(t.attempt),
            _ => None,
        })
        .collect();
    attempts.sort_unstable();
    assert_eq!(attempts, vec![1, 2, 3, 4, 5]);
}

#[test]
fn foreach_over_thousands_of_instant_items_and_over_nothing() {
    let yaml = r#"
id: w
steps:
  - id: each
    foreach:
      items: input.xs
      concurrency: 1
      steps:
        - id: double
          set: { vars: { last: "${ item * 2 }" } }
"#;
    let xs: Vec<i64> = (0..5000).collect();
    let sim = Sim::start(yaml, json!({ "xs": xs }));
    assert_eq!(
        sim.status(),
        RunStatus::Succeeded,
        "{:?}",
        sim.state().error
    );
    assert_eq!(sim.output().unwrap().as_array().unwrap().len(), 5000);
    assert_eq!(sim.state().vars["last"], json!(9998));

    let sim = Sim::start(yaml, json!({ "xs": [] }));
    assert_eq!(sim.output(), Some(&json!([])));

    let sim = Sim::start(yaml, json!({ "xs": "not a list" }));
    assert_eq!(sim.status(), RunStatus::Failed);
}

#[test]
fn wait_for_a_duration_and_until_a_time() {
    let mut sim = Sim::start(
        r#"
id: w
steps:
  - id: pause
    wait: { duration: 10m }
  - id: until
    wait: { until: "input.at" }
  - id: done
    succeed: {}
"#,
        json!({"at": "2026-11-29T12:00:00Z"}),
    );
    assert_eq!(
        sim.timers.values().next(),
        Some(&(common::t0() + Duration::minutes(10)))
    );
    sim.fire_next_timer();
    assert_eq!(sim.status(), RunStatus::Running);
    assert_eq!(
        sim.timers.values().next().unwrap().to_rfc3339(),
        "2026-11-29T12:00:00+00:00"
    );
    sim.fire_next_timer();
    assert_eq!(sim.status(), RunStatus::Succeeded);

    // A time already past does not wait.
    let sim = Sim::start(
        r#"
id: w
steps:
  - id: until
    wait: { until: "input.at" }
"#,
        json!({"at": "2020-01-01T00:00:00Z"}),
    );
    assert_eq!(sim.status(), RunStatus::Succeeded);
}

const APPROVAL: &str = r#"
id: approval
steps:
  - id: ask
    wait_for_event: { signal: approved, correlation: "input.order", timeout: 1h }
    catch:
      - errors: [timeout]
        next: escalate
  - id: ok
    succeed: { output: "${ steps.ask.output }" }
  - id: escalate
    fail: { message: "nobody approved order ${ input.order }" }
"#;

#[test]
fn wait_for_event_takes_the_matching_signal_only() {
    let mut sim = Sim::start(APPROVAL, json!({"order": "o-9"}));
    let wrong = Input::Signal {
        name: "approved".into(),
        correlation: Some("o-1".into()),
        payload: json!("no"),
    };
    sim.apply(wrong);
    assert_eq!(sim.status(), RunStatus::Running);
    let right = Input::Signal {
        name: "approved".into(),
        correlation: Some("o-9".into()),
        payload: json!({"by": "ada"}),
    };
    sim.apply(right);
    assert_eq!(sim.status(), RunStatus::Succeeded);
    assert_eq!(sim.output(), Some(&json!({"by": "ada"})));
    assert!(sim.timers.is_empty());
}

#[test]
fn wait_for_event_times_out_into_its_catch() {
    let mut sim = Sim::start(APPROVAL, json!({"order": "o-9"}));
    sim.fire_next_timer();
    assert_eq!(sim.status(), RunStatus::Failed);
    assert_eq!(
        sim.state().error.as_ref().unwrap().message,
        "nobody approved order o-9"
    );
    let events = sim.step_events();
    assert!(
        events.contains(&("ask".to_owned(), "timed_out".to_owned())),
        "{events:?}"
    );
    assert!(
        events.contains(&("escalate".to_owned(), "failed".to_owned())),
        "{events:?}"
    );
}

#[test]
fn a_signal_that_arrives_before_the_wait_is_kept_for_it() {
    let mut sim = Sim::start(
        r#"
id: w
steps:
  - id: work
    task: { connector: http }
  - id: ask
    wait_for_event: { signal: go }
"#,
        json!({}),
    );
    sim.apply(Input::Signal {
        name: "go".into(),
        correlation: None,
        payload: json!(1),
    });
    sim.ok("work", json!(null));
    assert_eq!(sim.status(), RunStatus::Succeeded);
    assert_eq!(sim.output(), Some(&json!(1)));
}

#[test]
fn sub_workflow_starts_a_child_and_takes_its_result() {
    let mut sim = Sim::start(
        r#"
id: w
steps:
  - id: child
    sub_workflow: { workflow: invoice, version: 2, input: { order: "${ input.order }" } }
"#,
        json!({"order": 5}),
    );
    let started = sim.log.iter().find_map(|c| match c {
        Command::StartSubWorkflow {
            child_run,
            workflow,
            version,
            input,
        } => Some((*child_run, workflow.clone(), *version, input.clone())),
        _ => None,
    });
    let (child_run, workflow, version, input) = started.expect("a child run");
    assert_eq!(
        (workflow.as_str(), version, input),
        ("invoice", Some(2), json!({"order": 5}))
    );
    sim.apply(Input::ChildCompleted {
        child_run: aiq_topics::RunId::random(),
        outcome: aiq_topics::TaskOutcome::Ok { output: json!(0) },
    });
    assert_eq!(
        sim.status(),
        RunStatus::Running,
        "another run's completion is not ours"
    );
    sim.apply(Input::ChildCompleted {
        child_run,
        outcome: aiq_topics::TaskOutcome::Ok {
            output: json!({"total": 9}),
        },
    });
    assert_eq!(sim.output(), Some(&json!({"total": 9})));
}

#[test]
fn set_and_succeed_and_fail() {
    let sim = Sim::start(
        r#"
id: w
steps:
  - id: compute
    set: { vars: { total: "${ input.a + input.b }", label: "sum is ${ input.a + input.b }" } }
  - id: check
    choice:
      cases: [ { when: "vars.total > 10", next: too_big } ]
      default: fine
  - id: fine
    succeed: { output: "${ vars }" }
  - id: too_big
    fail: { message: "total ${ vars.total } is too big", class: fatal }
"#,
        json!({"a": 2, "b": 3}),
    );
    assert_eq!(
        sim.output(),
        Some(&json!({"total": 5, "label": "sum is 5"}))
    );
    let sim = Sim::start(
        r#"
id: w
steps:
  - id: compute
    set: { vars: { total: "${ input.a + input.b }" } }
  - id: check
    choice:
      cases: [ { when: "vars.total > 10", next: too_big } ]
      default: fine
  - id: fine
    succeed: {}
  - id: too_big
    fail: { message: "total ${ vars.total } is too big" }
"#,
        json!({"a": 20, "b": 3}),
    );
    assert_eq!(sim.status(), RunStatus::Failed);
    assert_eq!(
        sim.state().error.as_ref().unwrap().message,
        "total 23 is too big"
    );
}

#[test]
fn cancel_ends_the_run_and_its_timers() {
    let mut sim = Sim::start(
        r#"
id: w
timeout: 1h
steps:
  - id: call
    task: { connector: http }
"#,
        json!({}),
    );
    assert_eq!(sim.timers.len(), 2);
    sim.apply(Input::Cancel {
        reason: "user asked".into(),
    });
    assert_eq!(sim.status(), RunStatus::Cancelled);
    assert!(sim.timers.is_empty());
    assert!(
        sim.step_events()
            .contains(&("call".into(), "cancelled".into()))
    );
    // Terminal states stay terminal.
    let before = sim.state().clone();
    assert!(
        sim.apply(Input::Cancel {
            reason: "again".into()
        })
        .is_empty()
    );
    assert!(sim.fire_next_timer().is_none());
    assert_eq!(sim.state(), &before);
}

#[test]
fn the_run_timeout_ends_a_run_as_timed_out() {
    let mut sim = Sim::start(
        r#"
id: w
timeout: 30m
steps:
  - id: wait
    wait: { duration: 2h }
"#,
        json!({}),
    );
    assert_eq!(sim.fire_next_timer().as_deref(), Some("run-timeout"));
    assert_eq!(sim.status(), RunStatus::TimedOut);
    assert_eq!(
        sim.state().error.as_ref().unwrap().class,
        ErrorClass::Timeout
    );
    assert!(sim.timers.is_empty());
}

#[test]
fn duplicate_and_stale_results_change_nothing() {
    let mut sim = Sim::start(
        r#"
id: w
steps:
  - id: a
    task: { connector: http, retry: { max_attempts: 3 } }
  - id: b
    task: { connector: http }
"#,
        json!({}),
    );
    let first = sim.err("a", ErrorClass::Retryable);
    // The failed attempt's result again (redelivered): ignored.
    let dup = sim.result(
        &first,
        aiq_topics::TaskOutcome::Error {
            class: ErrorClass::Retryable,
            message: "again".into(),
        },
    );
    let before = sim.state().clone();
    assert!(sim.apply(dup).is_empty());
    assert_eq!(sim.state(), &before);
    sim.fire_next_timer();
    // The first attempt's result arriving while the second is in flight: still stale.
    let before = sim.state().clone();
    let stale = sim.result(
        &first,
        aiq_topics::TaskOutcome::Ok {
            output: json!("late"),
        },
    );
    assert!(sim.apply(stale).is_empty());
    assert_eq!(sim.state(), &before);
    let second = sim.ok("a", json!(1));
    let dup = sim.result(&second, aiq_topics::TaskOutcome::Ok { output: json!(1) });
    let before = sim.state().clone();
    assert!(
        sim.apply(dup).is_empty(),
        "a result applied once is not applied again"
    );
    assert_eq!(sim.state(), &before);
    assert_eq!(sim.open_task_steps(), vec!["b"]);
    // A trigger for a run that exists changes nothing.
    let again = Input::Trigger {
        run: sim.state().run,
        tenant: sim.state().tenant.clone(),
        input: json!({}),
    };
    assert!(sim.apply(again).is_empty());
}

#[test]
fn state_round_trips_through_its_versioned_encoding() {
    let sim = Sim::start(APPROVAL, json!({"order": "o-9"}));
    let bytes = sim.state().encode();
    assert_eq!(bytes[0], aiq_engine::run::STATE_FORMAT);
    let back = aiq_engine::RunState::decode(&bytes).unwrap();
    assert_eq!(&back, sim.state());
    let mut wrong = bytes.clone();
    wrong[0] = 99;
    assert_eq!(
        aiq_engine::RunState::decode(&wrong)
            .unwrap_err()
            .to_string(),
        "run state has format 99; this build reads format 1"
    );
}

#[test]
fn the_event_applying_a_task_result_carries_the_workers_duration() {
    use aiq_topics::{StepStatus, TaskOutcome};
    let mut sim = Sim::start(
        r#"
id: w
steps:
  - id: call
    task: { connector: http }
  - id: after
    set: { vars: { x: "${ 1 }" } }
"#,
        json!({}),
    );
    let task = sim.take_task("call");
    let Input::StepResult(mut r) = sim.result(&task, TaskOutcome::Ok { output: json!(1) }) else {
        unreachable!()
    };
    r.started_at = common::t0();
    r.finished_at = common::t0() + Duration::milliseconds(1_250);
    let events: Vec<_> = sim
        .apply(Input::StepResult(r))
        .into_iter()
        .filter_map(|c| match c {
            Command::EmitStep(e) => Some((e.step.to_string(), e.status, e.duration_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        events[0],
        ("call".into(), StepStatus::Succeeded, Some(1_250))
    );
    // Only the event for the result carries it, not the steps it led to.
    assert!(
        events[1..].iter().all(|(_, _, d)| d.is_none()),
        "{events:?}"
    );
}
