//! The `[worker]` section of the configuration.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// The consumer group of all workers, after the topic prefix (`aiq.worker`).
    pub group_id: String,
    /// Tasks run at once by this process; beyond it, consumption pauses.
    pub max_in_flight: usize,
    /// How often finished tasks' offsets are committed.
    pub commit_interval_ms: u64,
    /// A task result encoding to more than this many bytes fails its step with class
    /// `too_large` instead of being written; below Kafka's record limit (1 MB by
    /// default), so that the results topic always takes it.
    #[serde(default = "default_max_result_bytes")]
    pub max_result_bytes: usize,
}

fn default_max_result_bytes() -> usize {
    900 * 1024
}

impl Default for WorkerSettings {
    /// The values of `config/aiq.toml`.
    fn default() -> Self {
        Self {
            group_id: "worker".into(),
            max_in_flight: 256,
            commit_interval_ms: 200,
            max_result_bytes: default_max_result_bytes(),
        }
    }
}
