//! Run and step events: what the orchestrator reports about every run, on the events
//! topic (key = tenant). The sink stores them; subscribers may follow them. Field names
//! are part of the contract: add fields, never rename them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{RunId, StepId, TenantId, WorkflowId};
use crate::task::ErrorClass;
use crate::trigger::TriggerSource;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::TimedOut => "timed_out",
        }
    }
}

/// Why something failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub class: ErrorClass,
    pub message: String,
    /// The step where it happened, if a step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    pub tenant: TenantId,
    pub run: RunId,
    pub workflow: WorkflowId,
    pub version: u32,
    pub status: RunStatus,
    pub at: DateTime<Utc>,
    /// Set on the `running` event: when the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// Set on a terminal event: when the run started, so that one event holds the
    /// run's whole duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// Set on the `running` event: what started the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TriggerSource>,
    /// Set on the `running` event of a cron run: the tick it was scheduled for, so that
    /// `at - scheduled_at` is its schedule lag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Handed to a worker (tasks) or begun (everything else).
    Started,
    Succeeded,
    Failed,
    /// Failed, and another attempt is scheduled after a backoff.
    Retrying,
    /// Failed for good because it ran out of time (a task's timeout, a signal that did
    /// not come); the error has class `timeout`. Added after `failed`: older readers
    /// that know only `failed` should treat an unknown status as a failure.
    TimedOut,
    /// Waiting for time, a signal or a sub-workflow.
    Waiting,
    /// Stopped because the run or its block ended first.
    Cancelled,
}

impl StepStatus {
    pub const ALL: [StepStatus; 7] = [
        StepStatus::Started,
        StepStatus::Succeeded,
        StepStatus::Failed,
        StepStatus::Retrying,
        StepStatus::TimedOut,
        StepStatus::Waiting,
        StepStatus::Cancelled,
    ];

    /// The serde name, e.g. for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Started => "started",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Retrying => "retrying",
            StepStatus::TimedOut => "timed_out",
            StepStatus::Waiting => "waiting",
            StepStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEvent {
    pub tenant: TenantId,
    pub run: RunId,
    pub step: StepId,
    /// The dispatch number of the step within the run (tasks), else 1.
    pub attempt: u32,
    pub status: StepStatus,
    pub at: DateTime<Utc>,
    /// `task`, `choice`, `parallel`, ...
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// For a foreach body: which item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iteration: Option<u64>,
    /// How long the worker took (its `finished_at - started_at`), on the event that
    /// applies a task result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The size of the task's output as JSON, on the event that applies a successful
    /// task result: what cost attribution counts as bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
}

/// One ended run's payloads were erased (`DELETE /v1/runs/{id}`): written by ingest
/// after the history rows were cleared, keyed by tenant like the run's own events, so
/// it lands behind all of them in the partition. The sink clears the run's error
/// messages from the Parquet files of the days `from..=to` (both tiers) and from the
/// rows it still holds in memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunErased {
    pub tenant: TenantId,
    pub run: RunId,
    pub at: DateTime<Utc>,
    /// The first and last day of the run's events (the Parquet day folders to clear).
    pub from: chrono::NaiveDate,
    pub to: chrono::NaiveDate,
}

/// A record of the events topic: what happened to a run or to one of its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Run(RunEvent),
    Step(StepEvent),
    RunErased(RunErased),
}

impl Event {
    pub fn tenant(&self) -> &TenantId {
        match self {
            Event::Run(e) => &e.tenant,
            Event::Step(e) => &e.tenant,
            Event::RunErased(e) => &e.tenant,
        }
    }

    pub fn run(&self) -> RunId {
        match self {
            Event::Run(e) => e.run,
            Event::Step(e) => e.run,
            Event::RunErased(e) => e.run,
        }
    }

    /// When it happened.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Event::Run(e) => e.at,
            Event::Step(e) => e.at,
            Event::RunErased(e) => e.at,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("event encodes: {e}"))
    }

    pub fn decode(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_serialise_in_snake_case_and_only_running_is_open() {
        assert_eq!(
            serde_json::to_value(RunStatus::TimedOut).unwrap(),
            "timed_out"
        );
        assert_eq!(RunStatus::TimedOut.as_str(), "timed_out");
        assert!(!RunStatus::Running.is_terminal());
        for s in [
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
            RunStatus::TimedOut,
        ] {
            assert!(s.is_terminal());
        }
        assert_eq!(
            serde_json::to_value(StepStatus::Retrying).unwrap(),
            "retrying"
        );
    }

    #[test]
    fn step_status_names_are_the_serde_names() {
        for s in StepStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(
                serde_json::from_value::<StepStatus>(s.as_str().into()).unwrap(),
                s
            );
        }
    }

    #[test]
    fn events_carry_a_type_tag_beside_their_fields() {
        let tenant = TenantId::new("acme").unwrap();
        let workflow = WorkflowId::new("w").unwrap();
        let run = RunId::from_idempotency_key(&tenant, &workflow, "k");
        let e = Event::Run(RunEvent {
            tenant,
            run,
            workflow,
            version: 1,
            status: RunStatus::Succeeded,
            at: DateTime::from_timestamp(0, 0).unwrap(),
            input: None,
            output: None,
            error: None,
            started_at: None,
            source: None,
            scheduled_at: None,
        });
        let v: Value = serde_json::from_slice(&e.encode()).unwrap();
        assert_eq!(v["type"], "run");
        assert_eq!(v["status"], "succeeded");
        assert_eq!(Event::decode(&e.encode()).unwrap(), e);
    }
}
