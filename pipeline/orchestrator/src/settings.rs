//! The `[orchestrator]` section of the configuration.

use std::collections::HashMap;
use std::time::Duration;

use aiq_topics::TenantId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorSettings {
    /// Names this process's transactional producer (`aiq.orchestrator-<id>`). Must be
    /// unique among running instances and stable across restarts of one instance: a
    /// restarted instance fences its own zombie by reusing it.
    pub instance_id: String,
    /// The consumer group every orchestrator instance joins, after the topic prefix
    /// (`aiq.` + `orchestrator`), so that deployments sharing a cluster stay apart.
    pub group_id: String,
    /// A transaction is committed after this many input records ...
    pub batch_max_records: usize,
    /// ... or this many milliseconds after it began, whichever comes first.
    pub batch_max_ms: u64,
    /// The broker aborts a transaction left open this long (a crashed instance's).
    pub transaction_timeout_ms: u64,
    /// How long a finished run is remembered, so that a late duplicate trigger starts
    /// nothing and a late result is recognised as late.
    pub finished_run_retention_secs: u64,
    /// A cron tick later than this is a misfire, handled by the schedule's policy.
    pub misfire_grace_ms: u64,
    /// Most ticks one schedule fires at once under `fire_all`.
    pub misfire_max_ticks: u32,
    /// Every tenant's quota unless `tenants.<id>.quota` says otherwise.
    pub quota: TenantQuota,
    #[serde(default)]
    pub tenants: HashMap<TenantId, TenantOverrides>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuota {
    /// Runs beyond this many wait in the tenant's queue.
    pub max_concurrent_runs: u32,
    /// Tasks dispatched to workers and not yet answered; more wait to be dispatched.
    pub max_inflight_tasks: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantOverrides {
    pub quota: TenantQuota,
}

impl OrchestratorSettings {
    pub fn batch_max_age(&self) -> Duration {
        Duration::from_millis(self.batch_max_ms)
    }

    pub fn quota_for(&self, tenant: &TenantId) -> TenantQuota {
        self.tenants.get(tenant).map_or(self.quota, |o| o.quota)
    }

    /// `<topic prefix>orchestrator-<instance id>`.
    pub fn transactional_id(&self, topic_prefix: &str) -> String {
        format!("{topic_prefix}orchestrator-{}", self.instance_id)
    }

    pub fn group(&self, topic_prefix: &str) -> String {
        format!("{topic_prefix}{}", self.group_id)
    }
}

impl Default for OrchestratorSettings {
    /// The values of `config/aiq.toml`, for tests and embedding.
    fn default() -> Self {
        Self {
            instance_id: "local".into(),
            group_id: "orchestrator".into(),
            batch_max_records: 500,
            batch_max_ms: 20,
            transaction_timeout_ms: 10_000,
            finished_run_retention_secs: 86_400,
            misfire_grace_ms: 60_000,
            misfire_max_ticks: 100,
            quota: TenantQuota {
                max_concurrent_runs: 10_000,
                max_inflight_tasks: 10_000,
            },
            tenants: HashMap::new(),
        }
    }
}
