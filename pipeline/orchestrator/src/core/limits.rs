//! Size bounds: a transition whose new state, task or event would pass a limit is not
//! written. Kafka refuses a record past its size limit, the transaction holding it
//! aborts, and the batch would be redone forever — every tenant of the process stuck
//! behind one run. Instead the run ends `failed` with class `too_large`, its other
//! outputs discarded, and the partition goes on.

use aiq_engine::run::Pending;
use aiq_engine::{Command, RunState, Transition};
use aiq_topics::{ErrorClass, Failure, RunEvent, RunId, RunStatus, json_size};
use chrono::{DateTime, Utc};

use crate::changelog::QueuedRun;
use crate::settings::OrchestratorSettings;

/// An internally tagged event adds its `"type":"step",` to the fields' JSON.
const EVENT_TAG_BYTES: usize = 16;

/// The first limit a transition breaks, as the message its run fails with.
pub(super) fn oversize(settings: &OrchestratorSettings, t: &Transition) -> Option<String> {
    if let Some(state) = t.state.as_ref().filter(|s| !s.is_terminal()) {
        // The changelog value adds a format byte and a few bytes of wrapping.
        let size = json_size(state) + 1;
        if size > settings.max_state_bytes {
            return Some(over(
                "run state",
                size,
                "max_state_bytes",
                settings.max_state_bytes,
            ));
        }
    }
    for c in &t.commands {
        let (what, size, name, max) = match c {
            Command::DispatchTask(task) => (
                format!("task for step {}", task.step),
                json_size(task),
                "max_task_bytes",
                settings.max_task_bytes,
            ),
            Command::StartSubWorkflow { input, .. } => (
                "sub-workflow input".to_owned(),
                json_size(input),
                "max_task_bytes",
                settings.max_task_bytes,
            ),
            Command::EmitRun(e) => (
                format!("run event ({})", e.status.as_str()),
                json_size(e) + EVENT_TAG_BYTES,
                "max_event_bytes",
                settings.max_event_bytes,
            ),
            Command::EmitStep(e) => (
                format!("step event for step {}", e.step),
                json_size(e) + EVENT_TAG_BYTES,
                "max_event_bytes",
                settings.max_event_bytes,
            ),
            _ => continue,
        };
        if size > max {
            return Some(over(&what, size, name, max));
        }
    }
    None
}

/// A run waiting for a quota slot is a changelog entry holding its trigger, bounded
/// like a state.
pub(super) fn queued_oversize(settings: &OrchestratorSettings, q: &QueuedRun) -> Option<String> {
    let size = json_size(q) + 1;
    (size > settings.max_state_bytes).then(|| {
        over(
            "queued run",
            size,
            "max_state_bytes",
            settings.max_state_bytes,
        )
    })
}

/// What the run does instead of `t`: it fails with class `too_large`, saying which limit;
/// its sub-workflows in flight are cancelled and its parent told, as for any failure.
/// Nothing of the refused transition is written, and the one event is small (no input,
/// no output).
pub(super) fn fail_too_large(t: Transition, message: String, now: DateTime<Utc>) -> Transition {
    let Some(mut st) = t.state else {
        return Transition {
            state: None,
            commands: Vec::new(),
        };
    };
    let error = Failure {
        class: ErrorClass::TooLarge,
        message,
        step: None,
    };
    let children: Vec<RunId> = st
        .frames
        .values()
        .filter_map(|f| match f.pending {
            Pending::Child { run } => Some(run),
            _ => None,
        })
        .collect();
    strip(&mut st);
    st.status = RunStatus::Failed;
    st.finished_at = Some(now);
    st.error = Some(error.clone());
    let mut commands: Vec<Command> = children
        .into_iter()
        .map(|child_run| Command::CancelSubWorkflow { child_run })
        .collect();
    commands.push(Command::EmitRun(RunEvent {
        tenant: st.tenant.clone(),
        run: st.run,
        workflow: st.workflow.clone(),
        version: st.version,
        status: RunStatus::Failed,
        at: now,
        input: None,
        output: None,
        error: Some(error.clone()),
        started_at: Some(st.started_at),
        source: None,
        scheduled_at: None,
    }));
    commands.push(Command::CompleteRun {
        status: RunStatus::Failed,
        output: None,
        error: Some(error),
    });
    Transition {
        state: Some(st),
        commands,
    }
}

/// A finished run keeps only its short record; dropping the bulk here keeps the
/// oversized data from living on in memory until the transition is applied.
fn strip(st: &mut RunState) {
    st.input = serde_json::Value::Null;
    st.vars.clear();
    st.frames.clear();
    st.timers.clear();
    st.signals.clear();
    st.output = None;
}

fn over(what: &str, size: usize, name: &str, max: usize) -> String {
    format!(
        "{what} is {} bytes, over orchestrator.{name} = {}",
        thousands(size),
        thousands(max)
    )
}

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(921_600), "921,600");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
