//! What bounds a query and where the history lives.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::AnalyticsError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsSettings {
    /// The sink's Parquet root (the folder that holds the `warm` tier).
    pub root: PathBuf,
    /// Rows returned at most; a longer result is cut and marked `truncated`.
    pub max_result_rows: usize,
    /// Wall-clock limit of one query, planning included.
    pub timeout_ms: u64,
    /// Memory one query may hold in its operators (sorts and aggregates spill beyond it,
    /// joins fail).
    pub memory_limit_bytes: usize,
    /// Parallelism of one query; kept low so that one tenant cannot take every core.
    pub target_partitions: usize,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        AnalyticsSettings {
            root: PathBuf::from("data/history"),
            max_result_rows: 10_000,
            timeout_ms: 30_000,
            memory_limit_bytes: 512 * 1024 * 1024,
            target_partitions: 2,
        }
    }
}

impl AnalyticsSettings {
    /// Names the first field that cannot work.
    pub fn validate(&self) -> Result<(), AnalyticsError> {
        let bad = |field: &str, why: &str| {
            Err(AnalyticsError::Internal(format!(
                "analytics settings: {field} {why}"
            )))
        };
        if self.max_result_rows == 0 {
            return bad("max_result_rows", "must be at least 1");
        }
        if self.timeout_ms == 0 {
            return bad("timeout_ms", "must be at least 1");
        }
        if self.memory_limit_bytes < 1024 * 1024 {
            return bad("memory_limit_bytes", "must be at least 1 MiB");
        }
        if self.target_partitions == 0 {
            return bad("target_partitions", "must be at least 1");
        }
        Ok(())
    }
}
