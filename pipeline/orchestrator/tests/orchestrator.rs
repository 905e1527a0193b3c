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
    # The test's worker never answers: the backstop (no wait for a worker allowed) ends it.
    task: { connector: noop, args: { hang: true }, timeout: 1s, schedule_to_start: 0s }
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
            Event::RunErased(_) => "run erased".to_owned(),
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
    orch.shutdown_blocking().unwrap();
}

const STRICT: &str = r#"
id: strict
input_schema:
  type: object
  required: [n]
  properties:
    n: { type: integer }
steps:
  - id: only
    task: { connector: noop, args: { output: "${ input.n }" } }
"#;

#[test]
fn malformed_triggers_go_to_dead_letters_with_reasons_while_valid_ones_flow() {
    let Some(env) = env("orch_dlq", 4) else {
        return;
    };
    env.register("acme", 1, STRICT);
    let _worker = env.worker();
    let orch = env.orchestrator("dlq-1");
    let triggers = env.topic(TopicKind::Triggers);
    let acme_partition = aiq_topics::partition_for_key(b"acme", 4) as i32;
    let mut valid = Vec::new();
    let mut expected: std::collections::HashMap<&str, usize> = Default::default();
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    for i in 0..1_000 {
        let (kind, key, payload, partition): (&str, &[u8], Vec<u8>, Option<i32>) = match i % 5 {
            0 => {
                // Random bytes.
                let bytes = (0..(i % 64 + 1))
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        (seed & 0xff) as u8
                    })
                    .collect();
                ("undecodable", b"acme", bytes, None)
            }
            1 => (
                "invalid",
                b"acme",
                if i % 2 == 0 {
                    json!({"schema": "aiq.trigger.v9", "tenant": "acme", "workflow": "strict", "source": "kafka"})
                } else {
                    // Valid JSON without a required field: invalid, naming the field.
                    json!({"schema": "aiq.trigger.v1", "tenant": "acme", "workflow": "strict"})
                }
                .to_string()
                .into_bytes(),
                None,
            ),
            2 => (
                "unknown_workflow",
                if i % 2 == 0 { b"ghost".as_slice() } else { b"acme".as_slice() },
                json!({"schema": "aiq.trigger.v1", "tenant": if i % 2 == 0 { "ghost" } else { "acme" },
                       "workflow": "nope", "source": "kafka"})
                    .to_string()
                    .into_bytes(),
                None,
            ),
            3 => (
                "invalid_input",
                b"acme",
                json!({"schema": "aiq.trigger.v1", "tenant": "acme", "workflow": "strict",
                       "source": "kafka", "input": {"n": "not a number"}})
                    .to_string()
                    .into_bytes(),
                None,
            ),
            _ => (
                // A valid trigger in a partition its key does not hash to.
                "invalid",
                b"acme",
                json!({"schema": "aiq.trigger.v1", "tenant": "acme", "workflow": "strict",
                       "source": "kafka", "input": {"n": 1}})
                    .to_string()
                    .into_bytes(),
                Some((acme_partition + 1) % 4),
            ),
        };
        *expected.entry(kind).or_default() += 1;
        env.send_nowait(&triggers, partition, key, &payload);
        if i % 5 == 4 {
            valid.push(env.trigger("acme", "strict", json!({"n": i}), &format!("ok-{i}")));
        }
    }
    env.flush();

    let mut dlq = env.reader(TopicKind::DeadLetters);
    assert!(
        dlq.read_until(Duration::from_secs(120), |rs| rs.len() >= 1_000),
        "only {} dead letters",
        dlq.records.len()
    );
    let mut got: std::collections::HashMap<String, usize> = Default::default();
    for r in &dlq.records {
        let kind = r.headers.get("aiq-dlq-kind").cloned().unwrap();
        let reason = r.headers.get("aiq-dlq-reason").cloned().unwrap();
        assert_eq!(
            r.headers.get("aiq-dlq-stage").map(String::as_str),
            Some("orchestrator")
        );
        assert_eq!(r.headers.get("aiq-dlq-topic"), Some(&triggers));
        assert!(r.headers.contains_key("aiq-dlq-offset"));
        match kind.as_str() {
            "undecodable" => assert!(reason.starts_with("trigger is not valid JSON"), "{reason}"),
            "invalid" => assert!(
                reason.contains("field `schema`")
                    || reason.starts_with("trigger field `source` is missing")
                    || reason.contains("belongs in partition"),
                "{reason}"
            ),
            "unknown_workflow" => {
                assert!(reason.contains("\"nope\" is not registered"), "{reason}")
            }
            "invalid_input" => assert!(reason.contains("trigger field `input`"), "{reason}"),
            other => panic!("unexpected kind {other}: {reason}"),
        }
        *got.entry(kind).or_default() += 1;
    }
    let expected: std::collections::HashMap<String, usize> = expected
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(got, expected);
    assert!(dlq.records.iter().any(|r| {
        r.headers.get("aiq-dlq-kind").map(String::as_str) == Some("invalid")
            && r.headers
                .get("aiq-dlq-reason")
                .is_some_and(|why| why.starts_with("trigger field `source` is missing"))
    }));
    // The original bytes are kept.
    assert!(
        dlq.records
            .iter()
            .any(|r| r.payload.starts_with(br#"{"schema":"aiq.trigger.v9""#))
    );

    let mut events = env.reader(TopicKind::Events);
    let all_done = events.read_until(Duration::from_secs(120), |rs| {
        rs.iter()
            .filter(|r| matches!(Event::decode(&r.payload), Ok(Event::Run(e)) if e.status == RunStatus::Succeeded))
            .count()
            >= valid.len()
    });
    assert!(all_done, "valid runs did not all finish");
    orch.shutdown_blocking().unwrap();
}

const PAUSED: &str = r#"
id: paused
steps:
  - id: a
    task: { connector: noop, args: { output: 1 } }
  - id: rest
    wait: { duration: 2s }
  - id: b
    task: { connector: noop, args: { output: 2 } }
"#;

#[test]
fn when_one_of_two_instances_stops_its_partitions_move_and_every_run_completes_once() {
    const RUNS: usize = 2_000;
    let Some(env) = env("orch_rebalance", 4) else {
        return;
    };
    let tenants: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
    for t in &tenants {
        env.register(t, 1, PAUSED);
    }
    let _worker = env.worker();
    let a = env.orchestrator("rebalance-a");
    let b = env.orchestrator("rebalance-b");
    let mut runs = Vec::new();
    for i in 0..RUNS {
        runs.push(env.trigger(
            &tenants[i % tenants.len()],
            "paused",
            json!({}),
            &format!("r{i}"),
        ));
    }
    env.flush();
    std::thread::sleep(Duration::from_secs(3));
    a.shutdown_blocking().unwrap();

    let mut events = env.reader(TopicKind::Events);
    let done = events.read_until(Duration::from_secs(180), |rs| {
        rs.iter()
            .filter(|r| matches!(Event::decode(&r.payload), Ok(Event::Run(e)) if e.status.is_terminal()))
            .count()
            >= RUNS
    });
    std::thread::sleep(Duration::from_secs(2));
    events.read_until(Duration::from_secs(1), |_| false);
    let mut ended: std::collections::HashMap<_, usize> = Default::default();
    for e in events.events() {
        if let Event::Run(r) = e
            && r.status.is_terminal()
        {
            assert_eq!(r.status, RunStatus::Succeeded);
            *ended.entry(r.run).or_default() += 1;
        }
    }
    assert!(done, "{} of {RUNS} runs ended", ended.len());
    for r in &runs {
        assert_eq!(ended.get(r), Some(&1), "run {r}");
    }
    b.shutdown_blocking().unwrap();
}

const EVERY_SECOND: &str = r#"
id: ticker
triggers:
  cron:
    - schedule: "* * * * * *"
      input: { from: cron }
steps:
  - id: only
    task: { connector: noop, args: { output: tick } }
"#;

#[test]
fn a_per_second_schedule_fires_every_tick_once_across_a_restart() {
    let Some(env) = env("orch_cron", 4) else {
        return;
    };
    let record = env.register("acme", 1, EVERY_SECOND);
    let _worker = env.worker();
    let first = env.orchestrator("cron-1");
    std::thread::sleep(Duration::from_secs(60));
    first.shutdown_blocking().unwrap();
    // Down for a few seconds: those ticks are late but within the misfire grace.
    std::thread::sleep(Duration::from_secs(3));
    let second = env.orchestrator("cron-1");
    std::thread::sleep(Duration::from_secs(57));
    second.shutdown_blocking().unwrap();

    let mut triggers = env.reader(TopicKind::Triggers);
    triggers.read_until(Duration::from_secs(10), |rs| rs.len() >= 118);
    let mut lags_ms = Vec::new();
    let mut ticks: Vec<chrono::DateTime<chrono::Utc>> = triggers
        .records
        .iter()
        .map(|r| {
            (
                r,
                aiq_topics::TriggerEvent::decode(Some(&r.key), &r.payload).unwrap(),
            )
        })
        .filter(|(_, t)| t.source == aiq_topics::TriggerSource::Cron)
        .map(|(r, t)| {
            let tick = t.occurred_at.unwrap();
            lags_ms.push(r.timestamp_ms.unwrap() - tick.timestamp_millis());
            tick
        })
        .collect();
    // Reported, not asserted (timing belongs to benchmarks): how late each tick's
    // trigger was written, downtime included.
    lags_ms.sort_unstable();
    eprintln!(
        "cron lag ms over {} ticks: p50 {} p90 {} max {}",
        lags_ms.len(),
        lags_ms[lags_ms.len() / 2],
        lags_ms[lags_ms.len() * 9 / 10],
        lags_ms[lags_ms.len() - 1]
    );
    let fired = ticks.len();
    ticks.sort();
    ticks.dedup();
    assert_eq!(ticks.len(), fired, "a tick fired twice");
    let first_tick = ticks[0];
    let last_tick = ticks[ticks.len() - 1];
    assert!(first_tick > record.created_at);
    assert!(first_tick - record.created_at <= chrono::Duration::seconds(2));
    let span = (last_tick - first_tick).num_seconds() as usize + 1;
    assert_eq!(
        ticks.len(),
        span,
        "ticks missing between {first_tick} and {last_tick}"
    );
    assert!(span >= 115, "only {span} ticks in two minutes");
}

const APPROVAL: &str = r#"
id: approval
steps:
  - id: wait
    wait_for_event: { signal: approved, timeout: 1h }
  - id: done
    succeed: { output: "${ steps.wait.output }" }
"#;

#[test]
fn signals_reach_waiting_runs_and_cancels_end_them() {
    let Some(env) = env("orch_signals", 4) else {
        return;
    };
    env.register("acme", 1, APPROVAL);
    let orch = env.orchestrator("signals-1");
    let approved = env.trigger("acme", "approval", json!({}), "a1");
    let cancelled = env.trigger("acme", "approval", json!({}), "a2");
    env.flush();
    let signals = env.topic(TopicKind::Signals);
    let send = |run, action| {
        let s = aiq_topics::SignalEvent {
            tenant: common::tenant("acme"),
            run,
            action,
        };
        env.send(&signals, None, b"acme", &s.encode());
    };
    // Sent at once: a signal that arrives before the run waits is kept for it.
    send(
        approved,
        aiq_topics::SignalAction::Signal {
            name: "approved".into(),
            correlation: None,
            payload: json!({"by": "ann"}),
        },
    );
    send(
        cancelled,
        aiq_topics::SignalAction::Cancel {
            reason: "not needed".into(),
        },
    );
    let mut events = env.reader(TopicKind::Events);
    let ended = |rs: &[common::Read], run| {
        rs.iter().find_map(|r| match Event::decode(&r.payload) {
            Ok(Event::Run(e)) if e.run == run && e.status.is_terminal() => Some(e),
            _ => None,
        })
    };
    assert!(events.read_until(Duration::from_secs(60), |rs| {
        ended(rs, approved).is_some() && ended(rs, cancelled).is_some()
    }));
    let a = ended(&events.records, approved).unwrap();
    assert_eq!(a.status, RunStatus::Succeeded);
    assert_eq!(a.output, Some(json!({"by": "ann"})));
    assert_eq!(
        ended(&events.records, cancelled).unwrap().status,
        RunStatus::Cancelled
    );
    orch.shutdown_blocking().unwrap();
}
