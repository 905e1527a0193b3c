//! The tenant registry in the core: a plan's quota over the configured one, a
//! suspended tenant's triggers set aside (those accepted before the suspension start),
//! its cron paused, and a tenant-wide cancel that ends its runs, queued ones included,
//! and no other tenant's.

use super::tests::{PARTS, catalog, feed, one_task, t0};
use super::*;
use aiq_topics::{Plan, RunStatus, SignalAction, TenantRecord, TenantState, TriggerSource};
use chrono::Duration;
use serde_json::json;

fn record(plan: Plan, suspended_at: Option<DateTime<Utc>>) -> TenantRecord {
    TenantRecord {
        id: TenantId::new("acme").unwrap(),
        display_name: "Acme".into(),
        plan,
        state: if suspended_at.is_some() {
            TenantState::Suspended
        } else {
            TenantState::Active
        },
        suspended_at,
        erased_at: None,
        created_at: t0(),
        updated_at: t0(),
        updated_by: "root".into(),
        identity: None,
    }
}

fn core(defs: &[serde_json::Value]) -> (Core, Arc<aiq_tenants::Directory>, i32) {
    let dir = Arc::new(aiq_tenants::Directory::default());
    let mut c = Core::new(
        Arc::new(OrchestratorSettings::default()),
        catalog(defs),
        PARTS,
    )
    .with_tenants(Arc::clone(&dir));
    let p = partition_for_key(b"acme", PARTS as u32) as i32;
    c.restore(p, Vec::new());
    (c, dir, p)
}

fn set(dir: &aiq_tenants::Directory, r: &TenantRecord) {
    dir.apply(Some(b"acme"), Some(&r.encode())).unwrap();
}

fn trigger(at: DateTime<Utc>, key: &str) -> Vec<u8> {
    let mut t = TriggerEvent::new(
        TenantId::new("acme").unwrap(),
        aiq_topics::WorkflowId::new("w").unwrap(),
        TriggerSource::Api,
        json!({}),
    );
    t.occurred_at = Some(at);
    t.idempotency_key = Some(key.into());
    t.encode()
}

fn outputs(c: &mut Core) -> (Vec<DeadLetter>, Vec<RunStatus>) {
    let mut letters = Vec::new();
    let mut ends = Vec::new();
    for o in c.take_outputs() {
        match o {
            Output::DeadLetter(d) => letters.push(d),
            Output::Event(Event::Run(r)) if r.status.is_terminal() => ends.push(r.status),
            _ => {}
        }
    }
    (letters, ends)
}

#[test]
fn a_plans_concurrency_replaces_the_configured_one_live() {
    let (mut c, dir, p) = core(&[one_task("w", None)]);
    set(
        &dir,
        &record(
            Plan {
                max_concurrent_runs: Some(1),
                ..Plan::default()
            },
            None,
        ),
    );
    feed(&mut c, InputTopic::Triggers, p, 0, &trigger(t0(), "a"));
    feed(&mut c, InputTopic::Triggers, p, 1, &trigger(t0(), "b"));
    assert_eq!(
        c.load()[&p],
        (1, 1),
        "the second run waits for the plan's one slot"
    );
    set(
        &dir,
        &record(
            Plan {
                max_concurrent_runs: Some(5),
                ..Plan::default()
            },
            None,
        ),
    );
    feed(&mut c, InputTopic::Triggers, p, 2, &trigger(t0(), "c"));
    assert_eq!(c.load()[&p], (2, 1), "a raised plan admits the next one");
}

#[test]
fn a_suspended_tenants_new_triggers_are_set_aside_and_earlier_ones_start() {
    let (mut c, dir, p) = core(&[one_task("w", None)]);
    let since = t0() + Duration::seconds(10);
    set(&dir, &record(Plan::default(), Some(since)));
    feed(
        &mut c,
        InputTopic::Triggers,
        p,
        0,
        &trigger(since - Duration::seconds(1), "before"),
    );
    feed(&mut c, InputTopic::Triggers, p, 1, &trigger(since, "after"));
    let (letters, _) = outputs(&mut c);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].kind, DeadLetterKind::TenantSuspended);
    assert_eq!(letters[0].offset, 1);
    assert!(
        letters[0].reason.contains("suspended"),
        "{}",
        letters[0].reason
    );
    assert_eq!(c.load()[&p], (1, 0));
}

#[test]
fn a_suspended_tenants_cron_pauses_and_resumes() {
    let cron = json!({"id": "s", "triggers": {"cron": [{"schedule": "*/10 * * * * *"}]},
                      "steps": [{"id": "t", "task": {"connector": "noop"}}]});
    let (mut c, dir, _) = core(&[cron]);
    let fired = |c: &mut Core| {
        c.take_outputs()
            .into_iter()
            .filter(|o| matches!(o, Output::Trigger { .. }))
            .count()
    };
    c.fire_cron(t0() + Duration::seconds(10));
    assert_eq!(fired(&mut c), 1);
    set(
        &dir,
        &record(Plan::default(), Some(t0() + Duration::seconds(11))),
    );
    c.fire_cron(t0() + Duration::seconds(20));
    c.fire_cron(t0() + Duration::seconds(30));
    assert_eq!(fired(&mut c), 0, "paused while suspended");
    set(&dir, &record(Plan::default(), None));
    c.fire_cron(t0() + Duration::seconds(40));
    assert!(fired(&mut c) >= 1, "resumed");
}

#[test]
fn a_tenant_wide_cancel_ends_its_running_and_queued_runs_only() {
    let (mut c, dir, p) = core(&[one_task("w", None)]);
    set(
        &dir,
        &record(
            Plan {
                max_concurrent_runs: Some(2),
                ..Plan::default()
            },
            None,
        ),
    );
    for (i, key) in ["a", "b", "c", "d"].iter().enumerate() {
        feed(
            &mut c,
            InputTopic::Triggers,
            p,
            i as i64,
            &trigger(t0(), key),
        );
    }
    assert_eq!(c.load()[&p], (2, 2));
    outputs(&mut c);
    // Another tenant's run in the same partition must not be touched: find a tenant
    // that maps to it.
    let other = (0..1000)
        .map(|i| format!("t{i}"))
        .find(|t| partition_for_key(t.as_bytes(), PARTS as u32) as i32 == p)
        .unwrap();
    let other_catalog_record = aiq_topics::DefinitionRecord {
        tenant: TenantId::new(&other).unwrap(),
        workflow: aiq_topics::WorkflowId::new("w").unwrap(),
        version: 1,
        content_hash: "h".into(),
        created_at: t0(),
        definition: one_task("w", None),
    };
    c.catalog.apply(other_catalog_record).unwrap();
    let t = TriggerEvent::new(
        TenantId::new(&other).unwrap(),
        aiq_topics::WorkflowId::new("w").unwrap(),
        TriggerSource::Api,
        json!({}),
    );
    let rec = Record {
        topic: InputTopic::Triggers,
        partition: p,
        offset: 10,
        key: Some(other.as_bytes()),
        payload: Some(&t.encode()),
    };
    c.handle(rec, t0(), true).unwrap();
    assert_eq!(c.load()[&p], (3, 2));
    outputs(&mut c);

    let cancel = aiq_topics::SignalEvent {
        tenant: TenantId::new("acme").unwrap(),
        run: RunId::random(),
        action: SignalAction::CancelTenant {
            reason: "tenant suspended by root".into(),
        },
    };
    feed(&mut c, InputTopic::Signals, p, 0, &cancel.encode());
    let (letters, ends) = outputs(&mut c);
    assert!(letters.is_empty(), "{letters:?}");
    assert_eq!(ends.len(), 4, "{ends:?}");
    assert!(ends.iter().all(|s| *s == RunStatus::Cancelled), "{ends:?}");
    assert_eq!(c.load()[&p], (1, 0), "only the other tenant's run is left");
}

#[test]
fn a_runs_start_is_audited_with_its_source_under_an_id_of_the_run() {
    let (mut c, _dir, p) = core(&[one_task("w", None)]);
    feed(&mut c, InputTopic::Triggers, p, 0, &trigger(t0(), "a"));
    let audits: Vec<aiq_topics::AuditEvent> = c
        .take_outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Audit(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(audits.len(), 1, "{audits:?}");
    let a = &audits[0];
    assert_eq!(a.action, aiq_topics::AuditAction::RunStarted);
    assert_eq!(a.actor, "trigger:api");
    assert_eq!(a.detail["source"], "api");
    assert_eq!(a.detail["workflow"], "w");
    let run: RunId = a.subject.parse().unwrap();
    assert_eq!(a.id, uuid::Uuid::new_v5(&run.as_uuid(), b"run_started"));
}
