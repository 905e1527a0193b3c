//! The core's unit tests: quotas, the fair queue, held tasks, tenant isolation, cron
//! and a missing definition, driven with records and a fixed clock.

use super::*;
use crate::settings::{TenantOverrides, TenantQuota};
use aiq_topics::{DefinitionRecord, SignalAction, TaskOutcome, TriggerSource, WorkflowId};
use chrono::Duration;
use serde_json::json;

pub(super) const PARTS: i32 = 4;

pub(super) fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

pub(super) fn catalog(defs: &[serde_json::Value]) -> Arc<Catalog> {
    let c = Catalog::default();
    for d in defs {
        c.apply(DefinitionRecord {
            tenant: TenantId::new("acme").unwrap(),
            workflow: WorkflowId::new(d["id"].as_str().unwrap()).unwrap(),
            version: 1,
            content_hash: "h".into(),
            created_at: t0(),
            definition: d.clone(),
        })
        .unwrap();
    }
    Arc::new(c)
}

pub(super) fn one_task(id: &str, max: Option<u32>) -> serde_json::Value {
    let mut d = json!({"id": id, "steps": [{"id": "t", "task": {"connector": "noop"}}]});
    if let Some(m) = max {
        d["max_concurrent_runs"] = json!(m);
    }
    d
}

fn core(defs: &[serde_json::Value], tenant_max: u32) -> (Core, i32) {
    core_with(defs, tenant_max, 10_000)
}

pub(super) fn core_with(
    defs: &[serde_json::Value],
    tenant_max: u32,
    tasks_max: u32,
) -> (Core, i32) {
    let mut s = OrchestratorSettings::default();
    s.tenants.insert(
        TenantId::new("acme").unwrap(),
        TenantOverrides {
            quota: TenantQuota {
                max_concurrent_runs: tenant_max,
                max_inflight_tasks: tasks_max,
                max_queued_runs: 100_000,
            },
            notify: None,
        },
    );
    let mut c = Core::new(Arc::new(s), catalog(defs), PARTS);
    let p = partition_for_key(b"acme", PARTS as u32) as i32;
    c.restore(p, Vec::new());
    (c, p)
}

fn trigger(c: &mut Core, p: i32, offset: i64, workflow: &str) {
    let t = TriggerEvent::new(
        TenantId::new("acme").unwrap(),
        WorkflowId::new(workflow).unwrap(),
        TriggerSource::Api,
        json!({}),
    );
    feed(c, InputTopic::Triggers, p, offset, &t.encode());
}

/// Hands one record of acme's to the core, as the runner does.
pub(super) fn feed(c: &mut Core, topic: InputTopic, partition: i32, offset: i64, payload: &[u8]) {
    let rec = Record {
        topic,
        partition,
        offset,
        key: Some(b"acme"),
        payload: Some(payload),
    };
    c.handle(rec, t0(), true).unwrap();
}

pub(super) fn tasks(c: &mut Core) -> Vec<TaskMessage> {
    c.take_outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Task(t) => Some(t),
            _ => None,
        })
        .collect()
}

pub(super) fn answer(c: &mut Core, p: i32, offset: i64, t: &TaskMessage) {
    let r = TaskResult {
        tenant: t.tenant.clone(),
        run: t.run,
        step: t.step.clone(),
        attempt: t.attempt,
        outcome: TaskOutcome::Ok { output: json!(1) },
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

#[test]
fn runs_over_the_tenant_quota_wait_and_start_as_slots_free() {
    let (mut c, p) = core(&[one_task("w", None)], 2);
    for o in 0..5 {
        trigger(&mut c, p, o, "w");
    }
    let started = tasks(&mut c);
    assert_eq!(started.len(), 2);
    assert_eq!(c.load()[&p], (2, 3));
    assert_eq!(c.stats().runs_queued, 3);
    // Finishing one run starts exactly one queued run, the oldest.
    answer(&mut c, p, 100, &started[0]);
    let next = tasks(&mut c);
    assert_eq!(next.len(), 1);
    assert_eq!(c.load()[&p], (2, 2));
    // The queue survives a restore from the changelog.
    let mut again = restored(&mut c, p);
    assert_eq!(again.load()[&p], (2, 2));
    answer(&mut again, p, 101, &started[1]);
    assert_eq!(tasks(&mut again).len(), 1);
    assert_eq!(again.load()[&p], (2, 1));
}

fn three_branches(id: &str, max_tasks: Option<u32>) -> serde_json::Value {
    let branch = |n: &str| json!({"steps": [{"id": n, "task": {"connector": "noop"}}]});
    let mut d = json!({"id": id, "steps": [{"id": "all", "parallel": {"branches": [
        branch("a"), branch("b"), branch("c")]}}]});
    if let Some(m) = max_tasks {
        d["max_inflight_tasks"] = json!(m);
    }
    d
}

/// A core rebuilt from what `c` wrote to the changelog, as a new owner would.
pub(super) fn restored(c: &mut Core, p: i32) -> Core {
    let mut again = Core::new(Arc::clone(&c.settings), Arc::clone(&c.catalog), PARTS);
    let mut r = again.begin_restore(p);
    for w in c.take_changelog() {
        r.apply(w.key.as_bytes(), w.value.as_deref());
    }
    again.finish_restore(r, t0());
    again
}

#[test]
fn tasks_over_the_tenant_in_flight_quota_wait_and_go_out_as_answers_come() {
    // The tenant may have 2 tasks in flight; one run wants 3 at once.
    let (mut c, p) = core_with(&[three_branches("fan", None)], 100, 2);
    trigger(&mut c, p, 0, "fan");
    let first = tasks(&mut c);
    assert_eq!(first.len(), 2);
    assert_eq!(c.task_load()[&p], (2, 1));
    // The waiting task survives a restore, and the counts are rebuilt.
    let mut c = restored(&mut c, p);
    assert_eq!(c.task_load()[&p], (2, 1));
    answer(&mut c, p, 10, &first[0]);
    let third = tasks(&mut c);
    assert_eq!(
        third.len(),
        1,
        "the waiting task goes out when a slot frees"
    );
    assert_eq!(c.task_load()[&p], (2, 0));
    answer(&mut c, p, 11, &first[1]);
    answer(&mut c, p, 12, &third[0]);
    assert_eq!(c.task_load()[&p], (0, 0));
    assert!(c.load()[&p].0 == 0, "the run finished");
}

#[test]
fn a_workflow_in_flight_limit_holds_its_tasks_while_other_workflows_proceed() {
    let (mut c, p) = core(
        &[
            three_branches("one-at-a-time", Some(1)),
            one_task("w", None),
        ],
        100,
    );
    trigger(&mut c, p, 0, "one-at-a-time");
    assert_eq!(tasks(&mut c).len(), 1);
    assert_eq!(c.task_load()[&p], (1, 2));
    trigger(&mut c, p, 1, "w");
    assert_eq!(
        tasks(&mut c).len(),
        1,
        "another workflow's task is not held"
    );
}

#[test]
fn a_freed_slot_passes_over_waiting_tasks_of_a_workflow_at_its_limit() {
    // Two tasks in flight for the tenant; `one` may have one of its own.
    let (mut c, p) = core_with(
        &[three_branches("one", Some(1)), three_branches("fan", None)],
        100,
        2,
    );
    trigger(&mut c, p, 0, "one");
    let one = tasks(&mut c);
    trigger(&mut c, p, 1, "fan");
    let fan = tasks(&mut c);
    assert_eq!((one.len(), fan.len()), (1, 1));
    assert_eq!(c.task_load()[&p], (2, 4));
    // `fan`'s slot goes to `fan`'s next task, past `one`'s two older ones.
    answer(&mut c, p, 10, &fan[0]);
    let next = tasks(&mut c);
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].run, next[0].step.as_str()), (fan[0].run, "b"));
    assert_eq!(c.task_load()[&p], (2, 3));
    // `one`'s slot goes to `one`'s oldest waiting task.
    answer(&mut c, p, 11, &one[0]);
    let next = tasks(&mut c);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].run, one[0].run);
    assert_eq!(next[0].step.as_str(), "b");
    assert_eq!(c.task_load()[&p], (2, 2));
}

#[test]
fn a_workflow_limit_queues_its_runs_while_other_workflows_proceed() {
    let (mut c, p) = core(&[one_task("slow", Some(1)), one_task("fast", None)], 100);
    trigger(&mut c, p, 0, "slow");
    trigger(&mut c, p, 1, "slow");
    trigger(&mut c, p, 2, "fast");
    trigger(&mut c, p, 3, "fast");
    let started: Vec<String> = tasks(&mut c).iter().map(|t| t.run.to_string()).collect();
    assert_eq!(started.len(), 3);
    assert_eq!(c.load()[&p], (3, 1));
}

#[test]
fn freed_slots_go_round_robin_across_workflows() {
    let (mut c, p) = core(&[one_task("a", None), one_task("b", None)], 1);
    trigger(&mut c, p, 0, "a");
    let first = tasks(&mut c);
    for o in 1..=3 {
        trigger(&mut c, p, o, "a");
    }
    for o in 4..=6 {
        trigger(&mut c, p, o, "b");
    }
    let mut order = Vec::new();
    let mut running = first;
    for o in 0..6 {
        answer(&mut c, p, 100 + o, &running[0]);
        running = tasks(&mut c);
        assert_eq!(running.len(), 1);
        let wf = c.run_state(&running[0].run).unwrap().workflow.to_string();
        order.push(wf);
    }
    assert_eq!(order, ["b", "a", "b", "a", "b", "a"]);
}

#[test]
fn a_tenant_cannot_signal_or_answer_another_tenants_run_in_the_same_partition() {
    let (mut c, p) = core(&[one_task("w", None)], 10);
    trigger(&mut c, p, 1, "w");
    let task = tasks(&mut c).remove(0);
    // A tenant key that hashes to the same partition as acme's.
    let other = (0..10_000)
        .map(|i| format!("t{i}"))
        .find(|t| partition_for_key(t.as_bytes(), PARTS as u32) as i32 == p)
        .unwrap();
    let cancel = SignalEvent {
        tenant: TenantId::new(&other).unwrap(),
        run: task.run,
        action: SignalAction::Cancel {
            reason: "mine now".into(),
        },
    };
    let bytes = cancel.encode();
    c.handle(
        Record {
            topic: InputTopic::Signals,
            partition: p,
            offset: 2,
            key: Some(other.as_bytes()),
            payload: Some(&bytes),
        },
        t0(),
        true,
    )
    .unwrap();
    let out = c.take_outputs();
    assert!(
        matches!(&out[..], [Output::DeadLetter(d)] if d.kind == DeadLetterKind::UnknownRun
            && d.reason.contains("is not in flight")),
        "{out:?}"
    );
    assert!(c.run_state(&task.run).is_some_and(|s| !s.is_terminal()));
}

#[test]
fn a_duplicate_trigger_starts_nothing_even_after_the_run_finished() {
    let (mut c, p) = core(&[one_task("w", None)], 10);
    trigger(&mut c, p, 7, "w");
    let t = tasks(&mut c);
    answer(&mut c, p, 100, &t[0]);
    let _ = c.take_outputs();
    trigger(&mut c, p, 7, "w");
    assert!(c.take_outputs().is_empty());
    assert_eq!(c.stats().duplicates, 1);
}

/// A parallel step whose second branch fails at once: fail-fast cancels the first
/// branch's task in the very transition that dispatched it.
fn task_then_fail(id: &str) -> serde_json::Value {
    json!({"id": id, "steps": [{"id": "both", "parallel": {"branches": [
        {"steps": [{"id": "a", "task": {"connector": "noop"}}]},
        {"steps": [{"id": "boom", "fail": {"message": "no"}}]}]}}]})
}

#[test]
fn a_task_cancelled_by_the_transition_that_dispatched_it_takes_no_slot() {
    let (mut c, p) = core(&[task_then_fail("tf")], 100);
    trigger(&mut c, p, 0, "tf");
    // It had a slot, so it went out (results of cancelled branches are no-ops) ...
    let sent = tasks(&mut c);
    assert_eq!(sent.len(), 1);
    assert_eq!(c.load()[&p].0, 0, "the run ended");
    // ... but nothing waits for it: no slot stays taken, as a restore would say.
    assert_eq!(c.task_load()[&p], (0, 0));
    assert_eq!(restored(&mut c, p).task_load()[&p], (0, 0));
    // Its late answer changes nothing.
    answer(&mut c, p, 1, &sent[0]);
    assert_eq!(c.task_load()[&p], (0, 0));
}

#[test]
fn a_task_cancelled_by_the_transition_that_would_hold_it_does_not_wait_in_line() {
    // One task in flight allowed, and taken by `w`.
    let (mut c, p) = core_with(&[one_task("w", None), task_then_fail("tf")], 100, 1);
    trigger(&mut c, p, 0, "w");
    let first = tasks(&mut c);
    assert_eq!(first.len(), 1);
    trigger(&mut c, p, 1, "tf");
    assert!(tasks(&mut c).is_empty());
    assert_eq!(c.task_load()[&p], (1, 0), "nothing waits for a slot");
    assert!(c.take_changelog().iter().all(|w| !w.key.contains("/held/")));
    // The freed slot sends nothing: the cancelled attempt is not in line.
    answer(&mut c, p, 2, &first[0]);
    assert!(tasks(&mut c).is_empty());
    assert_eq!(c.task_load()[&p], (0, 0));
}

fn cron_def(id: &str, overlap: &str, misfire: &str) -> serde_json::Value {
    json!({"id": id, "triggers": {"cron": [{"schedule": "*/10 * * * * *",
           "overlap": overlap, "misfire": misfire}]},
           "steps": [{"id": "t", "task": {"connector": "noop"}}]})
}

/// The cron triggers written since the last call, as seconds after `t0`.
fn cron_triggers(c: &mut Core) -> Vec<(i64, i32, TriggerEvent)> {
    c.take_outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Trigger { partition, trigger } => Some((
                trigger.occurred_at.unwrap().timestamp() - t0().timestamp(),
                partition,
                trigger,
            )),
            _ => None,
        })
        .collect()
}

/// Consumes a fired trigger back, as the runner does, and returns its run's task.
fn consume(c: &mut Core, offset: i64, fired: &(i64, i32, TriggerEvent)) -> Vec<TaskMessage> {
    feed(c, InputTopic::Triggers, fired.1, offset, &fired.2.encode());
    tasks(c)
}

#[test]
fn cron_overlap_skip_counts_a_run_fired_earlier_in_the_same_catch_up_pass() {
    let (mut c, p) = core(&[cron_def("s", "skip", "fire_all")], 100);
    c.fire_cron(t0() + Duration::seconds(10));
    let on_time = cron_triggers(&mut c);
    assert_eq!(on_time.len(), 1);
    let task = consume(&mut c, 0, &on_time[0]);
    answer(&mut c, p, 1, &task[0]);
    // Down for 5 minutes, 30 ticks missed: the first fires, and while its run is
    // active (here: on its way through the triggers topic) the others are dropped.
    let next = c.fire_cron(t0() + Duration::seconds(310));
    let caught_up = cron_triggers(&mut c);
    let ticks: Vec<i64> = caught_up.iter().map(|t| t.0).collect();
    assert_eq!(ticks, [20], "{ticks:?}");
    assert_eq!(next, Some(t0() + Duration::seconds(320)));
    // Still on its way after a restore: the next tick is dropped too.
    let mut c = restored(&mut c, p);
    c.fire_cron(t0() + Duration::seconds(320));
    assert!(cron_triggers(&mut c).is_empty());
    // Consumed and running: still active.
    let task = consume(&mut c, 2, &caught_up[0]);
    c.fire_cron(t0() + Duration::seconds(330));
    assert!(cron_triggers(&mut c).is_empty());
    // Ended: the next tick fires.
    answer(&mut c, p, 3, &task[0]);
    c.fire_cron(t0() + Duration::seconds(340));
    let ticks: Vec<i64> = cron_triggers(&mut c).iter().map(|t| t.0).collect();
    assert_eq!(ticks, [340]);
}

#[test]
fn cron_overlap_queue_holds_missed_ticks_until_the_previous_run_ends() {
    let (mut c, p) = core(&[cron_def("q", "queue", "fire_all")], 100);
    // Down from the start for 5 minutes.
    c.fire_cron(t0() + Duration::seconds(300));
    let fired = cron_triggers(&mut c);
    assert_eq!(fired.iter().map(|t| t.0).collect::<Vec<_>>(), [10]);
    c.fire_cron(t0() + Duration::seconds(301));
    assert!(cron_triggers(&mut c).is_empty(), "held while on its way");
    let task = consume(&mut c, 0, &fired[0]);
    c.fire_cron(t0() + Duration::seconds(302));
    assert!(cron_triggers(&mut c).is_empty(), "held while running");
    answer(&mut c, p, 1, &task[0]);
    // The run ended: the next held tick, and only it, fires.
    c.fire_cron(t0() + Duration::seconds(303));
    let fired = cron_triggers(&mut c);
    assert_eq!(fired.iter().map(|t| t.0).collect::<Vec<_>>(), [20]);
}

#[test]
fn a_dead_lettered_cron_trigger_does_not_block_its_schedule() {
    let mut def = cron_def("bad", "skip", "fire_once");
    def["input_schema"] = json!({"type": "object", "required": ["x"]});
    let (mut c, _) = core(&[def], 100);
    c.fire_cron(t0() + Duration::seconds(10));
    let fired = cron_triggers(&mut c);
    assert_eq!(fired.len(), 1);
    feed(
        &mut c,
        InputTopic::Triggers,
        fired[0].1,
        0,
        &fired[0].2.encode(),
    );
    assert!(
        c.take_outputs()
            .iter()
            .any(|o| matches!(o, Output::DeadLetter(d) if d.kind == DeadLetterKind::InvalidInput))
    );
    c.fire_cron(t0() + Duration::seconds(20));
    assert_eq!(cron_triggers(&mut c).len(), 1, "no run is active");
}

fn without_catalog(c: &mut Core, p: i32) -> Core {
    let mut again = restored(c, p);
    again.catalog = Arc::new(Catalog::default());
    again
}

#[test]
fn an_input_for_a_run_whose_definition_is_missing_is_dead_lettered_and_the_run_kept() {
    let mut def = one_task("w", None);
    def["timeout"] = json!("1h");
    def["steps"][0]["task"]["timeout"] = json!("10s");
    // No wait for a worker allowed: the step's backstop is due 15 s after dispatch.
    def["steps"][0]["task"]["schedule_to_start"] = json!("0s");
    let (mut c, p) = core(&[def], 10);
    trigger(&mut c, p, 0, "w");
    let task = tasks(&mut c).remove(0);
    let mut c = without_catalog(&mut c, p);
    let timers = c.next_timer();
    assert!(timers.is_some());
    let result = TaskResult {
        tenant: task.tenant.clone(),
        run: task.run,
        step: task.step.clone(),
        attempt: task.attempt,
        outcome: TaskOutcome::Ok { output: json!(1) },
        started_at: t0(),
        finished_at: t0(),
    };
    let bytes = serde_json::to_vec(&result).unwrap();
    let rec = Record {
        topic: InputTopic::Results,
        partition: p,
        offset: 5,
        key: Some(b"acme"),
        payload: Some(&bytes),
    };
    // The catalog may be behind: asks for it to be caught up first.
    assert_eq!(c.handle(rec, t0(), false), Err(NeedDefinitions));
    assert!(c.take_outputs().is_empty());
    // Caught up and still missing: set aside, the run and its timers untouched.
    c.handle(rec, t0(), true).unwrap();
    let out = c.take_outputs();
    assert!(
        matches!(&out[..], [Output::DeadLetter(d)] if d.kind == DeadLetterKind::Internal
            && d.offset == 5 && d.payload.as_deref() == Some(&bytes[..])
            && d.reason.contains("\"w\"") && d.reason.contains("version 1")),
        "{out:?}"
    );
    assert_eq!(c.next_timer(), timers);
    assert!(c.run_state(&task.run).is_some_and(|s| !s.is_terminal()));
    // A timer of the run fires: the run keeps its other timers.
    c.fire_timers(t0() + Duration::seconds(20));
    assert_eq!(c.next_timer(), Some(t0() + Duration::hours(1)));
    assert!(c.run_state(&task.run).is_some_and(|s| !s.is_terminal()));
}

#[test]
fn cron_fires_each_tick_once_and_applies_the_misfire_policy() {
    let def = |misfire: &str| {
        json!({"id": format!("c-{misfire}"), "triggers": {"cron": [{"schedule": "*/10 * * * * *", "misfire": misfire}]},
               "steps": [{"id": "t", "task": {"connector": "noop"}}]})
    };
    let (mut c, _) = core(&[def("skip"), def("fire_once"), def("fire_all")], 100);
    let fired = |c: &mut Core| {
        let mut n: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for o in c.take_outputs() {
            if let Output::Trigger { trigger, .. } = o {
                n.entry(trigger.workflow.to_string())
                    .or_default()
                    .push(trigger.occurred_at.unwrap().timestamp() - t0().timestamp());
            }
        }
        n
    };
    // On time: the tick at +10 s fires for every policy, once.
    c.fire_cron(t0() + Duration::seconds(10));
    let on_time = fired(&mut c);
    assert_eq!(on_time.values().map(Vec::len).sum::<usize>(), 3);
    c.fire_cron(t0() + Duration::seconds(11));
    assert!(fired(&mut c).is_empty());
    // Down for 5 minutes: 30 ticks missed, the last ones within the 60 s grace.
    let later = c.fire_cron(t0() + Duration::seconds(310));
    let after = fired(&mut c);
    let late_cut = 310 - 60;
    assert!(after["c-skip"].iter().all(|t| *t >= late_cut), "{after:?}");
    assert_eq!(
        after["c-fire_once"]
            .iter()
            .filter(|t| **t < late_cut)
            .count(),
        1,
        "{after:?}"
    );
    assert_eq!(after["c-fire_all"].len(), 30, "{after:?}");
    assert_eq!(later.unwrap(), t0() + Duration::seconds(320));
}
