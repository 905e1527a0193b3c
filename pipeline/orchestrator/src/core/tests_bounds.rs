//! Unit tests of the size bounds and of early signals, driven with records and a fixed
//! clock.

use super::*;
use crate::settings::{TenantOverrides, TenantQuota};
use aiq_topics::{
    DefinitionRecord, ErrorClass, RunStatus, SignalAction, TriggerSource, WorkflowId,
};
use chrono::Duration;
use serde_json::{Value, json};

use super::tests::{PARTS, restored, t0};

/// `set` steps that copy the input twice, then a wait for a signal.
fn copier() -> Value {
    json!({"id": "copy", "steps": [
        {"id": "a", "set": {"vars": {"one": "${ input.blob }"}}},
        {"id": "b", "set": {"vars": {"two": "${ input.blob }"}}},
        {"id": "wait", "wait_for_event": {"signal": "go"}},
        {"id": "done", "succeed": {}}]})
}

fn waiter() -> Value {
    json!({"id": "wait", "steps": [
        {"id": "wait", "wait_for_event": {"signal": "go"}},
        {"id": "done", "succeed": {"output": "${ steps.wait.output }"}}]})
}

fn core(settings: OrchestratorSettings) -> (Core, i32) {
    let c = Catalog::default();
    for d in [copier(), waiter()] {
        c.apply(DefinitionRecord {
            tenant: TenantId::new("acme").unwrap(),
            workflow: WorkflowId::new(d["id"].as_str().unwrap()).unwrap(),
            version: 1,
            content_hash: "h".into(),
            created_at: t0(),
            definition: d,
        })
        .unwrap();
    }
    let mut core = Core::new(Arc::new(settings), Arc::new(c), PARTS);
    let p = partition_for_key(b"acme", PARTS as u32) as i32;
    core.restore(p, Vec::new());
    (core, p)
}

fn limited(state: usize, event: usize) -> OrchestratorSettings {
    OrchestratorSettings {
        max_state_bytes: state,
        max_event_bytes: event,
        ..OrchestratorSettings::default()
    }
}

fn feed(c: &mut Core, topic: InputTopic, p: i32, offset: i64, payload: &[u8], at: DateTime<Utc>) {
    let rec = Record {
        topic,
        partition: p,
        offset,
        key: Some(b"acme"),
        payload: Some(payload),
    };
    c.handle(rec, at, true).unwrap();
}

fn trigger(c: &mut Core, p: i32, offset: i64, workflow: &str, input: Value) -> RunId {
    let t = TriggerEvent::new(
        TenantId::new("acme").unwrap(),
        WorkflowId::new(workflow).unwrap(),
        TriggerSource::Api,
        input,
    );
    let run = t.run_id(p, offset);
    feed(c, InputTopic::Triggers, p, offset, &t.encode(), t0());
    run
}

fn signal(c: &mut Core, p: i32, offset: i64, run: RunId, action: SignalAction, at: DateTime<Utc>) {
    let s = SignalEvent {
        tenant: TenantId::new("acme").unwrap(),
        run,
        action,
    };
    feed(c, InputTopic::Signals, p, offset, &s.encode(), at);
}

fn go(n: u32) -> SignalAction {
    SignalAction::Signal {
        name: "go".into(),
        correlation: None,
        payload: json!({"n": n}),
    }
}

fn ended(out: &[Output], run: RunId) -> Option<&aiq_topics::RunEvent> {
    out.iter().find_map(|o| match o {
        Output::Event(Event::Run(e)) if e.run == run && e.status.is_terminal() => Some(e),
        _ => None,
    })
}

fn dead_letters(out: &[Output]) -> Vec<&DeadLetter> {
    out.iter()
        .filter_map(|o| match o {
            Output::DeadLetter(d) => Some(d),
            _ => None,
        })
        .collect()
}

#[test]
fn a_run_whose_state_passes_the_limit_fails_too_large_with_a_small_event() {
    let (mut c, p) = core(limited(100_000, 1_000_000));
    let blob = "x".repeat(40_000);
    let run = trigger(&mut c, p, 0, "copy", json!({"blob": blob}));
    let out = c.take_outputs();
    let e = ended(&out, run).expect("the run ended");
    assert_eq!(e.status, RunStatus::Failed);
    let err = e.error.as_ref().unwrap();
    assert_eq!(err.class, ErrorClass::TooLarge);
    assert!(
        err.message.starts_with("run state is ")
            && err
                .message
                .ends_with("bytes, over orchestrator.max_state_bytes = 100,000"),
        "{}",
        err.message
    );
    // Nothing of the refused transition is written: one small event, no step events
    // (and the audit record of its start).
    let (audit, rest): (Vec<&Output>, Vec<&Output>) =
        out.iter().partition(|o| matches!(o, Output::Audit(_)));
    assert_eq!(rest.len(), 1, "{out:?}");
    assert_eq!(audit.len(), 1, "{out:?}");
    assert!(Event::Run(e.clone()).encode().len() < 1_000);
    // Its quota slot is free; the changelog holds a tombstone for the run and its
    // finished-run marker, small.
    assert_eq!(c.load()[&p], (0, 0));
    assert!(c.runs_by_tenant().is_empty());
    let writes = c.take_changelog();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(writes.iter().any(|w| w.value.is_none()));
    let marker = writes.iter().find(|w| w.key.starts_with("~/finished/"));
    assert!(
        marker
            .and_then(|w| w.value.as_ref())
            .is_some_and(|v| v.len() < 300)
    );
}

#[test]
fn a_run_under_the_limit_is_untouched() {
    let (mut c, p) = core(limited(100_000, 1_000_000));
    let run = trigger(&mut c, p, 0, "copy", json!({"blob": "x".repeat(10_000)}));
    let out = c.take_outputs();
    assert!(ended(&out, run).is_none(), "{out:?}");
    assert!(c.run_state(&run).is_some_and(|s| s.vars.len() == 2));
}

#[test]
fn an_event_over_its_limit_fails_the_run_and_frees_the_slot_for_the_next() {
    // The run event of a start carries the input: 20 KB against a 10 KB event limit.
    let mut s = limited(1_000_000, 10_000);
    s.tenants.insert(
        TenantId::new("acme").unwrap(),
        TenantOverrides {
            quota: TenantQuota {
                max_concurrent_runs: 1,
                max_inflight_tasks: 10,
                max_queued_runs: 100_000,
            },
            notify: None,
        },
    );
    let (mut c, p) = core(s);
    let big = trigger(&mut c, p, 0, "wait", json!({"blob": "y".repeat(20_000)}));
    let out = c.take_outputs();
    let e = ended(&out, big).unwrap();
    assert_eq!(e.error.as_ref().unwrap().class, ErrorClass::TooLarge);
    assert!(
        e.error
            .as_ref()
            .unwrap()
            .message
            .contains("over orchestrator.max_event_bytes = 10,000"),
        "{e:?}"
    );
    // The slot it held goes to the next run at once.
    let small = trigger(&mut c, p, 1, "wait", json!({}));
    assert!(c.run_state(&small).is_some());
    assert_eq!(c.load()[&p], (1, 0));
}

#[test]
fn a_queued_run_too_large_to_keep_fails_instead_of_waiting() {
    let mut s = limited(5_000, 1_000_000);
    s.tenants.insert(
        TenantId::new("acme").unwrap(),
        TenantOverrides {
            quota: TenantQuota {
                max_concurrent_runs: 1,
                max_inflight_tasks: 10,
                max_queued_runs: 100_000,
            },
            notify: None,
        },
    );
    let (mut c, p) = core(s);
    trigger(&mut c, p, 0, "wait", json!({}));
    let _ = c.take_outputs();
    let big = trigger(&mut c, p, 1, "wait", json!({"blob": "z".repeat(6_000)}));
    let out = c.take_outputs();
    let e = ended(&out, big).unwrap();
    assert_eq!(e.status, RunStatus::Failed);
    assert_eq!(e.error.as_ref().unwrap().class, ErrorClass::TooLarge);
    assert_eq!(c.load()[&p], (1, 0), "nothing queued");
}

#[test]
fn a_signal_before_its_trigger_is_kept_survives_a_restore_and_reaches_the_run() {
    let (mut c, p) = core(OrchestratorSettings::default());
    // The run id the trigger at offset 5 will have.
    let t = TriggerEvent::new(
        TenantId::new("acme").unwrap(),
        WorkflowId::new("wait").unwrap(),
        TriggerSource::Api,
        json!({}),
    );
    let run = t.run_id(p, 5);
    signal(&mut c, p, 0, run, go(1), t0());
    signal(&mut c, p, 1, run, go(2), t0());
    assert!(c.take_outputs().is_empty(), "kept, not dead-lettered");
    assert_eq!(c.early_signals(), 2);
    let mut c = restored(&mut c, p);
    assert_eq!(c.early_signals(), 2);
    feed(&mut c, InputTopic::Triggers, p, 5, &t.encode(), t0());
    let out = c.take_outputs();
    let e = ended(&out, run).expect("the first signal ended the run");
    assert_eq!(e.status, RunStatus::Succeeded);
    assert_eq!(e.output, Some(json!({"n": 1})), "in arrival order");
    // The second reached a run that had ended: what a late signal is.
    let dl = dead_letters(&out);
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].kind, DeadLetterKind::UnknownRun);
    assert_eq!((dl[0].topic, dl[0].offset), (InputTopic::Signals, 1));
    assert_eq!(c.early_signals(), 0);
    // Their changelog entries are gone.
    let again = restored(&mut c, p);
    assert_eq!(again.early_signals(), 0);
}

#[test]
fn an_early_cancel_ends_a_queued_run_and_a_signal_waits_for_it_to_start() {
    let mut s = OrchestratorSettings::default();
    s.tenants.insert(
        TenantId::new("acme").unwrap(),
        TenantOverrides {
            quota: TenantQuota {
                max_concurrent_runs: 1,
                max_inflight_tasks: 10,
                max_queued_runs: 100_000,
            },
            notify: None,
        },
    );
    let (mut c, p) = core(s);
    let first = trigger(&mut c, p, 0, "wait", json!({}));
    let ids: Vec<(RunId, TriggerEvent)> = (1..=2)
        .map(|o| {
            let t = TriggerEvent::new(
                TenantId::new("acme").unwrap(),
                WorkflowId::new("wait").unwrap(),
                TriggerSource::Api,
                json!({}),
            );
            (t.run_id(p, o), t)
        })
        .collect();
    let (cancelled, signalled) = (ids[0].0, ids[1].0);
    let cancel = SignalAction::Cancel {
        reason: "no".into(),
    };
    signal(&mut c, p, 10, cancelled, cancel, t0());
    signal(&mut c, p, 11, signalled, go(7), t0());
    for (o, (_, t)) in ids.iter().enumerate() {
        feed(
            &mut c,
            InputTopic::Triggers,
            p,
            o as i64 + 1,
            &t.encode(),
            t0(),
        );
    }
    let out = c.take_outputs();
    assert_eq!(
        ended(&out, cancelled).map(|e| e.status),
        Some(RunStatus::Cancelled)
    );
    assert!(ended(&out, signalled).is_none(), "queued behind `first`");
    assert!(dead_letters(&out).is_empty());
    // `first` ends; `signalled` starts and takes its kept signal.
    signal(&mut c, p, 12, first, go(0), t0());
    let out = c.take_outputs();
    let e = ended(&out, signalled).expect("started and signalled");
    assert_eq!(e.output, Some(json!({"n": 7})));
    assert!(dead_letters(&out).is_empty());
}

#[test]
fn early_signals_are_bounded_per_tenant_and_in_age() {
    let s = OrchestratorSettings {
        max_early_signals_per_tenant: 2,
        early_signal_ttl_secs: 60,
        ..OrchestratorSettings::default()
    };
    let (mut c, p) = core(s);
    let runs: Vec<RunId> = (0..3)
        .map(|i| {
            RunId::from_idempotency_key(
                &TenantId::new("acme").unwrap(),
                &WorkflowId::new("wait").unwrap(),
                &format!("never-{i}"),
            )
        })
        .collect();
    for (i, r) in runs.iter().enumerate() {
        signal(
            &mut c,
            p,
            i as i64,
            *r,
            go(0),
            t0() + Duration::seconds(i as i64),
        );
    }
    let out = c.take_outputs();
    let dl = dead_letters(&out);
    assert_eq!(dl.len(), 1, "the oldest goes when a third arrives");
    assert_eq!((dl[0].kind, dl[0].offset), (DeadLetterKind::UnknownRun, 0));
    assert!(
        dl[0].reason.contains("max_early_signals_per_tenant"),
        "{}",
        dl[0].reason
    );
    // Kept for the TTL exactly, then set aside one by one, oldest first.
    assert_eq!(c.expire_early_signals(t0() + Duration::seconds(61)), 0);
    assert_eq!(c.expire_early_signals(t0() + Duration::seconds(62)), 1);
    assert_eq!(c.expire_early_signals(t0() + Duration::seconds(63)), 1);
    let out = c.take_outputs();
    let offsets: Vec<i64> = dead_letters(&out).iter().map(|d| d.offset).collect();
    assert_eq!(offsets, [1, 2]);
    assert!(
        dead_letters(&out)[0]
            .reason
            .contains("early_signal_ttl_secs")
    );
    assert_eq!(c.early_signals(), 0);
}

#[test]
fn a_signal_for_an_ended_run_or_another_tenants_run_is_unknown_at_once() {
    let (mut c, p) = core(OrchestratorSettings::default());
    let run = trigger(&mut c, p, 0, "wait", json!({}));
    signal(&mut c, p, 1, run, go(1), t0());
    assert!(ended(&c.take_outputs(), run).is_some());
    signal(&mut c, p, 2, run, go(2), t0());
    let out = c.take_outputs();
    assert!(
        matches!(dead_letters(&out)[..], [d] if d.kind == DeadLetterKind::UnknownRun
            && d.reason.contains("already ended")),
        "{out:?}"
    );
    // Another tenant in the same partition names acme's live run: nothing is kept.
    let live = trigger(&mut c, p, 3, "wait", json!({}));
    let _ = c.take_outputs();
    let other = (0..10_000)
        .map(|i| format!("t{i}"))
        .find(|t| partition_for_key(t.as_bytes(), PARTS as u32) as i32 == p)
        .unwrap();
    let s = SignalEvent {
        tenant: TenantId::new(&other).unwrap(),
        run: live,
        action: go(9),
    };
    let bytes = s.encode();
    c.handle(
        Record {
            topic: InputTopic::Signals,
            partition: p,
            offset: 4,
            key: Some(other.as_bytes()),
            payload: Some(&bytes),
        },
        t0(),
        true,
    )
    .unwrap();
    let out = c.take_outputs();
    assert!(matches!(dead_letters(&out)[..], [d] if d.kind == DeadLetterKind::UnknownRun));
    assert_eq!(c.early_signals(), 0);
    assert!(c.run_state(&live).is_some_and(|s| !s.is_terminal()));
}

#[test]
fn outputs_name_the_record_they_follow_from() {
    let (mut c, p) = core(OrchestratorSettings::default());
    trigger(&mut c, p, 7, "wait", json!({}));
    let out = c.take_outputs_with_causes();
    assert!(!out.is_empty());
    for (_, cause) in &out {
        assert_eq!(
            *cause,
            Some(Cause {
                topic: InputTopic::Triggers,
                partition: p,
                offset: 7
            })
        );
    }
}
