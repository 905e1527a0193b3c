//! The `[sink]` section of the configuration: consumption, write concurrency, backoff
//! and how long each tenant's history is kept.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::parquet::ParquetSettings;

/// Cassandra refuses a TTL above 20 years.
const MAX_RETENTION_DAYS: u32 = 7300;
const DAY_SECS: u32 = 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("sink setting `{field}`: {reason}")]
    Invalid { field: String, reason: String },
    #[error(transparent)]
    Parquet(#[from] crate::parquet::ParquetError),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSettings {
    /// The sink's consumer group, after the topic prefix (`aiq.sink`).
    pub group_id: String,
    /// CQL requests in flight at once (a row, or an unlogged batch of one partition's
    /// rows); a batch waits for room beyond it.
    pub max_in_flight_writes: usize,
    /// Records read before their writes are sent together.
    pub batch_max_records: usize,
    /// How long a batch waits to fill before it is written anyway.
    pub batch_max_ms: u64,
    /// How often the Parquet files are flushed and the written offsets committed.
    pub commit_interval_ms: u64,
    /// First wait before retrying writes the store refused.
    pub retry_backoff_min_ms: u64,
    /// Longest wait between retries: the store is retried forever, never skipped.
    pub retry_backoff_max_ms: u64,
    /// How often the stage compacts, archives and expires the Parquet history (the
    /// work of `aiq history compact`, run under the writer's lock so that it never
    /// races a flush); 0 turns it off.
    #[serde(default = "default_compact_interval")]
    pub compact_interval_secs: u64,
    /// Worker threads of the sink's own runtime in `aiq serve`: no run waits on the
    /// sink, so it does not share the runtime of ingest, orchestrator and worker.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Nice value of those threads (Linux; 0 to 19): above 0, a core that the run path
    /// and the sink both want goes to the run path first, and the sink's lag absorbs the
    /// difference. Ignored elsewhere.
    #[serde(default = "default_thread_nice")]
    pub thread_nice: i32,
    /// How long rows live in the store, per tenant.
    #[serde(default)]
    pub retention: RetentionSettings,
    /// The Parquet side (warm and archive tiers).
    #[serde(default)]
    pub parquet: ParquetSettings,
}

fn default_compact_interval() -> u64 {
    3600
}

fn default_threads() -> usize {
    2
}

fn default_thread_nice() -> i32 {
    10
}

impl Default for SinkSettings {
    /// The values of `config/aiq.toml`.
    fn default() -> Self {
        Self {
            group_id: "sink".into(),
            max_in_flight_writes: 256,
            batch_max_records: 2000,
            batch_max_ms: 50,
            commit_interval_ms: 1000,
            retry_backoff_min_ms: 100,
            retry_backoff_max_ms: 10_000,
            compact_interval_secs: default_compact_interval(),
            threads: default_threads(),
            thread_nice: default_thread_nice(),
            retention: RetentionSettings::default(),
            parquet: ParquetSettings::default(),
        }
    }
}

impl SinkSettings {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.group_id.trim().is_empty() {
            return Err(invalid("group_id", "must not be empty"));
        }
        for (field, value) in [
            ("max_in_flight_writes", self.max_in_flight_writes as u64),
            ("batch_max_records", self.batch_max_records as u64),
            ("batch_max_ms", self.batch_max_ms),
            ("commit_interval_ms", self.commit_interval_ms),
            ("retry_backoff_min_ms", self.retry_backoff_min_ms),
            ("threads", self.threads as u64),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if self.retry_backoff_max_ms < self.retry_backoff_min_ms {
            return Err(invalid(
                "retry_backoff_max_ms",
                format!(
                    "must be at least retry_backoff_min_ms ({}), got {}",
                    self.retry_backoff_min_ms, self.retry_backoff_max_ms
                ),
            ));
        }
        if !(0..=19).contains(&self.thread_nice) {
            return Err(invalid(
                "thread_nice",
                format!("must be between 0 and 19, got {}", self.thread_nice),
            ));
        }
        self.retention.validate()?;
        self.parquet.validate()?;
        Ok(())
    }

    pub fn batch_max_wait(&self) -> Duration {
        Duration::from_millis(self.batch_max_ms)
    }

    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms)
    }

    pub fn retry_backoff(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.retry_backoff_min_ms),
            Duration::from_millis(self.retry_backoff_max_ms),
        )
    }
}

/// Retention classes: a tenant named in `tenants` keeps its rows for its class's days,
/// every other tenant for `default_days`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Days a tenant without a class keeps its rows.
    pub default_days: u32,
    /// Class name → days.
    pub classes: BTreeMap<String, u32>,
    /// Tenant → class name (a key of `classes`).
    pub tenants: BTreeMap<String, String>,
    /// A tenant's class from its plan in the tenant registry, asked before `tenants`.
    #[serde(skip)]
    pub plans: PlanClasses,
    /// Tenants whose data was erased: none of their events is written any more.
    #[serde(skip)]
    pub erased: ErasedTenants,
}

/// Whether a tenant's data was erased (set by the process that runs the sink; not
/// configuration).
#[derive(Clone, Default)]
pub struct ErasedTenants(pub Option<IsErased>);

/// A tenant id → whether its data was erased.
pub type IsErased = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl ErasedTenants {
    pub fn contains(&self, tenant: &str) -> bool {
        self.0.as_ref().is_some_and(|f| f(tenant))
    }
}

impl std::fmt::Debug for ErasedTenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ErasedTenants(set)"
        } else {
            "ErasedTenants(unset)"
        })
    }
}

/// Equal whatever they look up, like [`PlanClasses`].
impl PartialEq for ErasedTenants {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ErasedTenants {}

/// Looks a tenant's retention class up in its plan (set by the process that runs the
/// sink; not configuration).
#[derive(Clone, Default)]
pub struct PlanClasses(pub Option<ClassOf>);

/// A tenant id → its plan's retention class.
pub type ClassOf = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl std::fmt::Debug for PlanClasses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "PlanClasses(set)"
        } else {
            "PlanClasses(unset)"
        })
    }
}

/// Equal whatever they look up: configuration compares by its file's values.
impl PartialEq for PlanClasses {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for PlanClasses {}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            default_days: 90,
            classes: BTreeMap::new(),
            tenants: BTreeMap::new(),
            plans: PlanClasses::default(),
            erased: ErasedTenants::default(),
        }
    }
}

impl RetentionSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        let days_ok = |d: u32| (1..=MAX_RETENTION_DAYS).contains(&d);
        if !days_ok(self.default_days) {
            return Err(invalid(
                "retention.default_days",
                format!(
                    "must be within 1..={MAX_RETENTION_DAYS}, got {}",
                    self.default_days
                ),
            ));
        }
        if let Some((class, days)) = self.classes.iter().find(|(_, d)| !days_ok(**d)) {
            return Err(invalid(
                format!("retention.classes.{class}"),
                format!("must be within 1..={MAX_RETENTION_DAYS}, got {days}"),
            ));
        }
        if let Some((tenant, class)) = self
            .tenants
            .iter()
            .find(|(_, c)| !self.classes.contains_key(*c))
        {
            return Err(invalid(
                format!("retention.tenants.{tenant}"),
                format!(
                    "names class {class:?}, which is not in retention.classes ({})",
                    self.classes.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The TTL in seconds of a tenant's rows: its plan's class, else its configured
    /// class, else the default (a class the configuration lacks counts as none).
    pub fn ttl_secs(&self, tenant: &str) -> i32 {
        let planned = self.plans.0.as_ref().and_then(|f| f(tenant));
        let days = planned
            .as_ref()
            .and_then(|class| self.classes.get(class))
            .or_else(|| {
                self.tenants
                    .get(tenant)
                    .and_then(|class| self.classes.get(class))
            })
            .copied()
            .unwrap_or(self.default_days)
            .min(MAX_RETENTION_DAYS);
        // At most 7300 days, so the product fits an i32.
        i32::try_from(days * DAY_SECS).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plans_class_comes_before_the_configured_one() {
        let mut r = RetentionSettings::default();
        r.classes.insert("short".into(), 7);
        r.classes.insert("long".into(), 365);
        r.tenants.insert("acme".into(), "short".into());
        assert_eq!(r.ttl_secs("acme"), 7 * 86_400);
        r.plans = PlanClasses(Some(std::sync::Arc::new(|t: &str| {
            (t == "acme").then(|| "long".to_owned())
        })));
        assert_eq!(r.ttl_secs("acme"), 365 * 86_400);
        assert_eq!(r.ttl_secs("zeta"), 90 * 86_400);
        r.plans = PlanClasses(Some(std::sync::Arc::new(|_: &str| Some("gold".to_owned()))));
        assert_eq!(r.ttl_secs("acme"), 7 * 86_400, "an unknown class is none");
    }

    #[test]
    fn defaults_are_valid_and_give_ninety_days() {
        let s = SinkSettings::default();
        s.validate().unwrap();
        assert_eq!(s.retention.ttl_secs("anyone"), 90 * 86_400);
    }

    #[test]
    fn a_tenant_naming_an_unknown_class_is_refused_by_field() {
        let mut r = RetentionSettings::default();
        r.classes.insert("gold".into(), 365);
        r.tenants.insert("acme".into(), "gold".into());
        r.validate().unwrap();
        assert_eq!(r.ttl_secs("acme"), 365 * 86_400);
        r.tenants.insert("zeta".into(), "platinum".into());
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("retention.tenants.zeta"), "{e}");
        assert!(e.contains("platinum"), "{e}");
    }

    #[test]
    fn the_sink_runtime_needs_a_thread_and_a_nice_value_linux_accepts() {
        for (settings, field) in [
            (
                SinkSettings {
                    threads: 0,
                    ..SinkSettings::default()
                },
                "threads",
            ),
            (
                SinkSettings {
                    thread_nice: 20,
                    ..SinkSettings::default()
                },
                "thread_nice",
            ),
            (
                SinkSettings {
                    thread_nice: -1,
                    ..SinkSettings::default()
                },
                "thread_nice",
            ),
        ] {
            let e = settings.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn out_of_range_days_and_backoffs_are_refused() {
        let mut s = SinkSettings::default();
        s.retention.classes.insert("forever".into(), 100_000);
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("retention.classes.forever"), "{e}");
        let mut s = SinkSettings {
            retry_backoff_max_ms: 1,
            ..SinkSettings::default()
        };
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("retry_backoff_max_ms")
        );
        s.retry_backoff_max_ms = 10_000;
        s.batch_max_records = 0;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("batch_max_records")
        );
    }

    #[test]
    fn the_toml_section_parses_with_defaults_and_rejects_unknown_fields() {
        let s: SinkSettings = serde_json::from_value(serde_json::json!({
            "group_id": "sink", "max_in_flight_writes": 8, "batch_max_records": 10,
            "batch_max_ms": 5, "commit_interval_ms": 100, "retry_backoff_min_ms": 10,
            "retry_backoff_max_ms": 100,
            "retention": {"classes": {"short": 7}, "tenants": {"t1": "short"}}
        }))
        .unwrap();
        assert_eq!(s.retention.default_days, 90);
        assert_eq!(s.retention.ttl_secs("t1"), 7 * 86_400);
        assert_eq!(s.parquet, ParquetSettings::default());
        let bad = serde_json::from_value::<SinkSettings>(serde_json::json!({
            "group_id": "sink", "max_in_flight_writes": 8, "batch_max_records": 10,
            "batch_max_ms": 5, "commit_interval_ms": 100, "retry_backoff_min_ms": 10,
            "retry_backoff_max_ms": 100, "nope": 1
        }));
        assert!(bad.is_err());
    }
}
