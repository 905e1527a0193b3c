//! Notifications from the core: a run that ends in a status its workflow (or, without
//! a `notify` of its own, its tenant) asks to be told of yields one notification, in
//! the transaction that ends it; other endings yield none.

use super::tests::{PARTS, catalog, feed, t0};
use super::*;
use crate::settings::{TenantOverrides, TenantQuota};
use aiq_topics::{ErrorClass, RunStatus, TaskOutcome, TriggerSource, WorkflowId};
use serde_json::json;

fn ends(
    c: &mut Core,
    p: i32,
    workflow: &str,
    offset: i64,
    outcome: TaskOutcome,
) -> Vec<Notification> {
    let t = TriggerEvent::new(
        TenantId::new("acme").unwrap(),
        WorkflowId::new(workflow).unwrap(),
        TriggerSource::Api,
        json!({}),
    );
    feed(c, InputTopic::Triggers, p, offset, &t.encode());
    let task = c
        .take_outputs()
        .into_iter()
        .find_map(|o| match o {
            Output::Task(t) => Some(t),
            _ => None,
        })
        .unwrap();
    let r = TaskResult {
        tenant: task.tenant.clone(),
        run: task.run,
        step: task.step.clone(),
        attempt: task.attempt,
        outcome,
        started_at: t0(),
        finished_at: t0(),
    };
    feed(
        c,
        InputTopic::Results,
        p,
        offset + 1,
        &serde_json::to_vec(&r).unwrap(),
    );
    c.take_outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Notification(n) => Some(n),
            _ => None,
        })
        .collect()
}

use aiq_topics::Notification;

#[test]
fn the_workflows_notify_wins_and_the_tenants_default_covers_the_rest() {
    let mut s = OrchestratorSettings::default();
    let default: aiq_engine::definition::Notify = serde_json::from_value(json!({
        "on": ["failed"], "webhook": {"url": "https://tenant.example/hook"}
    }))
    .unwrap();
    s.tenants.insert(
        TenantId::new("acme").unwrap(),
        TenantOverrides {
            quota: TenantQuota {
                max_concurrent_runs: 100,
                max_inflight_tasks: 100,
                max_queued_runs: 100,
            },
            notify: Some(default),
        },
    );
    let own = json!({"id": "own", "notify": {"on": ["succeeded"], "webhook": {"url": "https://own.example/hook", "secret": "k"}},
                     "steps": [{"id": "t", "task": {"connector": "noop"}}]});
    let plain = json!({"id": "plain", "steps": [{"id": "t", "task": {"connector": "noop"}}]});
    let mut c = Core::new(Arc::new(s), catalog(&[own, plain]), PARTS);
    let p = partition_for_key(b"acme", PARTS as u32) as i32;
    c.restore(p, Vec::new());
    let ok = || TaskOutcome::Ok { output: json!(1) };
    let fatal = || TaskOutcome::Error {
        class: ErrorClass::Fatal,
        message: "no".into(),
    };

    let told = ends(&mut c, p, "own", 0, ok());
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].status, RunStatus::Succeeded);
    assert_eq!(
        told[0].spec.webhook.as_ref().unwrap().url,
        "https://own.example/hook"
    );
    assert!(
        ends(&mut c, p, "own", 10, fatal()).is_empty(),
        "own asks for succeeded only"
    );

    let told = ends(&mut c, p, "plain", 20, fatal());
    assert_eq!(told.len(), 1);
    assert_eq!(
        told[0].spec.webhook.as_ref().unwrap().url,
        "https://tenant.example/hook"
    );
    assert_eq!(told[0].error.as_ref().unwrap().message, "no");
    assert!(ends(&mut c, p, "plain", 30, ok()).is_empty());
}
