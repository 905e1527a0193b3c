//! Every topic AutomateIQ uses, declared as data: name, partitions, cleanup, retention,
//! and what its key is. `aiq topics apply` makes the cluster match this declaration.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// What a topic is for. The name suffix is fixed; the prefix is configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicKind {
    Triggers,
    Signals,
    Results,
    Changelog,
    Definitions,
    Secrets,
    Tasks,
    Events,
    Audit,
    DeadLetters,
    Probes,
    QueueState,
    Notifications,
    Tenants,
    DataKeys,
}

impl TopicKind {
    pub const ALL: [TopicKind; 15] = [
        TopicKind::Triggers,
        TopicKind::Signals,
        TopicKind::Results,
        TopicKind::Changelog,
        TopicKind::Definitions,
        TopicKind::Secrets,
        TopicKind::Tasks,
        TopicKind::Events,
        TopicKind::Audit,
        TopicKind::DeadLetters,
        TopicKind::Probes,
        TopicKind::QueueState,
        TopicKind::Notifications,
        TopicKind::Tenants,
        TopicKind::DataKeys,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            TopicKind::Triggers => "triggers",
            TopicKind::Signals => "signals",
            TopicKind::Results => "results",
            TopicKind::Changelog => "orchestrator-changelog",
            TopicKind::Definitions => "definitions",
            TopicKind::Secrets => "secrets",
            TopicKind::Tasks => "tasks",
            TopicKind::Events => "events",
            TopicKind::Audit => "audit",
            TopicKind::DeadLetters => "dead-letters",
            TopicKind::Probes => "probes",
            TopicKind::QueueState => "queue-state",
            TopicKind::Notifications => "notifications",
            TopicKind::Tenants => "tenants",
            TopicKind::DataKeys => "data-keys",
        }
    }

    /// Topics the orchestrator reads or restores together: a tenant must map to the same
    /// partition number in each, so they share one partition count.
    pub fn is_tenant_copartitioned(self) -> bool {
        matches!(
            self,
            TopicKind::Triggers | TopicKind::Signals | TopicKind::Results | TopicKind::Changelog
        )
    }

    /// Topics keyed by run or read by the sink and the workers: they share the work
    /// partition count. Every other topic that is not tenant co-partitioned has one.
    pub fn uses_work_partitions(self) -> bool {
        matches!(
            self,
            TopicKind::Tasks
                | TopicKind::Events
                | TopicKind::Audit
                | TopicKind::DeadLetters
                | TopicKind::Notifications
        )
    }
}

/// What a record's key is, so that every producer keys a topic the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// The tenant id (or `tenant#shard` for a tenant spread by sub-key).
    Tenant,
    /// `tenant/run-id`: spreads one tenant's work over every partition.
    Run,
    /// `tenant/entity`: one compacted entry per piece of state; the partition is set
    /// explicitly to the owning triggers partition, not derived from this key.
    StateEntry,
    /// `tenant/workflow/version`: one compacted entry per immutable version.
    WorkflowVersion,
    /// `tenant/secret-name`: one compacted entry per secret; a tombstone deletes it.
    SecretName,
    /// The key of the record that failed, unchanged.
    OriginalKey,
    /// A probe id; meaningless beyond `aiq check`.
    Probe,
    /// `tenant/key-id`: one compacted entry per data key; a tombstone destroys it.
    DataKey,
}

impl KeyKind {
    pub fn describe(self) -> &'static str {
        match self {
            KeyKind::Tenant => "tenant id (murmur2 partitioner)",
            KeyKind::Run => "tenant/run-id",
            KeyKind::StateEntry => "tenant/entity; partition = owner's triggers partition",
            KeyKind::WorkflowVersion => "tenant/workflow/version",
            KeyKind::SecretName => "tenant/secret-name",
            KeyKind::OriginalKey => "key of the failed record",
            KeyKind::Probe => "probe id",
            KeyKind::DataKey => "tenant/key-id",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    Delete,
    Compact,
}

impl CleanupPolicy {
    pub fn as_kafka(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
        }
    }
}

/// One declared topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicSpec {
    pub kind: TopicKind,
    pub name: String,
    pub partitions: u32,
    pub cleanup: CleanupPolicy,
    /// `None` keeps records forever (compacted state).
    pub retention: Option<Duration>,
    pub key: KeyKind,
    pub purpose: &'static str,
}

impl TopicSpec {
    /// The topic configs `aiq topics apply` sets and checks.
    pub fn configs(&self) -> Vec<(&'static str, String)> {
        let retention_ms = self
            .retention
            .map_or_else(|| "-1".to_owned(), |r| r.as_millis().to_string());
        let mut configs = vec![
            ("cleanup.policy", self.cleanup.as_kafka().to_owned()),
            ("retention.ms", retention_ms),
        ];
        if self.cleanup == CleanupPolicy::Compact {
            configs.extend([
                // Only closed segments are compacted: rolling hourly (or at 64 MiB)
                // bounds what a restore reads beyond the latest value of each key.
                ("segment.ms", HOUR.as_millis().to_string()),
                ("segment.bytes", (64u64 << 20).to_string()),
                // Compact once a tenth of the log is superseded (the default is half),
                // and within six hours whatever the ratio.
                ("min.cleanable.dirty.ratio", "0.1".to_owned()),
                ("max.compaction.lag.ms", (6 * HOUR).as_millis().to_string()),
                // A tombstone stays a day after compaction, so a restore that began
                // before it was compacted still reads the delete.
                ("delete.retention.ms", DAY.as_millis().to_string()),
            ]);
        }
        if self.kind == TopicKind::DataKeys {
            // A destroyed key must leave the broker's disks soon, not within hours:
            // segments roll every minute, and the cleaner takes any superseded key and
            // drops a tombstone ten minutes after compacting it (long enough for a
            // follower reading from the start to see the delete).
            let fast = [
                ("segment.ms", "60000"),
                ("min.cleanable.dirty.ratio", "0.01"),
                ("max.compaction.lag.ms", "60000"),
                ("delete.retention.ms", "600000"),
            ];
            for (name, value) in fast {
                if let Some(c) = configs.iter_mut().find(|(n, _)| *n == name) {
                    c.1 = value.to_owned();
                }
            }
        }
        configs
    }
}

const DAY: Duration = Duration::from_secs(24 * 3600);
const HOUR: Duration = Duration::from_secs(3600);

/// The declared topics for one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSet {
    // Shared: every request's handler state holds a few copies, and a clone of the
    // specs (a dozen names) per copy showed in the API's profile under load.
    specs: Arc<[TopicSpec]>,
}

impl TopicSet {
    /// `tenant_partitions` is shared by the co-partitioned topics; `work_partitions` by
    /// the topics keyed by run or read by the sink.
    pub fn new(prefix: &str, tenant_partitions: u32, work_partitions: u32) -> Self {
        let spec = |kind: TopicKind,
                    partitions: u32,
                    cleanup: CleanupPolicy,
                    retention: Option<Duration>,
                    key: KeyKind,
                    purpose: &'static str| TopicSpec {
            kind,
            name: format!("{prefix}{}", kind.suffix()),
            partitions,
            cleanup,
            retention,
            key,
            purpose,
        };
        use CleanupPolicy::{Compact, Delete};
        let specs = vec![
            spec(
                TopicKind::Triggers,
                tenant_partitions,
                Delete,
                Some(7 * DAY),
                KeyKind::Tenant,
                "trigger events from ingest, cron and external producers",
            ),
            spec(
                TopicKind::Signals,
                tenant_partitions,
                Delete,
                Some(7 * DAY),
                KeyKind::Tenant,
                "named signals for runs waiting on an event, and cancellations",
            ),
            spec(
                TopicKind::Results,
                tenant_partitions,
                Delete,
                Some(7 * DAY),
                KeyKind::Tenant,
                "step results reported by workers",
            ),
            spec(
                TopicKind::Changelog,
                tenant_partitions,
                Compact,
                None,
                KeyKind::StateEntry,
                "orchestrator state: runs in flight, timers, cron cursors, counters",
            ),
            spec(
                TopicKind::Definitions,
                1,
                Compact,
                None,
                KeyKind::WorkflowVersion,
                "accepted workflow versions, read into memory by every orchestrator",
            ),
            spec(
                TopicKind::Secrets,
                1,
                Compact,
                None,
                KeyKind::SecretName,
                "tenant secrets, sealed (ChaCha20-Poly1305); read into memory by workers",
            ),
            spec(
                TopicKind::Tasks,
                work_partitions,
                Delete,
                Some(7 * DAY),
                KeyKind::Run,
                "steps dispatched to workers",
            ),
            spec(
                TopicKind::Events,
                work_partitions,
                Delete,
                Some(7 * DAY),
                KeyKind::Tenant,
                "run and step events for the sink and subscribers",
            ),
            spec(
                TopicKind::Audit,
                work_partitions,
                Delete,
                Some(30 * DAY),
                KeyKind::Tenant,
                "who did what: registrations, manual triggers, cancellations",
            ),
            spec(
                TopicKind::DeadLetters,
                work_partitions,
                Delete,
                Some(30 * DAY),
                KeyKind::OriginalKey,
                "inputs that could not be processed, with the reason and original bytes",
            ),
            spec(
                TopicKind::Notifications,
                work_partitions,
                Delete,
                Some(7 * DAY),
                KeyKind::Tenant,
                "runs that ended in a status a workflow asked to be told of, for the notifier",
            ),
            spec(
                TopicKind::Tenants,
                1,
                Compact,
                None,
                KeyKind::Tenant,
                "the tenant registry: each tenant's plan and state, followed by every stage",
            ),
            spec(
                TopicKind::DataKeys,
                1,
                Compact,
                None,
                KeyKind::DataKey,
                "each tenant's data keys, wrapped by the deployment key; a tombstone destroys one (erasure)",
            ),
            spec(
                TopicKind::QueueState,
                1,
                Compact,
                None,
                KeyKind::Tenant,
                "per tenant, whether its queue of waiting runs is full; ingest answers 429 while it is",
            ),
            spec(
                TopicKind::Probes,
                1,
                Delete,
                Some(Duration::from_secs(3600)),
                KeyKind::Probe,
                "records `aiq check` writes and reads back to prove the brokers work",
            ),
        ];
        Self {
            specs: specs.into(),
        }
    }

    pub fn specs(&self) -> &[TopicSpec] {
        &self.specs
    }

    pub fn get(&self, kind: TopicKind) -> &TopicSpec {
        // Every kind is declared in `new`, so the lookup cannot miss.
        self.specs
            .iter()
            .find(|s| s.kind == kind)
            .unwrap_or_else(|| unreachable!("topic kind {kind:?} is declared in TopicSet::new"))
    }

    pub fn name(&self, kind: TopicKind) -> &str {
        &self.get(kind).name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_declared_once_under_the_prefix() {
        let set = TopicSet::new("aiq.", 12, 6);
        assert_eq!(set.specs().len(), TopicKind::ALL.len());
        for kind in TopicKind::ALL {
            assert_eq!(set.specs().iter().filter(|s| s.kind == kind).count(), 1);
            assert!(set.name(kind).starts_with("aiq."));
        }
        assert_eq!(set.name(TopicKind::Triggers), "aiq.triggers");
    }

    #[test]
    fn copartitioned_topics_share_the_tenant_partition_count() {
        let set = TopicSet::new("x.", 7, 3);
        for s in set.specs() {
            if s.kind.is_tenant_copartitioned() {
                assert_eq!(s.partitions, 7, "{}", s.name);
            }
        }
        assert_eq!(set.get(TopicKind::Tasks).partitions, 3);
    }

    #[test]
    fn each_topic_takes_its_partition_count_from_the_setting_its_kind_names() {
        let set = TopicSet::new("x.", 7, 3);
        for s in set.specs() {
            let expected = if s.kind.is_tenant_copartitioned() {
                7
            } else if s.kind.uses_work_partitions() {
                3
            } else {
                1
            };
            assert_eq!(s.partitions, expected, "{}", s.name);
        }
    }

    #[test]
    fn compacted_topics_keep_records_forever() {
        let set = TopicSet::new("aiq.", 1, 1);
        for s in set.specs() {
            if s.cleanup == CleanupPolicy::Compact {
                assert_eq!(s.retention, None, "{}", s.name);
                assert!(s.configs().contains(&("retention.ms", "-1".to_owned())));
            }
        }
    }
}
