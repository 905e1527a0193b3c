//! The orchestrator's logic without Kafka: given input records, the time and the
//! catalog, it keeps the state of its partitions and says what to write.
//!
//! The runner (`runner/`) feeds it records and timer ticks inside a transaction, then
//! writes [`Core::take_outputs`] and [`Core::take_changelog`] in that same transaction.
//! Nothing here reads a clock: `now` is an argument, so tests drive time.
//!
//! This room holds the types the runner sees, the [`Core`] itself and the dispatch of
//! one consumed record (checks that send it to the dead letters, then the trigger,
//! signal or result path). The rest, by concern:
//!
//! - `state`: what one owned partition holds, and the quota counters;
//! - `admission`: triggers, run quotas and the fair queue of waiting runs;
//! - `tasks`: the in-flight task quota and the line of tasks waiting for a slot;
//! - `driving`: feeding inputs to runs and applying the engine's decisions;
//! - `timers`: run timers and the expiry of finished runs;
//! - `cron`: schedules and their cursors;
//! - `persist`: the changelog writes of a batch; `restoring`: taking a partition over;
//! - `limits`: the size bounds on a run's state, tasks and events;
//! - `early`: signals and cancels kept for runs not seen yet;
//! - `finished`: the compact markers of runs that ended;
//! - `redrive`: failed runs kept whole, and resuming them.

mod admission;
mod cron;
mod driving;
mod early;
mod finished;
mod limits;
mod persist;
mod redrive;
mod restoring;
mod state;
mod suspend;
mod tasks;
mod timers;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_bounds;
#[cfg(test)]
mod tests_lifecycle;
#[cfg(test)]
mod tests_notify;
#[cfg(test)]
mod tests_redrive;
#[cfg(test)]
mod tests_scale;
#[cfg(test)]
mod tests_tenants;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use aiq_engine::{Catalog, RunState};
use aiq_topics::{
    DeadLetterKind, Event, QueueState, RunId, SignalEvent, TaskMessage, TaskResult, TenantId,
    TriggerError, TriggerEvent, partition_for_key,
};
use chrono::{DateTime, Utc};

use crate::changelog::EntryKey;
use crate::settings::OrchestratorSettings;
use cron::cron_schedule_of;
pub use persist::Parked;
pub use restoring::PartitionRestore;
use state::{PartitionState, StoredRun};

/// The input topics, all keyed by tenant and co-partitioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputTopic {
    Triggers,
    Signals,
    Results,
}

/// One record as consumed.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub topic: InputTopic,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
}

/// A record set aside, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub kind: DeadLetterKind,
    pub reason: String,
    pub topic: InputTopic,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// Something to write in the current transaction (besides changelog entries).
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Task(TaskMessage),
    Event(Event),
    /// To the triggers topic, in `partition` (the tenant's): cron ticks, sub-workflows.
    Trigger {
        partition: i32,
        trigger: TriggerEvent,
    },
    DeadLetter(DeadLetter),
    /// To the queue-state topic: a tenant's queue became full, or free again.
    QueueState(QueueState),
    /// To the notifications topic: a run ended in a status someone asked to be told of.
    Notification(aiq_topics::Notification),
    /// To the audit topic: a run started (its id derived from the run's, so a batch
    /// redone after a crash writes the same event).
    Audit(aiq_topics::AuditEvent),
}

/// The input record an output follows from, named in the headers should the producer
/// refuse the output (outputs of timers and cron ticks have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cause {
    pub topic: InputTopic,
    pub partition: i32,
    pub offset: i64,
}

/// A changelog write: `value` `None` is a tombstone.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangelogWrite {
    pub partition: i32,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// A trigger named a workflow the catalog does not hold (yet): the caller should catch
/// the catalog up with the definitions topic and hand the record in again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedDefinitions;

/// Where an input fed to a run comes from.
#[derive(Clone, Copy)]
enum Origin<'r, 'a> {
    /// A consumed record; `definitions_fresh` as [`Core::handle`] was told.
    Record(&'r Record<'a>, bool),
    /// A timer of the run's own.
    Timer,
    /// A signal kept until its run appeared.
    Early,
}

/// Counts since start, for tests and inspection (the metrics follow the outputs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Runs that waited for a quota slot.
    pub runs_queued: u64,
    /// Triggers of runs already known, and results of runs already finished.
    pub duplicates: u64,
}

pub struct Core {
    settings: Arc<OrchestratorSettings>,
    catalog: Arc<Catalog>,
    /// The tenant registry: plans over the static quotas, suspensions.
    tenants: Arc<aiq_tenants::Directory>,
    tenant_partitions: i32,
    parts: BTreeMap<i32, PartitionState>,
    dirty: BTreeSet<(i32, EntryKey)>,
    out: Vec<Output>,
    /// From which index of `out` on the outputs follow from which record (`None`:
    /// from no record), in order.
    causes: Vec<(usize, Option<Cause>)>,
    stats: Stats,
}

impl Core {
    pub fn new(
        settings: Arc<OrchestratorSettings>,
        catalog: Arc<Catalog>,
        tenant_partitions: i32,
    ) -> Self {
        Self {
            settings,
            catalog,
            tenants: Arc::default(),
            tenant_partitions,
            parts: BTreeMap::new(),
            dirty: BTreeSet::new(),
            out: Vec::new(),
            causes: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// Reads plans and suspensions from `tenants` (without it, every tenant has the
    /// static quotas and none is suspended).
    pub fn with_tenants(mut self, tenants: Arc<aiq_tenants::Directory>) -> Self {
        self.tenants = tenants;
        self
    }

    /// The tenant's quota: its plan's limits over the configured ones.
    pub(crate) fn quota_for(&self, tenant: &TenantId) -> crate::settings::TenantQuota {
        let mut q = self.settings.quota_for(tenant);
        self.tenants.with(tenant, |r| {
            let plan = &r.plan;
            q.max_concurrent_runs = plan.max_concurrent_runs.unwrap_or(q.max_concurrent_runs);
            q.max_inflight_tasks = plan.max_inflight_tasks.unwrap_or(q.max_inflight_tasks);
            q.max_queued_runs = plan.max_queued_runs.unwrap_or(q.max_queued_runs);
        });
        q
    }

    pub fn owned(&self) -> impl Iterator<Item = i32> + '_ {
        self.parts.keys().copied()
    }

    pub fn owns(&self, partition: i32) -> bool {
        self.parts.contains_key(&partition)
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Tasks dispatched and tasks waiting for a slot, per partition.
    pub fn task_load(&self) -> BTreeMap<i32, (u32, usize)> {
        self.parts
            .iter()
            .map(|(p, s)| {
                let held = s.held.values().map(BTreeMap::len).sum();
                (*p, (s.tasks.by_tenant.values().sum(), held))
            })
            .collect()
    }

    /// Runs in flight and queued, per partition, for metrics and tests.
    pub fn load(&self) -> BTreeMap<i32, (usize, usize)> {
        self.parts
            .iter()
            .map(|(p, s)| (*p, (s.runs.len(), s.queued.len())))
            .collect()
    }

    /// Finished runs remembered (to recognise late duplicates), all partitions.
    pub fn finished_count(&self) -> usize {
        self.parts.values().map(|s| s.finished.len()).sum()
    }

    /// Runs running and runs queued by quota, per tenant, for metrics.
    pub fn runs_by_tenant(&self) -> HashMap<TenantId, (u32, usize)> {
        let mut out: HashMap<TenantId, (u32, usize)> = HashMap::new();
        for s in self.parts.values() {
            for (t, n) in &s.running.by_tenant {
                out.entry(t.clone()).or_default().0 += n;
            }
            for (t, n) in &s.queued_by_tenant {
                out.entry(t.clone()).or_default().1 += n;
            }
        }
        out
    }

    pub fn take_outputs(&mut self) -> Vec<Output> {
        self.causes.clear();
        std::mem::take(&mut self.out)
    }

    /// The outputs so far, each with the record it follows from.
    pub fn take_outputs_with_causes(&mut self) -> Vec<(Output, Option<Cause>)> {
        let mut marks = std::mem::take(&mut self.causes).into_iter().peekable();
        let mut cause = None;
        std::mem::take(&mut self.out)
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                while let Some((_, c)) = marks.next_if(|(at, _)| *at <= i) {
                    cause = c;
                }
                (o, cause)
            })
            .collect()
    }

    /// A run's state, for tests and inspection.
    pub fn run_state(&self, run: &RunId) -> Option<RunState> {
        self.parts
            .values()
            .find_map(|s| s.runs.get(run).and_then(StoredRun::live).map(|l| l.state))
    }

    /// Applies one consumed record. `definitions_fresh` says the catalog has just been
    /// caught up with the definitions topic, so a workflow missing now is truly unknown.
    pub fn handle(
        &mut self,
        rec: Record<'_>,
        now: DateTime<Utc>,
        definitions_fresh: bool,
    ) -> Result<(), NeedDefinitions> {
        let cause = Cause {
            topic: rec.topic,
            partition: rec.partition,
            offset: rec.offset,
        };
        self.causes.push((self.out.len(), Some(cause)));
        let handled = self.handle_record(rec, now, definitions_fresh);
        self.causes.push((self.out.len(), None));
        handled
    }

    /// Sets a record aside without handling it (the runner could not open its sealed
    /// payload), in this batch like any dead letter.
    pub fn set_aside(&mut self, rec: Record<'_>, kind: DeadLetterKind, reason: String) {
        let cause = Cause {
            topic: rec.topic,
            partition: rec.partition,
            offset: rec.offset,
        };
        self.causes.push((self.out.len(), Some(cause)));
        self.dead_letter(&rec, kind, reason);
        self.causes.push((self.out.len(), None));
    }

    /// Whether the tenant's data was erased.
    pub fn is_erased(&self, tenant: &TenantId) -> bool {
        self.tenants
            .with(tenant, aiq_topics::TenantRecord::is_erased)
            .unwrap_or(false)
    }

    fn handle_record(
        &mut self,
        rec: Record<'_>,
        now: DateTime<Utc>,
        definitions_fresh: bool,
    ) -> Result<(), NeedDefinitions> {
        if !self.parts.contains_key(&rec.partition) {
            // The runner refuses such a record before it gets here (see `owns`).
            tracing::error!(partition = rec.partition, "record of a partition not owned");
            return Ok(());
        }
        let key = rec.key.unwrap_or_default();
        let expected = partition_for_key(key, self.tenant_partitions as u32) as i32;
        if expected != rec.partition {
            self.dead_letter(
                &rec,
                DeadLetterKind::Invalid,
                format!(
                    "record key {:?} belongs in partition {expected} (murmur2), not {}; \
                     produce with the key = tenant and partitioner=murmur2_random",
                    String::from_utf8_lossy(key),
                    rec.partition
                ),
            );
            return Ok(());
        }
        let Some(payload) = rec.payload else {
            self.dead_letter(
                &rec,
                DeadLetterKind::Undecodable,
                "record has no value".into(),
            );
            return Ok(());
        };
        match rec.topic {
            InputTopic::Triggers => match TriggerEvent::decode(rec.key, payload) {
                Ok(trigger) => {
                    let run = trigger.run_id(rec.partition, rec.offset);
                    let schedule = cron_schedule_of(&trigger);
                    self.trigger(&rec, run, trigger, now, definitions_fresh)?;
                    if let Some(key) = schedule {
                        self.cron_trigger_arrived(rec.partition, key, run);
                    }
                }
                Err(e) => {
                    let kind = match e {
                        TriggerError::Decode { .. } => DeadLetterKind::Undecodable,
                        _ => DeadLetterKind::Invalid,
                    };
                    self.dead_letter(&rec, kind, e.to_string());
                }
            },
            InputTopic::Signals => match SignalEvent::decode(payload) {
                Ok(s) if key_names(key, &s.tenant) => {
                    self.signal(&rec, s, now, definitions_fresh)?;
                }
                Ok(s) => self.dead_letter(
                    &rec,
                    DeadLetterKind::Invalid,
                    format!(
                        "record key does not name the signal's tenant {:?}",
                        s.tenant.as_str()
                    ),
                ),
                Err(e) => self.dead_letter(&rec, DeadLetterKind::Undecodable, e),
            },
            InputTopic::Results => match decode_result(payload) {
                Ok(r) if key_names(key, &r.tenant) => {
                    self.result(&rec, r, now, definitions_fresh)?;
                }
                Ok(r) => self.dead_letter(
                    &rec,
                    DeadLetterKind::Invalid,
                    format!(
                        "record key does not name the result's tenant {:?}",
                        r.tenant.as_str()
                    ),
                ),
                Err(e) => self.dead_letter(&rec, DeadLetterKind::Undecodable, e),
            },
        }
        Ok(())
    }

    /// Sets a record aside: the runner writes it to the dead-letter topic in this batch.
    fn dead_letter(&mut self, rec: &Record<'_>, kind: DeadLetterKind, reason: String) {
        tracing::warn!(partition = rec.partition, offset = rec.offset, kind = kind.as_str(), %reason, "dead letter");
        self.out.push(Output::DeadLetter(DeadLetter {
            kind,
            reason,
            topic: rec.topic,
            partition: rec.partition,
            offset: rec.offset,
            key: rec.key.map(<[u8]>::to_vec),
            payload: rec.payload.map(<[u8]>::to_vec),
        }));
    }
}

fn key_names(key: &[u8], tenant: &TenantId) -> bool {
    let key = String::from_utf8_lossy(key);
    key.split_once('#').map_or(&*key, |(t, _)| t) == tenant.as_str()
}

fn decode_result(payload: &[u8]) -> Result<TaskResult, String> {
    let de = &mut serde_json::Deserializer::from_slice(payload);
    serde_path_to_error::deserialize(de)
        .map_err(|e| format!("task result is not valid: at `{}`: {}", e.path(), e.inner()))
}
