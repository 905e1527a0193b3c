//! What one owned partition holds in memory, and the counters the quotas are checked
//! against. Every index here is rebuilt from the changelog on restore.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use aiq_engine::RunState;
use aiq_topics::{RunId, StepId, TenantId, WorkflowId};
use chrono::{DateTime, Utc};

use super::finished::FinishedMarkers;
use crate::changelog::{CronCursor, EarlySignal, Entry, HeldTask, LiveRun, QueuedRun};

/// How much of a quota each tenant and each of its workflows uses: running runs, or
/// tasks in flight.
#[derive(Default)]
pub(super) struct Usage {
    pub(super) by_tenant: HashMap<TenantId, u32>,
    pub(super) by_workflow: HashMap<(TenantId, WorkflowId), u32>,
}

impl Usage {
    pub(super) fn add(&mut self, tenant: &TenantId, workflow: &WorkflowId) {
        *self.by_tenant.entry(tenant.clone()).or_default() += 1;
        *self
            .by_workflow
            .entry((tenant.clone(), workflow.clone()))
            .or_default() += 1;
    }

    pub(super) fn remove(&mut self, tenant: &TenantId, workflow: &WorkflowId) {
        decrement(&mut self.by_tenant, tenant);
        decrement(&mut self.by_workflow, &(tenant.clone(), workflow.clone()));
    }

    pub(super) fn tenant(&self, tenant: &TenantId) -> u32 {
        self.by_tenant.get(tenant).copied().unwrap_or(0)
    }

    /// Whether one more fits under the tenant's limit and the workflow's (if any).
    pub(super) fn admits(
        &self,
        tenant: &TenantId,
        workflow: &WorkflowId,
        tenant_max: u32,
        workflow_max: Option<u32>,
    ) -> bool {
        let by_workflow = self
            .by_workflow
            .get(&(tenant.clone(), workflow.clone()))
            .copied()
            .unwrap_or(0);
        self.tenant(tenant) < tenant_max && workflow_max.is_none_or(|max| by_workflow < max)
    }
}

/// A run in flight, kept as its encoded changelog entry: a waiting run's decoded state
/// is mostly half-empty B-tree nodes (~8 KB); encoded it is ~0.6 KB, and decoding it for
/// the next input costs microseconds.
pub(super) struct StoredRun {
    /// Kept beside the bytes: ownership checks on every signal and result need it.
    pub(super) tenant: TenantId,
    pub(super) entry: Box<[u8]>,
}

impl StoredRun {
    pub(super) fn new(live: LiveRun) -> Self {
        Self {
            tenant: live.state.tenant.clone(),
            entry: Entry::Run(Box::new(live)).encode().into_boxed_slice(),
        }
    }

    pub(super) fn live(&self) -> Option<LiveRun> {
        match Entry::decode(&self.entry) {
            Ok(Entry::Run(live)) => Some(*live),
            Ok(_) => None,
            Err(e) => {
                tracing::error!(error = %e, "stored run does not decode");
                None
            }
        }
    }
}

/// A run waiting for a quota slot, kept as its encoded changelog entry (the trigger's
/// input is held once, in these bytes); the fair queue holds only its id.
pub(super) struct QueuedSlot {
    pub(super) tenant: TenantId,
    pub(super) workflow: WorkflowId,
    pub(super) seq: u64,
    pub(super) version: u32,
    pub(super) entry: Box<[u8]>,
}

impl QueuedSlot {
    pub(super) fn new(q: &QueuedRun) -> Self {
        Self {
            tenant: q.trigger.tenant.clone(),
            workflow: q.trigger.workflow.clone(),
            seq: q.seq,
            version: q.version,
            entry: Entry::Queued(q.clone()).encode().into_boxed_slice(),
        }
    }

    pub(super) fn queued(&self) -> Option<QueuedRun> {
        match Entry::decode(&self.entry) {
            Ok(Entry::Queued(q)) => Some(q),
            Ok(_) => None,
            Err(e) => {
                tracing::error!(error = %e, "queued run does not decode");
                None
            }
        }
    }
}

pub(super) struct PartitionState {
    pub(super) runs: HashMap<RunId, StoredRun>,
    pub(super) finished: FinishedMarkers,
    /// Per tenant, per workflow, by arrival number: the fair queue.
    pub(super) queues: BTreeMap<TenantId, BTreeMap<WorkflowId, BTreeMap<u64, RunId>>>,
    pub(super) queued: HashMap<RunId, QueuedSlot>,
    pub(super) queued_by_tenant: HashMap<TenantId, usize>,
    /// Tenants whose queue was last announced full (see `QueueState`).
    pub(super) full_queues: HashSet<TenantId>,
    /// The workflow served last per tenant, so the next slot goes to the one after it.
    pub(super) served_last: HashMap<TenantId, WorkflowId>,
    pub(super) cron: HashMap<(TenantId, WorkflowId, u32), CronCursor>,
    pub(super) timers: BTreeSet<(DateTime<Utc>, RunId, String)>,
    pub(super) running: Usage,
    /// Tasks dispatched and not yet answered (or timed out, or cancelled).
    pub(super) tasks: Usage,
    /// Tasks waiting for an in-flight slot, per tenant in arrival order.
    pub(super) held: HashMap<TenantId, BTreeMap<u64, HeldTask>>,
    pub(super) held_index: HashMap<(RunId, StepId, u32), u64>,
    pub(super) next_seq: u64,
    pub(super) early: EarlySignals,
    /// Failed and timed-out runs kept whole for redrive.
    pub(super) redrivable: super::redrive::Redrivable,
}

impl PartitionState {
    pub(super) fn new(finished_run_retention_secs: u64) -> Self {
        Self {
            runs: HashMap::new(),
            finished: FinishedMarkers::new(finished_run_retention_secs),
            queues: BTreeMap::new(),
            queued: HashMap::new(),
            queued_by_tenant: HashMap::new(),
            full_queues: HashSet::new(),
            served_last: HashMap::new(),
            cron: HashMap::new(),
            timers: BTreeSet::new(),
            running: Usage::default(),
            tasks: Usage::default(),
            held: HashMap::new(),
            held_index: HashMap::new(),
            next_seq: 0,
            early: EarlySignals::default(),
            redrivable: super::redrive::Redrivable::default(),
        }
    }

    pub(super) fn queued_of(&self, tenant: &TenantId) -> usize {
        self.queued_by_tenant.get(tenant).copied().unwrap_or(0)
    }
}

/// Signals and cancels kept for runs this partition has not seen yet, or has queued.
#[derive(Default)]
pub(super) struct EarlySignals {
    /// By arrival number, which is also arrival time: the front expires first.
    pub(super) all: BTreeMap<u64, EarlySignal>,
    pub(super) by_run: HashMap<RunId, BTreeSet<u64>>,
    pub(super) by_tenant: HashMap<TenantId, BTreeSet<u64>>,
}

impl EarlySignals {
    pub(super) fn insert(&mut self, e: EarlySignal) {
        self.by_run.entry(e.signal.run).or_default().insert(e.seq);
        self.by_tenant
            .entry(e.signal.tenant.clone())
            .or_default()
            .insert(e.seq);
        self.all.insert(e.seq, e);
    }

    pub(super) fn remove(&mut self, seq: u64) -> Option<EarlySignal> {
        let e = self.all.remove(&seq)?;
        remove_from(&mut self.by_run, &e.signal.run, seq);
        remove_from(&mut self.by_tenant, &e.signal.tenant, seq);
        Some(e)
    }

    /// The run's signals, in arrival order, taken out.
    pub(super) fn take_run(&mut self, run: &RunId) -> Vec<EarlySignal> {
        let seqs = self.by_run.get(run).cloned().unwrap_or_default();
        seqs.into_iter().filter_map(|s| self.remove(s)).collect()
    }

    pub(super) fn count(&self, tenant: &TenantId) -> usize {
        self.by_tenant.get(tenant).map_or(0, BTreeSet::len)
    }

    pub(super) fn oldest_of(&self, tenant: &TenantId) -> Option<u64> {
        self.by_tenant.get(tenant)?.first().copied()
    }
}

fn remove_from<K: std::hash::Hash + Eq>(m: &mut HashMap<K, BTreeSet<u64>>, k: &K, seq: u64) {
    if let Some(set) = m.get_mut(k) {
        set.remove(&seq);
        if set.is_empty() {
            m.remove(k);
        }
    }
}

/// The task attempts a run's engine state waits for.
pub(super) fn inflight_of(state: &RunState) -> BTreeSet<(StepId, u32)> {
    state
        .frames
        .values()
        .filter_map(|f| match f.pending {
            aiq_engine::run::Pending::Task { attempt } => Some((f.at.clone(), attempt)),
            _ => None,
        })
        .collect()
}

/// The tenant a run of this partition belongs to, wherever the run is.
pub(super) fn owner_of(st: &PartitionState, run: &RunId) -> Option<TenantId> {
    if let Some(stored) = st.runs.get(run) {
        return Some(stored.tenant.clone());
    }
    if let Some(q) = st.queued.get(run) {
        return Some(q.tenant.clone());
    }
    if let Some(kept) = st.redrivable.get(run) {
        return Some(kept.tenant.clone());
    }
    st.finished.get(run).map(|f| f.tenant)
}

fn decrement<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: &K) {
    if let Some(n) = m.get_mut(k) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            m.remove(k);
        }
    }
}
