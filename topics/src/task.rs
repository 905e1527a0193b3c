//! The worker contract: a task the orchestrator dispatches and the result a worker
//! reports. Workers are at-least-once, so both carry the attempt that identifies them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{RunId, StepId, TenantId};

/// How a step failed; decides retry and `catch` routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Worth trying again: 5xx, connection refused, deadlocks.
    Retryable,
    /// Trying again cannot help: 4xx, bad arguments, SOAP client faults.
    Fatal,
    /// The step ran past its timeout.
    Timeout,
    /// The target's circuit breaker was open; the call was not made.
    CircuitOpen,
    /// A run's state, or a task or event it produced, grew past a size limit of the
    /// orchestrator's (Kafka refuses records past its own limit).
    TooLarge,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 5] = [
        ErrorClass::Retryable,
        ErrorClass::Fatal,
        ErrorClass::Timeout,
        ErrorClass::CircuitOpen,
        ErrorClass::TooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Fatal => "fatal",
            ErrorClass::Timeout => "timeout",
            ErrorClass::CircuitOpen => "circuit_open",
            ErrorClass::TooLarge => "too_large",
        }
    }
}

/// One step attempt for a worker to execute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMessage {
    pub tenant: TenantId,
    pub run: RunId,
    pub step: StepId,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The connector name, e.g. `http`, `soap`, `sql`, `email`, `file`, `kafka`.
    pub connector: String,
    /// Connector arguments, expressions already evaluated.
    pub args: Value,
    pub timeout_ms: u64,
    pub dispatched_at: DateTime<Utc>,
    /// When the orchestrator's backstop for this attempt fires (dispatch +
    /// schedule-to-start + timeout + grace). A worker picking the task up later answers
    /// it `timeout` without running it: the attempt has been failed already. Absent in
    /// records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl TaskMessage {
    /// Passed to the systems a worker calls, so that a redelivered task does no second
    /// effect: stable across redeliveries of the same attempt.
    pub fn idempotency_key(&self) -> String {
        format!("{}/{}/{}", self.run, self.step, self.attempt)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TaskOutcome {
    Ok { output: Value },
    Error { class: ErrorClass, message: String },
}

/// What a worker reports for one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub tenant: TenantId,
    pub run: RunId,
    pub step: StepId,
    pub attempt: u32,
    pub outcome: TaskOutcome,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_serialise_with_a_status_tag() {
        let r = TaskOutcome::Error {
            class: ErrorClass::CircuitOpen,
            message: "open".into(),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"status": "error", "class": "circuit_open", "message": "open"})
        );
        for class in ErrorClass::ALL {
            let v = serde_json::to_value(class).unwrap();
            assert_eq!(v, json!(class.as_str()));
        }
    }
}
