//! A workflow's lifecycle in the core: a trigger of a disabled or deleted workflow
//! (an outside producer's, say) goes to the dead letters saying so; a sub-workflow's
//! start goes on, since it belongs to a run in flight.

use super::tests::{PARTS, catalog, feed, one_task, t0};
use super::*;
use aiq_topics::{TriggerSource, WorkflowId, WorkflowState};
use serde_json::json;

fn letters(c: &mut Core) -> Vec<DeadLetter> {
    c.take_outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::DeadLetter(d) => Some(d),
            _ => None,
        })
        .collect()
}

#[test]
fn a_stopped_workflow_starts_no_run_but_a_sub_workflow_of_a_running_one() {
    let cat = catalog(&[one_task("w", None)]);
    let mut state = WorkflowState::new(
        TenantId::new("acme").unwrap(),
        WorkflowId::new("w").unwrap(),
        t0(),
    );
    state.disabled = true;
    cat.apply_state(state.clone());
    let mut c = Core::new(Arc::new(OrchestratorSettings::default()), cat, PARTS);
    let p = partition_for_key(b"acme", PARTS as u32) as i32;
    c.restore(p, Vec::new());
    let trigger = |source| {
        TriggerEvent::new(
            TenantId::new("acme").unwrap(),
            WorkflowId::new("w").unwrap(),
            source,
            json!({}),
        )
    };
    feed(
        &mut c,
        InputTopic::Triggers,
        p,
        0,
        &trigger(TriggerSource::Kafka).encode(),
    );
    let refused = letters(&mut c);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].kind, DeadLetterKind::UnknownWorkflow);
    assert!(
        refused[0].reason.contains("disabled"),
        "{}",
        refused[0].reason
    );
    assert_eq!(c.load()[&p], (0, 0));

    feed(
        &mut c,
        InputTopic::Triggers,
        p,
        1,
        &trigger(TriggerSource::SubWorkflow).encode(),
    );
    assert!(letters(&mut c).is_empty());
    assert_eq!(c.load()[&p], (1, 0));
}
