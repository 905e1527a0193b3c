//! What goes into a transition and what comes out of it.

use aiq_topics::{
    Failure, RunEvent, RunId, RunStatus, SignalAction, StepEvent, TaskMessage, TaskOutcome,
    TaskResult, TenantId, WorkflowId,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::run::state::RunState;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    /// Starts the run. A second trigger for a run that exists changes nothing.
    Trigger {
        run: RunId,
        tenant: TenantId,
        input: Value,
    },
    /// A worker's result for one task attempt.
    StepResult(TaskResult),
    /// A sub-workflow this run started has ended.
    ChildCompleted {
        child_run: RunId,
        outcome: TaskOutcome,
    },
    /// A timer this run asked for is due.
    TimerFired {
        id: String,
    },
    Signal {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation: Option<String>,
        #[serde(default)]
        payload: Value,
    },
    Cancel {
        reason: String,
    },
    /// Resumes a failed or timed-out run from the step it failed at (see
    /// [`crate::run::state::Resume`]). Applies only to the failure that ended at
    /// `failed_at`, so that a repeated request resumes it once.
    Redrive {
        failed_at: DateTime<Utc>,
    },
}

/// A signal record is the run's input as it stands, whenever it is applied (at once, or
/// kept until its run appears).
impl From<SignalAction> for Input {
    fn from(action: SignalAction) -> Self {
        match action {
            SignalAction::Signal {
                name,
                correlation,
                payload,
            } => Input::Signal {
                name,
                correlation,
                payload,
            },
            // A tenant-wide cancel is the orchestrator's to spread over the runs; for one
            // run it means what a cancel means.
            SignalAction::Cancel { reason } | SignalAction::CancelTenant { reason } => {
                Input::Cancel { reason }
            }
            SignalAction::Redrive { failed_at } => Input::Redrive { failed_at },
            // Only an ended run's payloads are erased, and the orchestrator applies that
            // itself (it drops the state kept for redrive). Should a run have come back
            // to life in between, its input is gone: it cannot go on.
            SignalAction::Erase => Input::Cancel {
                reason: "its payloads were erased".to_owned(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    DispatchTask(TaskMessage),
    StartTimer {
        id: String,
        due: DateTime<Utc>,
    },
    CancelTimer {
        id: String,
    },
    EmitRun(RunEvent),
    EmitStep(StepEvent),
    StartSubWorkflow {
        child_run: RunId,
        workflow: WorkflowId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
        input: Value,
    },
    CancelSubWorkflow {
        child_run: RunId,
    },
    CompleteRun {
        status: RunStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<Failure>,
    },
}

/// The outcome of one input: the new state (none for an input about no run) and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub state: Option<RunState>,
    pub commands: Vec<Command>,
}
