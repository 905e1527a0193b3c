//! The state of a tenant's queue of waiting runs, as the orchestrator that owns the
//! tenant's partition last wrote it: ingest follows these records and answers 429 to a
//! trigger while its tenant's queue is full, instead of accepting a run the orchestrator
//! would have to set aside.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::TenantId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueState {
    pub tenant: TenantId,
    /// Whether the queue is full: set when it reaches `max`, cleared once it is back
    /// below 95% of it (so the flag does not flip on every run at the boundary).
    pub full: bool,
    /// Runs waiting when this was written.
    pub queued: u64,
    pub max: u32,
    pub at: DateTime<Utc>,
}

impl QueueState {
    /// The queue length at or under which a full queue counts as free again.
    pub fn clear_at(max: u32) -> u64 {
        u64::from(max) - u64::from(max) / 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clears_below_ninety_five_percent() {
        assert_eq!(QueueState::clear_at(100_000), 95_000);
        assert_eq!(QueueState::clear_at(10), 10);
        assert_eq!(QueueState::clear_at(0), 0);
    }
}
