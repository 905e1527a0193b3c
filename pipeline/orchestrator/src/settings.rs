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
    /// restarted instance fences its own zombie by reusing it. Unset, it is the host
    /// name, which is both on one host per process (a pod, a VM); a shared fixed
    /// default would make every replica fence the others.
    #[serde(default = "host_instance_id")]
    pub instance_id: String,
    /// The consumer group every orchestrator instance joins, after the topic prefix
    /// (`aiq.` + `orchestrator`), so that deployments sharing a cluster stay apart.
    pub group_id: String,
    /// A transaction is committed after this many input records ...
    pub batch_max_records: usize,
    /// ... or this many milliseconds after it began, whichever comes first. A batch also
    /// ends as soon as nothing more is fetched, so this bounds a transaction under
    /// load, when inputs keep coming; it costs no latency when they do not.
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
    /// Most bytes of a run's encoded state (its changelog entry). A run that grows past
    /// it ends `failed` (class `too_large`) instead of writing a record Kafka refuses.
    #[serde(default = "default_record_limit")]
    pub max_state_bytes: usize,
    /// Most bytes of one task record (and of a sub-workflow's trigger).
    #[serde(default = "default_record_limit")]
    pub max_task_bytes: usize,
    /// Most bytes of one run or step event.
    #[serde(default = "default_record_limit")]
    pub max_event_bytes: usize,
    /// Signals and cancels kept per tenant for runs not seen yet (their trigger still
    /// behind in the partition); past it the oldest goes to the dead letters.
    #[serde(default = "default_max_early_signals")]
    pub max_early_signals_per_tenant: usize,
    /// How long such a signal waits for its run before it goes to the dead letters.
    #[serde(default = "default_early_signal_ttl_secs")]
    pub early_signal_ttl_secs: u64,
    /// Most run timers fired in one transaction. After downtime thousands can be due at
    /// once; the rest fire in the following batches, between inputs.
    #[serde(default = "default_max_timers_per_batch")]
    pub max_timers_per_batch: usize,
    /// Most cron ticks (fired or skipped by policy) handled in one transaction.
    #[serde(default = "default_max_cron_ticks_per_batch")]
    pub max_cron_ticks_per_batch: usize,
    /// How long a failed or timed-out run is kept whole, so that it can be redriven.
    /// At most `finished_run_retention_secs`; 0 keeps none.
    #[serde(default = "default_redrive_retention_secs")]
    pub redrive_retention_secs: u64,
    /// Most failed runs kept for redrive per partition; past it the oldest goes.
    #[serde(default = "default_redrive_max_runs")]
    pub redrive_max_runs: usize,
    /// Most finished runs forgotten (tombstoned) in one transaction.
    #[serde(default = "default_max_expiries_per_batch")]
    pub max_expiries_per_batch: usize,
    /// Longest a record naming an unknown workflow waits for the definitions topic to be
    /// read to its end; at most one such wait per transaction.
    #[serde(default = "default_definitions_catch_up_ms")]
    pub definitions_catch_up_ms: u64,
    /// Transactional producers the instance commits its batches with, in turn (1 to
    /// 8). A transaction's first write waits while the coordinator still completes the
    /// previous transaction of the same producer (librdkafka retries it after a fixed
    /// 20 ms), so with one producer nearly every batch under load waited for its
    /// predecessor's markers. Batches still commit one after the other.
    #[serde(default = "default_transactional_producers")]
    pub transactional_producers: usize,
}

fn default_transactional_producers() -> usize {
    2
}

/// Producer `lane`'s transactional id after `base`: `base` itself for the first,
/// `<base>.lane<n>` for the others.
pub fn lane_id(base: &str, lane: usize) -> String {
    match lane {
        0 => base.to_owned(),
        n => format!("{base}.lane{n}"),
    }
}

/// The most `transactional_producers` accepted: each is a connection and a
/// transactional id that a restart must fence again.
pub const MAX_TRANSACTIONAL_PRODUCERS: usize = 8;

fn default_redrive_retention_secs() -> u64 {
    86_400
}

fn default_redrive_max_runs() -> usize {
    10_000
}

fn default_max_timers_per_batch() -> usize {
    2_000
}

fn default_max_cron_ticks_per_batch() -> usize {
    1_000
}

fn default_max_expiries_per_batch() -> usize {
    5_000
}

fn default_definitions_catch_up_ms() -> u64 {
    1_000
}

/// 900 KiB: under Kafka's default 1 MB record limit (`message.max.bytes`) with room for
/// the key, headers and batch framing.
pub const DEFAULT_RECORD_LIMIT: usize = 900 * 1024;

fn default_record_limit() -> usize {
    DEFAULT_RECORD_LIMIT
}

fn default_max_early_signals() -> usize {
    10_000
}

fn default_early_signal_ttl_secs() -> u64 {
    3_600
}

/// The host name, or empty when it cannot be read (`instance_id()` then refuses).
fn host_instance_id() -> String {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_proc
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "orchestrator.instance_id is not set and the host name cannot be read \
         (/proc/sys/kernel/hostname, $HOSTNAME); set orchestrator.instance_id or \
         AIQ_ORCHESTRATOR_INSTANCE_ID to a name unique among the running orchestrators \
         and kept across restarts"
    )]
    NoInstanceId,
    #[error(
        "orchestrator.transactional_producers must be between 1 and \
         {MAX_TRANSACTIONAL_PRODUCERS}, got {0}"
    )]
    Producers(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuota {
    /// Runs beyond this many wait in the tenant's queue.
    pub max_concurrent_runs: u32,
    /// Tasks dispatched to workers and not yet answered; more wait to be dispatched.
    pub max_inflight_tasks: u32,
    /// Runs waiting in the tenant's queue; beyond, ingest answers 429 and a trigger
    /// from elsewhere is dead-lettered (`queue_full`).
    #[serde(default = "default_max_queued_runs")]
    pub max_queued_runs: u32,
}

fn default_max_queued_runs() -> u32 {
    100_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantOverrides {
    pub quota: TenantQuota,
    /// Who to tell when a run of a workflow without a `notify` of its own ends.
    #[serde(default)]
    pub notify: Option<aiq_engine::definition::Notify>,
}

impl OrchestratorSettings {
    pub fn batch_max_age(&self) -> Duration {
        Duration::from_millis(self.batch_max_ms)
    }

    pub fn definitions_catch_up(&self) -> Duration {
        Duration::from_millis(self.definitions_catch_up_ms)
    }

    pub fn quota_for(&self, tenant: &TenantId) -> TenantQuota {
        self.tenants.get(tenant).map_or(self.quota, |o| o.quota)
    }

    /// The instance id, refused when empty: every instance without one would share one
    /// transactional id and fence the others.
    pub fn checked_instance_id(&self) -> Result<&str, SettingsError> {
        let id = self.instance_id.trim();
        if id.is_empty() {
            return Err(SettingsError::NoInstanceId);
        }
        Ok(id)
    }

    /// `transactional_producers` refused outside 1..=`MAX_TRANSACTIONAL_PRODUCERS`.
    pub fn checked_producers(&self) -> Result<usize, SettingsError> {
        match self.transactional_producers {
            n @ 1..=MAX_TRANSACTIONAL_PRODUCERS => Ok(n),
            n => Err(SettingsError::Producers(n)),
        }
    }

    /// `<topic prefix>orchestrator-<instance id>`.
    pub fn transactional_id(&self, topic_prefix: &str) -> String {
        format!("{topic_prefix}orchestrator-{}", self.instance_id)
    }

    /// The transactional id of producer `lane`: the first is `transactional_id`
    /// itself, so that an instance upgraded from one producer fences its old one; the
    /// others add `.lane<n>`.
    pub fn lane_transactional_id(&self, topic_prefix: &str, lane: usize) -> String {
        lane_id(&self.transactional_id(topic_prefix), lane)
    }

    pub fn group(&self, topic_prefix: &str) -> String {
        format!("{topic_prefix}{}", self.group_id)
    }
}

impl Default for OrchestratorSettings {
    /// The values of `config/aiq.toml`, for tests and embedding.
    fn default() -> Self {
        Self {
            instance_id: host_instance_id(),
            group_id: "orchestrator".into(),
            batch_max_records: 500,
            batch_max_ms: 100,
            transaction_timeout_ms: 10_000,
            finished_run_retention_secs: 86_400,
            misfire_grace_ms: 60_000,
            misfire_max_ticks: 100,
            quota: TenantQuota {
                max_concurrent_runs: 10_000,
                max_inflight_tasks: 10_000,
                max_queued_runs: 100_000,
            },
            tenants: HashMap::new(),
            max_state_bytes: DEFAULT_RECORD_LIMIT,
            max_task_bytes: DEFAULT_RECORD_LIMIT,
            max_event_bytes: DEFAULT_RECORD_LIMIT,
            max_early_signals_per_tenant: default_max_early_signals(),
            early_signal_ttl_secs: default_early_signal_ttl_secs(),
            max_timers_per_batch: default_max_timers_per_batch(),
            max_cron_ticks_per_batch: default_max_cron_ticks_per_batch(),
            max_expiries_per_batch: default_max_expiries_per_batch(),
            redrive_retention_secs: default_redrive_retention_secs(),
            redrive_max_runs: default_redrive_max_runs(),
            definitions_catch_up_ms: default_definitions_catch_up_ms(),
            transactional_producers: default_transactional_producers(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_id_defaults_to_the_host_name_and_an_empty_one_is_refused() {
        let s = OrchestratorSettings::default();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        if !host.is_empty() {
            assert_eq!(s.instance_id, host);
            assert_eq!(s.checked_instance_id(), Ok(host.as_str()));
        }
        let none = OrchestratorSettings {
            instance_id: "  ".into(),
            ..s
        };
        let e = none.checked_instance_id().unwrap_err().to_string();
        assert!(e.contains("orchestrator.instance_id"), "{e}");
        assert!(e.contains("AIQ_ORCHESTRATOR_INSTANCE_ID"), "{e}");
    }

    #[test]
    fn an_old_config_without_the_new_keys_loads_with_their_defaults() {
        let old = r#"{"instance_id": "a", "group_id": "orchestrator", "batch_max_records": 500,
            "batch_max_ms": 20, "transaction_timeout_ms": 10000,
            "finished_run_retention_secs": 86400, "misfire_grace_ms": 60000,
            "misfire_max_ticks": 100,
            "quota": {"max_concurrent_runs": 1, "max_inflight_tasks": 1}}"#;
        let s: OrchestratorSettings = serde_json::from_str(old).unwrap();
        assert_eq!(s.max_state_bytes, 921_600);
        assert_eq!(s.max_task_bytes, 921_600);
        assert_eq!(s.max_event_bytes, 921_600);
        assert_eq!(s.max_early_signals_per_tenant, 10_000);
        assert_eq!(s.early_signal_ttl_secs, 3_600);
        assert_eq!(s.transactional_producers, 2);
    }

    #[test]
    fn producers_are_counted_within_bounds_and_named_by_lane() {
        let s = OrchestratorSettings {
            instance_id: "o-1".into(),
            ..OrchestratorSettings::default()
        };
        assert_eq!(s.checked_producers(), Ok(2));
        assert_eq!(s.lane_transactional_id("aiq.", 0), "aiq.orchestrator-o-1");
        assert_eq!(
            s.lane_transactional_id("aiq.", 1),
            "aiq.orchestrator-o-1.lane1"
        );
        for n in [0, MAX_TRANSACTIONAL_PRODUCERS + 1] {
            let bad = OrchestratorSettings {
                transactional_producers: n,
                ..s.clone()
            };
            let e = bad.checked_producers().unwrap_err().to_string();
            assert!(e.contains("orchestrator.transactional_producers"), "{e}");
            assert!(e.contains(&format!("got {n}")), "{e}");
        }
    }
}
