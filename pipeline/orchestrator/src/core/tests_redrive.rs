//! Redrive through the core: a failed run is kept whole on the changelog (so a restore
//! keeps it too), a redrive signal resumes it at its failed step, once, and only for
//! its own tenant.

use super::tests::{PARTS, catalog, feed, restored, t0};
use super::*;
use aiq_topics::{ErrorClass, RunStatus, SignalAction, TaskOutcome, TriggerSource, WorkflowId};
use serde_json::json;

fn two_steps() -> serde_json::Value {
    json!({"id": "two", "steps": [
        {"id": "first", "task": {"connector": "noop"}},
        {"id": "second", "task": {"connector": "http"}},
    ]})
}

fn outputs(c: &mut Core) -> (Vec<TaskMessage>, Vec<Event>, Vec<DeadLetter>) {
    let (mut t, mut e, mut d) = (Vec::new(), Vec::new(), Vec::new());
    for o in c.take_outputs() {
        match o {
            Output::Task(x) => t.push(x),
            Output::Event(x) => e.push(x),
            Output::DeadLetter(x) => d.push(x),
            _ => {}
        }
    }
    (t, e, d)
}

fn answer(c: &mut Core, p: i32, offset: i64, t: &TaskMessage, outcome: TaskOutcome) {
    let r = TaskResult {
        tenant: t.tenant.clone(),
        run: t.run,
        step: t.step.clone(),
        attempt: t.attempt,
        outcome,
        started_at: t0(),
        finished_at: t0(),
    };
    feed(
        c,
        InputTopic::Results,
        p,
        offset,
        &serde_json::to_vec(&r).unwrap(),
    );
}

fn redrive(c: &mut Core, p: i32, offset: i64, tenant: &str, run: RunId) {
    let s = SignalEvent {
        tenant: TenantId::new(tenant).unwrap(),
        run,
        action: SignalAction::Redrive { failed_at: t0() },
    };
    let rec = Record {
        topic: InputTopic::Signals,
        partition: p,
        offset,
        key: Some(tenant.as_bytes()),
        payload: Some(&s.encode()),
    };
    c.handle(rec, t0(), true).unwrap();
}

fn run_status(events: &[Event]) -> Vec<RunStatus> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Run(r) => Some(r.status),
            _ => None,
        })
        .collect()
}

#[test]
fn a_failed_run_survives_a_restore_and_resumes_once_at_its_failed_step() {
    let mut c = Core::new(
        Arc::new(OrchestratorSettings::default()),
        catalog(&[two_steps()]),
        PARTS,
    );
    let p = partition_for_key(b"acme", PARTS as u32) as i32;
    c.restore(p, Vec::new());
    let t = TriggerEvent::new(
        TenantId::new("acme").unwrap(),
        WorkflowId::new("two").unwrap(),
        TriggerSource::Api,
        json!({}),
    );
    feed(&mut c, InputTopic::Triggers, p, 0, &t.encode());
    let (first, _, _) = outputs(&mut c);
    answer(
        &mut c,
        p,
        1,
        &first[0],
        TaskOutcome::Ok { output: json!(1) },
    );
    let (second, _, _) = outputs(&mut c);
    assert_eq!(second[0].step.as_str(), "second");
    let fatal = TaskOutcome::Error {
        class: ErrorClass::Fatal,
        message: "HTTP 500".into(),
    };
    answer(&mut c, p, 2, &second[0], fatal);
    let (_, events, _) = outputs(&mut c);
    assert_eq!(run_status(&events), vec![RunStatus::Failed]);
    assert_eq!(c.load()[&p], (0, 0));
    let run = first[0].run;

    // Kept on the changelog: a new owner has it.
    let mut c = restored(&mut c, p);
    // Another tenant's request for it (one that shares the partition) is refused.
    let other = (0..1000)
        .map(|i| format!("other{i}"))
        .find(|t| partition_for_key(t.as_bytes(), PARTS as u32) as i32 == p)
        .unwrap();
    redrive(&mut c, p, 10, &other, run);
    let (tasks, _, letters) = outputs(&mut c);
    assert!(tasks.is_empty());
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].kind, DeadLetterKind::UnknownRun);

    redrive(&mut c, p, 11, "acme", run);
    let (tasks, events, letters) = outputs(&mut c);
    assert!(letters.is_empty(), "{letters:?}");
    assert_eq!(run_status(&events), vec![RunStatus::Running]);
    assert_eq!(tasks.len(), 1, "only the failed step runs again");
    assert_eq!(tasks[0].step.as_str(), "second");
    assert_eq!(tasks[0].attempt, 2);
    assert_eq!(c.load()[&p], (1, 0));

    // A repeat of the same request while it runs, or after, resumes nothing.
    redrive(&mut c, p, 12, "acme", run);
    let (none, _, letters) = outputs(&mut c);
    assert!(none.is_empty());
    assert_eq!(letters.len(), 1);
    answer(
        &mut c,
        p,
        13,
        &tasks[0],
        TaskOutcome::Ok { output: json!(2) },
    );
    let (_, events, _) = outputs(&mut c);
    assert_eq!(run_status(&events), vec![RunStatus::Succeeded]);
    assert_eq!(c.load()[&p], (0, 0));
    redrive(&mut c, p, 14, "acme", run);
    let (none, _, letters) = outputs(&mut c);
    assert!(none.is_empty());
    assert_eq!(letters.len(), 1);
    // Succeeded: no longer kept, its entry tombstoned.
    let mut c = restored(&mut c, p);
    redrive(&mut c, p, 15, "acme", run);
    assert_eq!(outputs(&mut c).2.len(), 1);
}

#[test]
fn kept_runs_expire_with_their_retention() {
    let settings = OrchestratorSettings {
        redrive_retention_secs: 60,
        ..OrchestratorSettings::default()
    };
    let mut c = Core::new(Arc::new(settings), catalog(&[two_steps()]), PARTS);
    let p = partition_for_key(b"acme", PARTS as u32) as i32;
    c.restore(p, Vec::new());
    let t = TriggerEvent::new(
        TenantId::new("acme").unwrap(),
        WorkflowId::new("two").unwrap(),
        TriggerSource::Api,
        json!({}),
    );
    feed(&mut c, InputTopic::Triggers, p, 0, &t.encode());
    let (first, _, _) = outputs(&mut c);
    let fatal = TaskOutcome::Error {
        class: ErrorClass::Fatal,
        message: "no".into(),
    };
    answer(&mut c, p, 1, &first[0], fatal);
    c.take_changelog();
    assert_eq!(c.parts[&p].redrivable.len(), 1);
    assert_eq!(
        c.expire_finished_up_to(t0() + chrono::Duration::seconds(30), 10),
        0
    );
    assert_eq!(
        c.expire_finished_up_to(t0() + chrono::Duration::seconds(61), 10),
        1
    );
    assert_eq!(c.parts[&p].redrivable.len(), 0);
    let tombstones = c.take_changelog();
    assert!(
        tombstones
            .iter()
            .any(|w| w.value.is_none() && w.key.contains(&first[0].run.to_string()))
    );
}

#[test]
fn erasing_a_failed_run_drops_its_kept_state_and_tombstones_it() {
    let mut c = Core::new(
        Arc::new(OrchestratorSettings::default()),
        catalog(&[two_steps()]),
        PARTS,
    );
    let p = partition_for_key(b"acme", PARTS as u32) as i32;
    c.restore(p, Vec::new());
    let t = TriggerEvent::new(
        TenantId::new("acme").unwrap(),
        WorkflowId::new("two").unwrap(),
        TriggerSource::Api,
        json!({"canary": "x"}),
    );
    feed(&mut c, InputTopic::Triggers, p, 0, &t.encode());
    let (first, _, _) = outputs(&mut c);
    let fatal = TaskOutcome::Error {
        class: ErrorClass::Fatal,
        message: "no".into(),
    };
    answer(&mut c, p, 1, &first[0], fatal);
    c.take_changelog();
    let run = first[0].run;
    assert_eq!(c.parts[&p].redrivable.len(), 1);
    let erase = |tenant: &str| SignalEvent {
        tenant: TenantId::new(tenant).unwrap(),
        run,
        action: SignalAction::Erase,
    };
    let send = |c: &mut Core, offset: i64, s: &SignalEvent| {
        let rec = Record {
            topic: InputTopic::Signals,
            partition: p,
            offset,
            key: Some(s.tenant.as_str().as_bytes()),
            payload: Some(&s.encode()),
        };
        c.handle(rec, t0(), true).unwrap();
    };
    // Another tenant sharing the partition cannot make it forget the run.
    let other = (0..1000)
        .map(|i| format!("other{i}"))
        .find(|t| partition_for_key(t.as_bytes(), PARTS as u32) as i32 == p)
        .unwrap();
    send(&mut c, 2, &erase(&other));
    assert_eq!(c.parts[&p].redrivable.len(), 1);
    assert!(c.take_changelog().is_empty());

    send(&mut c, 3, &erase("acme"));
    assert_eq!(c.parts[&p].redrivable.len(), 0);
    let tombstones = c.take_changelog();
    assert!(
        tombstones
            .iter()
            .any(|w| w.value.is_none() && w.key.contains(&run.to_string())),
        "{tombstones:?}"
    );
    let (_, _, letters) = outputs(&mut c);
    assert!(letters.is_empty(), "{letters:?}");
    // Nothing is left to redrive.
    redrive(&mut c, p, 4, "acme", run);
    let (tasks, _, letters) = outputs(&mut c);
    assert!(tasks.is_empty());
    assert_eq!(letters.len(), 1);
}
