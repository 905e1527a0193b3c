//! What bounds a query, what bounds all queries of a process, and where the history lives.

use std::collections::BTreeMap;

use aiq_history_store::HistoryRoot;
use serde::{Deserialize, Serialize};

use crate::AnalyticsError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsSettings {
    /// The sink's Parquet root (`sink.parquet.root`: a folder, `file://…`,
    /// `az://container/prefix` or `s3://bucket/prefix`), which holds the `warm` tier.
    pub root: HistoryRoot,
    /// Options of the object store, as `sink.parquet.store_options`.
    pub store_options: BTreeMap<String, String>,
    /// Rows returned at most; a longer result is cut and marked `truncated`.
    pub max_result_rows: usize,
    /// Wall-clock limit of one query, planning included.
    pub timeout_ms: u64,
    /// Memory one query may hold in its operators (sorts and aggregates spill beyond it,
    /// joins fail). Taken from the process's pool, so at most `memory_pool_bytes`.
    pub memory_limit_bytes: usize,
    /// Parallelism of one query; kept low so that one tenant cannot take every core.
    pub target_partitions: usize,
    /// Memory all queries of the process share: one DataFusion `FairSpillPool`.
    pub memory_pool_bytes: usize,
    /// Worker threads of the process's SQL runtime. Every query runs there, never on the
    /// runtime of ingest, orchestrator, worker and sink.
    pub threads: usize,
    /// Nice value of the SQL threads (Linux; 0 to 19): above 0, a core both want goes to
    /// the pipeline's threads first. Ignored elsewhere.
    pub thread_nice: i32,
    /// Queries running at once in the process; one more is refused (HTTP 429).
    pub max_queries: usize,
    /// Queries running at once for one tenant (the platform scope counts as one tenant);
    /// one more is refused (HTTP 429).
    pub max_queries_per_tenant: usize,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        AnalyticsSettings {
            root: HistoryRoot::default(),
            store_options: BTreeMap::new(),
            max_result_rows: 10_000,
            timeout_ms: 30_000,
            memory_limit_bytes: 512 * 1024 * 1024,
            target_partitions: 2,
            memory_pool_bytes: 1024 * 1024 * 1024,
            threads: 2,
            thread_nice: 10,
            max_queries: 8,
            max_queries_per_tenant: 2,
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
        if self.memory_pool_bytes < self.memory_limit_bytes {
            return bad("memory_pool_bytes", "must be at least memory_limit_bytes");
        }
        if self.target_partitions == 0 {
            return bad("target_partitions", "must be at least 1");
        }
        if self.threads == 0 {
            return bad("threads", "must be at least 1");
        }
        if !(0..=19).contains(&self.thread_nice) {
            return bad("thread_nice", "must be between 0 and 19");
        }
        if self.max_queries == 0 {
            return bad("max_queries", "must be at least 1");
        }
        if self.max_queries_per_tenant == 0 {
            return bad("max_queries_per_tenant", "must be at least 1");
        }
        Ok(())
    }
}
