//! The bounds that keep a partition's memory in check at scale: the tenant's queue of
//! waiting runs, finished-run markers across restores (and from the format before
//! chunks), and which partitions a revocation may keep.

use super::tests::{PARTS, answer, catalog, core_with, feed, one_task, restored, t0, tasks};
use super::*;
use crate::changelog::{Entry, FinishedRun};
use crate::settings::{TenantOverrides, TenantQuota};
use aiq_topics::{QueueState, RunStatus, TriggerSource, WorkflowId};
use serde_json::json;

fn queue_limited(max_queued: u32) -> (Core, i32) {
    let mut s = OrchestratorSettings::default();
    s.tenants.insert(
        TenantId::new("acme").unwrap(),
        TenantOverrides {
            quota: TenantQuota {
                max_concurrent_runs: 1,
                max_inflight_tasks: 10_000,
                max_queued_runs: max_queued,
            },
            notify: None,
        },
    );
    let mut c = Core::new(Arc::new(s), catalog(&[one_task("w", None)]), PARTS);
    let p = partition_for_key(b"acme", PARTS as u32) as i32;
    c.restore(p, Vec::new());
    (c, p)
}

fn trigger_from(c: &mut Core, p: i32, offset: i64, source: TriggerSource) {
    let t = TriggerEvent::new(
        TenantId::new("acme").unwrap(),
        WorkflowId::new("w").unwrap(),
        source,
        json!({}),
    );
    feed(c, InputTopic::Triggers, p, offset, &t.encode());
}

fn first_task(out: &[Output]) -> Option<TaskMessage> {
    out.iter().find_map(|o| match o {
        Output::Task(t) => Some(t.clone()),
        _ => None,
    })
}

fn queue_states(out: &[Output]) -> Vec<QueueState> {
    out.iter()
        .filter_map(|o| match o {
            Output::QueueState(q) => Some(q.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_full_queue_dead_letters_outside_triggers_and_is_announced_full_then_free() {
    let (mut c, p) = queue_limited(40);
    // One runs, forty wait: the fortieth announces the queue full.
    for o in 0..41 {
        trigger_from(&mut c, p, o, TriggerSource::Kafka);
    }
    let out = c.take_outputs();
    let mut next = first_task(&out);
    let states = queue_states(&out);
    assert_eq!(states.len(), 1, "{states:?}");
    assert!(states[0].full && states[0].queued == 40 && states[0].max == 40);
    assert_eq!(c.load()[&p], (1, 40));
    // An outside producer's trigger gets no headroom: dead-lettered, naming the queue.
    trigger_from(&mut c, p, 41, TriggerSource::Kafka);
    let out = c.take_outputs();
    assert!(
        matches!(&out[..], [Output::DeadLetter(d)] if d.kind == DeadLetterKind::QueueFull
            && d.reason.contains("max_queued_runs = 40")),
        "{out:?}"
    );
    // A run ingest accepted may use a tenth more, then it is set aside too.
    for o in 42..46 {
        trigger_from(&mut c, p, o, TriggerSource::Api);
    }
    let out = c.take_outputs();
    let set_aside = out
        .iter()
        .filter(|o| matches!(o, Output::DeadLetter(d) if d.kind == DeadLetterKind::QueueFull))
        .count();
    assert_eq!((c.load()[&p], set_aside), ((1, 44), 0));
    trigger_from(&mut c, p, 46, TriggerSource::Api);
    assert!(
        matches!(&c.take_outputs()[..], [Output::DeadLetter(d)] if d.kind == DeadLetterKind::QueueFull)
    );
    // The queue drains as runs finish: free again once at 95% (38) or below.
    let mut offset = 1_000;
    let mut freed = Vec::new();
    while let Some(t) = next.take() {
        answer(&mut c, p, offset, &t);
        offset += 1;
        let out = c.take_outputs();
        freed.extend(queue_states(&out));
        next = first_task(&out);
        if c.load()[&p].1 <= 30 {
            break;
        }
    }
    assert_eq!(freed.len(), 1, "{freed:?}");
    assert!(!freed[0].full && freed[0].queued == 38);
}

#[test]
fn a_restore_announces_every_non_empty_queue_again() {
    let (mut c, p) = queue_limited(40);
    for o in 0..41 {
        trigger_from(&mut c, p, o, TriggerSource::Kafka);
    }
    let _ = c.take_outputs();
    let mut again = restored(&mut c, p);
    let states = queue_states(&again.take_outputs());
    assert_eq!(states.len(), 1);
    assert!(states[0].full && states[0].queued == 40);
}

#[test]
fn a_duplicate_of_a_finished_run_starts_nothing_after_a_restore() {
    let (mut c, p) = core_with(&[one_task("w", None)], 10, 10_000);
    trigger_from(&mut c, p, 7, TriggerSource::Kafka);
    let t = tasks(&mut c);
    answer(&mut c, p, 100, &t[0]);
    let _ = c.take_outputs();
    assert_eq!(c.finished_count(), 1);
    let mut again = restored(&mut c, p);
    assert_eq!(again.finished_count(), 1);
    trigger_from(&mut again, p, 7, TriggerSource::Kafka);
    assert!(again.take_outputs().is_empty());
    assert_eq!(again.stats().duplicates, 1);
    // A new trigger (another offset, so another run id) still starts.
    trigger_from(&mut again, p, 8, TriggerSource::Kafka);
    assert_eq!(tasks(&mut again).len(), 1);
}

#[test]
fn a_finished_entry_of_the_old_format_becomes_a_marker_chunk_and_a_tombstone() {
    let (c, p) = core_with(&[one_task("w", None)], 10, 10_000);
    let tenant = TenantId::new("acme").unwrap();
    let run = RunId::random();
    let old = FinishedRun {
        tenant: tenant.clone(),
        workflow: WorkflowId::new("w").unwrap(),
        status: RunStatus::Succeeded,
        finished_at: t0(),
    };
    let mut c = c;
    c.restore(
        p,
        vec![(EntryKey::Run(tenant.clone(), run), Entry::Finished(old))],
    );
    assert_eq!(c.finished_count(), 1);
    let writes = c.take_changelog();
    let tombstone = EntryKey::Run(tenant, run).encode();
    assert!(
        writes
            .iter()
            .any(|w| w.key == tombstone && w.value.is_none())
    );
    let chunk = writes
        .iter()
        .find(|w| w.key.starts_with("~/finished/"))
        .and_then(|w| Entry::decode(w.value.as_ref()?).ok());
    assert!(matches!(chunk, Some(Entry::Markers(m)) if m.runs.len() == 1 && m.runs[0].run == run));
}

#[test]
fn only_partitions_without_uncommitted_changes_can_be_kept_across_a_revocation() {
    let (mut c, p) = core_with(&[one_task("w", None)], 10, 10_000);
    let other = (p + 1) % PARTS;
    c.restore(other, Vec::new());
    assert!(c.touched().is_empty());
    trigger_from(&mut c, p, 0, TriggerSource::Kafka);
    assert_eq!(c.touched(), [p].into_iter().collect());
    // Committed: nothing is uncommitted any more.
    let _ = c.take_changelog();
    let _ = c.take_outputs();
    assert!(c.touched().is_empty());
    // Parked and put back, the partition is as it was: its run goes on.
    let parked = c.park(p).unwrap();
    assert!(!c.owns(p));
    c.unpark(p, parked);
    assert_eq!(c.load()[&p], (1, 0));
}
