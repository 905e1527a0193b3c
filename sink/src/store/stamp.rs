//! The write timestamp of every statement, derived from the event alone.
//!
//! Replays and concurrent writes of one row must converge on the same cells, so the
//! timestamp cannot be the time of writing: it is the event's `at` in microseconds plus
//! a small rank of its lifecycle state. The rank matters because Cassandra resolves two
//! writes of one cell with the same timestamp by comparing the *values*, so without it a
//! `running` and a `succeeded` written in the same microsecond would leave whichever
//! status sorts last as text ("succeeded" > "running", but "cancelled" < "running"). With
//! the rank the later state always carries the larger timestamp.

use chrono::{DateTime, Utc};

use aiq_topics::{RunStatus, StepStatus};

pub fn run_rank(status: RunStatus) -> i64 {
    if status.is_terminal() { 1 } else { 0 }
}

pub fn step_rank(status: StepStatus) -> i64 {
    match status {
        StepStatus::Started => 0,
        StepStatus::Waiting => 1,
        StepStatus::Succeeded
        | StepStatus::Failed
        | StepStatus::Retrying
        | StepStatus::TimedOut
        | StepStatus::Cancelled => 2,
    }
}

pub fn write_timestamp(at: DateTime<Utc>, rank: i64) -> i64 {
    at.timestamp_micros() + rank
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_state_in_the_same_microsecond_gets_the_larger_timestamp() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap_or_default();
        let running = write_timestamp(at, run_rank(RunStatus::Running));
        let cancelled = write_timestamp(at, run_rank(RunStatus::Cancelled));
        assert_eq!(running, 1_700_000_000_123_456);
        assert!(cancelled > running);
        let started = write_timestamp(at, step_rank(StepStatus::Started));
        let waiting = write_timestamp(at, step_rank(StepStatus::Waiting));
        let failed = write_timestamp(at, step_rank(StepStatus::Failed));
        assert!(started < waiting && waiting < failed);
    }
}
