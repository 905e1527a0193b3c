//! The orchestrator's logic without Kafka: given input records, the time and the
//! catalog, it keeps the state of its partitions and says what to write.
//!
//! The runner (`runner.rs`) feeds it records and timer ticks inside a transaction, then
//! writes [`Core::take_outputs`] and [`Core::take_changelog`] in that same transaction.
//! Nothing here reads a clock: `now` is an argument, so tests drive time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use aiq_engine::definition::{MisfirePolicy, OverlapPolicy};
use aiq_engine::{Catalog, Input, RunState, Transition, Version, advance};
use aiq_topics::{
    DeadLetterKind, ErrorClass, Event, RunEvent, RunId, RunStatus, SignalAction, SignalEvent,
    StepId, TaskMessage, TaskOutcome, TaskResult, TenantId, TriggerError, TriggerEvent,
    TriggerSource, WorkflowId, partition_for_key,
};
use chrono::{DateTime, Duration, Utc};

use crate::orchestrator::changelog::{
    CronCursor, Entry, EntryKey, FinishedRun, HeldTask, LiveRun, QueuedRun,
};
use crate::orchestrator::settings::OrchestratorSettings;

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
}

/// Counts since start, for tests and inspection (the metrics follow the outputs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Runs that waited for a quota slot.
    pub runs_queued: u64,
    /// Triggers of runs already known, and results of runs already finished.
    pub duplicates: u64,
}

/// How much of a quota each tenant and each of its workflows uses: running runs, or
/// tasks in flight.
#[derive(Default)]
struct Usage {
    by_tenant: HashMap<TenantId, u32>,
    by_workflow: HashMap<(TenantId, WorkflowId), u32>,
}

impl Usage {
    fn add(&mut self, tenant: &TenantId, workflow: &WorkflowId) {
        *self.by_tenant.entry(tenant.clone()).or_default() += 1;
        *self
            .by_workflow
            .entry((tenant.clone(), workflow.clone()))
            .or_default() += 1;
    }

    fn remove(&mut self, tenant: &TenantId, workflow: &WorkflowId) {
        decrement(&mut self.by_tenant, tenant);
        decrement(&mut self.by_workflow, &(tenant.clone(), workflow.clone()));
    }

    fn tenant(&self, tenant: &TenantId) -> u32 {
        self.by_tenant.get(tenant).copied().unwrap_or(0)
    }

    /// Whether one more fits under the tenant's limit and the workflow's (if any).
    fn admits(
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
struct StoredRun {
    /// Kept beside the bytes: ownership checks on every signal and result need it.
    tenant: TenantId,
    entry: Box<[u8]>,
}

impl StoredRun {
    fn new(live: LiveRun) -> Self {
        Self {
            tenant: live.state.tenant.clone(),
            entry: Entry::Run(Box::new(live)).encode().into_boxed_slice(),
        }
    }

    fn live(&self) -> Option<LiveRun> {
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

#[derive(Default)]
struct PartitionState {
    runs: HashMap<RunId, StoredRun>,
    finished: HashMap<RunId, FinishedRun>,
    /// Per tenant, per workflow, in arrival order: the fair queue.
    queues: BTreeMap<TenantId, BTreeMap<WorkflowId, VecDeque<QueuedRun>>>,
    queued: HashMap<RunId, (TenantId, WorkflowId)>,
    /// The workflow served last per tenant, so the next slot goes to the one after it.
    served_last: HashMap<TenantId, WorkflowId>,
    cron: HashMap<(TenantId, WorkflowId, u32), CronCursor>,
    timers: BTreeSet<(DateTime<Utc>, RunId, String)>,
    running: Usage,
    /// Tasks dispatched and not yet answered (or timed out, or cancelled).
    tasks: Usage,
    /// Tasks waiting for an in-flight slot, per tenant in arrival order.
    held: HashMap<TenantId, BTreeMap<u64, HeldTask>>,
    held_index: HashMap<(RunId, StepId, u32), u64>,
    next_seq: u64,
}

/// The task attempts a run's engine state waits for.
fn inflight_of(state: &RunState) -> BTreeSet<(StepId, u32)> {
    state
        .frames
        .values()
        .filter_map(|f| match f.pending {
            aiq_engine::run::Pending::Task { attempt } => Some((f.at.clone(), attempt)),
            _ => None,
        })
        .collect()
}

pub struct Core {
    settings: Arc<OrchestratorSettings>,
    catalog: Arc<Catalog>,
    tenant_partitions: i32,
    parts: BTreeMap<i32, PartitionState>,
    dirty: BTreeSet<(i32, EntryKey)>,
    out: Vec<Output>,
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
            tenant_partitions,
            parts: BTreeMap::new(),
            dirty: BTreeSet::new(),
            out: Vec::new(),
            stats: Stats::default(),
        }
    }

    pub fn owned(&self) -> impl Iterator<Item = i32> + '_ {
        self.parts.keys().copied()
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

    /// Runs running and runs queued by quota, per tenant, for metrics.
    pub fn runs_by_tenant(&self) -> HashMap<TenantId, (u32, usize)> {
        let mut out: HashMap<TenantId, (u32, usize)> = HashMap::new();
        for s in self.parts.values() {
            for (t, n) in &s.running.by_tenant {
                out.entry(t.clone()).or_default().0 += n;
            }
            for (t, _) in s.queued.values() {
                out.entry(t.clone()).or_default().1 += 1;
            }
        }
        out
    }

    /// Takes over a partition from its changelog: `entries` are the latest value of
    /// each key, decoded, in any order (the reader skips what does not decode). An
    /// entry of the wrong kind for its key is logged and skipped.
    pub fn restore(&mut self, partition: i32, entries: Vec<(EntryKey, Entry)>) {
        let mut st = PartitionState::default();
        let mut queued = Vec::new();
        let mut live_runs = Vec::new();
        for (key, entry) in entries {
            match (key, entry) {
                (EntryKey::Held(tenant, run, step, attempt), Entry::Held(h)) => {
                    st.next_seq = st.next_seq.max(h.seq + 1);
                    st.held_index.insert((run, step, attempt), h.seq);
                    st.held.entry(tenant).or_default().insert(h.seq, h);
                }
                (EntryKey::Run(_, run), Entry::Run(live)) => {
                    let live = *live;
                    for (id, t) in &live.state.timers {
                        st.timers.insert((t.due, run, id.clone()));
                    }
                    st.running.add(&live.state.tenant, &live.state.workflow);
                    live_runs.push((
                        run,
                        inflight_of(&live.state),
                        live.state.tenant.clone(),
                        live.state.workflow.clone(),
                    ));
                    st.runs.insert(run, StoredRun::new(live));
                }
                (EntryKey::Run(_, run), Entry::Finished(f)) => {
                    st.finished.insert(run, f);
                }
                (EntryKey::Queued(..), Entry::Queued(q)) => queued.push(q),
                (EntryKey::Cron(t, w, i), Entry::Cron(c)) => {
                    st.cron.insert((t, w, i), c);
                }
                (key, _) => {
                    tracing::warn!(
                        key = key.encode(),
                        "changelog entry of the wrong kind; skipped"
                    );
                }
            }
        }
        // Dispatched = what the engine waits for, less what still waits for a slot.
        for (run, tasks, tenant, workflow) in live_runs {
            for (step, attempt) in tasks {
                if !st.held_index.contains_key(&(run, step, attempt)) {
                    st.tasks.add(&tenant, &workflow);
                }
            }
        }
        queued.sort_by_key(|q| q.seq);
        for q in queued {
            st.next_seq = st.next_seq.max(q.seq + 1);
            enqueue(&mut st, q);
        }
        self.parts.insert(partition, st);
    }

    /// Forgets a partition (revoked, or about to be restored again).
    pub fn drop_partition(&mut self, partition: i32) {
        self.parts.remove(&partition);
        self.dirty.retain(|(p, _)| *p != partition);
    }

    /// Forgets every write not yet taken: the transaction they belonged to was aborted.
    pub fn discard_pending(&mut self) {
        self.dirty.clear();
        self.out.clear();
    }

    /// Whether state changed since the last `take_changelog` (a cursor moved, a
    /// finished run expired) — work that must be committed even without any output.
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty()
    }

    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// The current value of every entry changed since the last call, once per key.
    pub fn take_changelog(&mut self) -> Vec<ChangelogWrite> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|(p, key)| {
                let st = self.parts.get(&p)?;
                let value = match &key {
                    EntryKey::Run(_, run) => {
                        if let Some(stored) = st.runs.get(run) {
                            return Some(ChangelogWrite {
                                partition: p,
                                key: key.encode(),
                                value: Some(stored.entry.to_vec()),
                            });
                        }
                        st.finished.get(run).cloned().map(Entry::Finished)
                    }
                    EntryKey::Queued(t, run) => st
                        .queued
                        .get(run)
                        .and_then(|(_, w)| st.queues.get(t)?.get(w))
                        .and_then(|q| q.iter().find(|q| q.run == *run))
                        .cloned()
                        .map(Entry::Queued),
                    EntryKey::Held(t, run, step, attempt) => st
                        .held_index
                        .get(&(*run, step.clone(), *attempt))
                        .and_then(|seq| st.held.get(t)?.get(seq))
                        .cloned()
                        .map(Entry::Held),
                    EntryKey::Cron(t, w, i) => st
                        .cron
                        .get(&(t.clone(), w.clone(), *i))
                        .cloned()
                        .map(Entry::Cron),
                };
                Some(ChangelogWrite {
                    partition: p,
                    key: key.encode(),
                    value: value.map(|v| v.encode()),
                })
            })
            .collect()
    }

    /// Applies one consumed record. `definitions_fresh` says the catalog has just been
    /// caught up with the definitions topic, so a workflow missing now is truly unknown.
    pub fn handle(
        &mut self,
        rec: Record<'_>,
        now: DateTime<Utc>,
        definitions_fresh: bool,
    ) -> Result<(), NeedDefinitions> {
        if !self.parts.contains_key(&rec.partition) {
            // Only records of assigned partitions are ever handed in.
            tracing::warn!(partition = rec.partition, "record of a partition not owned");
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

    fn trigger(
        &mut self,
        rec: &Record<'_>,
        run: RunId,
        trigger: TriggerEvent,
        now: DateTime<Utc>,
        definitions_fresh: bool,
    ) -> Result<(), NeedDefinitions> {
        let p = rec.partition;
        let Some(st) = self.parts.get(&p) else {
            return Ok(());
        };
        if st.runs.contains_key(&run)
            || st.finished.contains_key(&run)
            || st.queued.contains_key(&run)
        {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let version = match trigger.version {
            Some(v) => self.catalog.version(&trigger.tenant, &trigger.workflow, v),
            None => self.catalog.latest(&trigger.tenant, &trigger.workflow),
        };
        let Some(version) = version else {
            if !definitions_fresh {
                return Err(NeedDefinitions);
            }
            let what = match trigger.version {
                Some(v) => format!("version {v} of workflow"),
                None => "workflow".to_owned(),
            };
            self.dead_letter(
                rec,
                DeadLetterKind::UnknownWorkflow,
                format!(
                    "trigger field `workflow`: {what} {:?} is not registered for tenant {:?}",
                    trigger.workflow.as_str(),
                    trigger.tenant.as_str()
                ),
            );
            return Ok(());
        };
        if let Err(errors) = version.workflow.validate_input(&trigger.input) {
            self.dead_letter(
                rec,
                DeadLetterKind::InvalidInput,
                format!(
                    "trigger field `input` does not match the input schema of {} v{}: {}",
                    trigger.workflow,
                    version.record.version,
                    errors.join("; ")
                ),
            );
            return Ok(());
        }
        let queued = QueuedRun {
            seq: 0,
            run,
            version: version.record.version,
            trigger,
        };
        self.admit(p, queued, &version, now);
        Ok(())
    }

    /// Starts the run if the quotas allow, else queues it.
    fn admit(&mut self, p: i32, mut q: QueuedRun, version: &Version, now: DateTime<Utc>) {
        let tenant = q.trigger.tenant.clone();
        if self.has_slot(p, &tenant, &q.trigger.workflow, version) {
            self.start(p, q, version, now);
        } else if let Some(st) = self.parts.get_mut(&p) {
            q.seq = st.next_seq;
            st.next_seq += 1;
            self.dirty.insert((p, EntryKey::Queued(tenant, q.run)));
            enqueue(st, q);
            self.stats.runs_queued += 1;
        }
    }

    fn has_slot(&self, p: i32, tenant: &TenantId, workflow: &WorkflowId, v: &Version) -> bool {
        let Some(st) = self.parts.get(&p) else {
            return false;
        };
        st.running.admits(
            tenant,
            workflow,
            self.settings.quota_for(tenant).max_concurrent_runs,
            v.workflow.definition().max_concurrent_runs,
        )
    }

    fn start(&mut self, p: i32, q: QueuedRun, version: &Version, now: DateTime<Utc>) {
        let tenant = q.trigger.tenant.clone();
        let t = advance(
            &version.workflow,
            None,
            Input::Trigger {
                run: q.run,
                tenant: tenant.clone(),
                input: q.trigger.input,
            },
            now,
        );
        if t.state.is_none() {
            return;
        }
        let mut t = t;
        for c in &mut t.commands {
            if let aiq_engine::Command::EmitRun(e) = c
                && e.status == RunStatus::Running
            {
                e.source = Some(q.trigger.source);
                if q.trigger.source == TriggerSource::Cron {
                    e.scheduled_at = q.trigger.occurred_at;
                }
            }
        }
        if let Some(st) = self.parts.get_mut(&p) {
            st.served_last
                .insert(tenant.clone(), q.trigger.workflow.clone());
            st.running.add(&tenant, &q.trigger.workflow);
        }
        let parent = q.trigger.parent_run;
        self.apply(p, q.run, parent, version, BTreeSet::new(), t, now);
    }

    /// Feeds `input` to `run` and everything that follows from it (a finished child
    /// tells its parent, a cancelled parent its children) within this partition.
    ///
    /// When the run's definition is missing, nothing changes: a record's input asks for
    /// the catalog to be caught up (`NeedDefinitions`, before anything else is done),
    /// then goes to the dead-letter topic; a timer or a follow-up input is logged.
    fn drive(
        &mut self,
        p: i32,
        run: RunId,
        input: Input,
        now: DateTime<Utc>,
        origin: Origin<'_, '_>,
    ) -> Result<(), NeedDefinitions> {
        let mut origin = Some(origin);
        let mut work = VecDeque::from([(run, input)]);
        while let Some((run, input)) = work.pop_front() {
            // The first input is the origin's; the others follow from it.
            let origin = origin.take();
            let Some(st) = self.parts.get_mut(&p) else {
                return Ok(());
            };
            let Some(live) = st.runs.get(&run).map(StoredRun::live) else {
                if let Input::Cancel { reason } = input {
                    self.cancel_queued(p, run, &reason, now);
                }
                continue;
            };
            let Some(live) = live else {
                // Does not decode (logged): kept as it is.
                continue;
            };
            let (tenant, workflow, v) =
                (&live.state.tenant, &live.state.workflow, live.state.version);
            let Some(version) = self.catalog.version(tenant, workflow, v) else {
                // Versions are immutable and the topic is compacted, never deleted: this
                // means the catalog was not loaded. Keep the run as it is.
                let reason = format!(
                    "run {run} is at version {v} of workflow {:?}, which the catalog of \
                     tenant {:?} does not hold; input not applied",
                    workflow.as_str(),
                    tenant.as_str()
                );
                match origin {
                    Some(Origin::Record(_, false)) => return Err(NeedDefinitions),
                    Some(Origin::Record(rec, true)) => {
                        self.dead_letter(rec, DeadLetterKind::Internal, reason);
                    }
                    Some(Origin::Timer) | None => {
                        tracing::error!(%run, %reason, "definition of a run in flight is missing");
                    }
                }
                continue;
            };
            st.runs.remove(&run);
            for (id, t) in &live.state.timers {
                st.timers.remove(&(t.due, run, id.clone()));
            }
            let parent = live.parent;
            let before = inflight_of(&live.state);
            let t = advance(&version.workflow, Some(live.state), input, now);
            work.extend(self.apply(p, run, parent, &version, before, t, now));
        }
        Ok(())
    }

    /// Stores the transition's state, writes its commands, and returns the inputs it
    /// causes for other runs of this partition.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        p: i32,
        run: RunId,
        parent: Option<RunId>,
        version: &Version,
        before: BTreeSet<(StepId, u32)>,
        t: Transition,
        now: DateTime<Utc>,
    ) -> Vec<(RunId, Input)> {
        let mut follow = Vec::new();
        let Some(state) = t.state else {
            return follow;
        };
        let tenant = state.tenant.clone();
        let mut dispatches = Vec::new();
        for cmd in t.commands {
            match cmd {
                aiq_engine::Command::DispatchTask(task) => dispatches.push(task),
                aiq_engine::Command::EmitRun(e) => self.out.push(Output::Event(Event::Run(e))),
                aiq_engine::Command::EmitStep(e) => self.out.push(Output::Event(Event::Step(e))),
                aiq_engine::Command::StartSubWorkflow {
                    child_run,
                    workflow,
                    version,
                    input,
                } => {
                    let mut trigger = TriggerEvent::new(
                        tenant.clone(),
                        workflow,
                        TriggerSource::SubWorkflow,
                        input,
                    );
                    trigger.version = version;
                    trigger.run_id = Some(child_run);
                    trigger.parent_run = Some(run);
                    trigger.occurred_at = Some(now);
                    self.out.push(Output::Trigger {
                        partition: p,
                        trigger,
                    });
                }
                aiq_engine::Command::CancelSubWorkflow { child_run } => follow.push((
                    child_run,
                    Input::Cancel {
                        reason: format!("parent run {run} stopped it"),
                    },
                )),
                aiq_engine::Command::CompleteRun {
                    status,
                    output,
                    error,
                } => {
                    if let Some(parent) = parent {
                        let outcome = match (status, error) {
                            (RunStatus::Succeeded, _) => TaskOutcome::Ok {
                                output: output.unwrap_or_default(),
                            },
                            (_, Some(f)) => TaskOutcome::Error {
                                class: f.class,
                                message: f.message,
                            },
                            (s, None) => TaskOutcome::Error {
                                class: ErrorClass::Fatal,
                                message: format!("sub-workflow run ended {}", s.as_str()),
                            },
                        };
                        follow.push((
                            parent,
                            Input::ChildCompleted {
                                child_run: run,
                                outcome,
                            },
                        ));
                    }
                }
                aiq_engine::Command::StartTimer { .. }
                | aiq_engine::Command::CancelTimer { .. } => {
                    // The timer index follows the state's own timer table (below).
                }
            }
        }
        self.dirty.insert((p, EntryKey::Run(tenant.clone(), run)));
        let after = if state.is_terminal() {
            BTreeSet::new()
        } else {
            inflight_of(&state)
        };
        self.settle_tasks(p, run, &tenant, version, &before, &after, dispatches);
        let Some(st) = self.parts.get_mut(&p) else {
            return follow;
        };
        if state.is_terminal() {
            let workflow = state.workflow.clone();
            st.finished.insert(
                run,
                FinishedRun {
                    tenant: tenant.clone(),
                    workflow: workflow.clone(),
                    status: state.status,
                    finished_at: state.finished_at.unwrap_or(now),
                },
            );
            st.running.remove(&tenant, &workflow);
            self.start_queued(p, &tenant, now);
        } else {
            for (id, timer) in &state.timers {
                st.timers.insert((timer.due, run, id.clone()));
            }
            st.runs
                .insert(run, StoredRun::new(LiveRun { parent, state }));
        }
        follow
    }

    /// Accounts for the task attempts a transition ended and dispatched: ended ones free
    /// their slot (or leave the waiting line), new ones go out if the tenant and the
    /// workflow have a slot and wait in line otherwise; freed slots go to the line.
    ///
    /// A dispatch the same transition already ended (a fail-fast sibling failed, the run
    /// was cancelled) is what it would be if the two came one after the other: with a
    /// free slot it goes out (the engine emitted its `started` event, and a result for
    /// an attempt nothing waits for is a no-op) and frees the slot at once; without one
    /// it would have waited in line and left the line, so it is not sent. Either way no
    /// slot stays taken, as a restore (which counts what the engine waits for) says.
    #[allow(clippy::too_many_arguments)]
    fn settle_tasks(
        &mut self,
        p: i32,
        run: RunId,
        tenant: &TenantId,
        version: &Version,
        before: &BTreeSet<(StepId, u32)>,
        after: &BTreeSet<(StepId, u32)>,
        dispatches: Vec<TaskMessage>,
    ) {
        let workflow = &version.record.workflow;
        let workflow_max = version.workflow.definition().max_inflight_tasks;
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        let mut freed = false;
        for (step, attempt) in before.difference(after) {
            let key = EntryKey::Held(tenant.clone(), run, step.clone(), *attempt);
            if let Some(seq) = st.held_index.remove(&(run, step.clone(), *attempt)) {
                if let Some(line) = st.held.get_mut(tenant) {
                    line.remove(&seq);
                    if line.is_empty() {
                        st.held.remove(tenant);
                    }
                }
                self.dirty.insert((p, key));
            } else {
                st.tasks.remove(tenant, workflow);
                freed = true;
            }
        }
        for task in dispatches {
            let slot = self.task_slot(p, tenant, workflow, workflow_max);
            if !after.contains(&(task.step.clone(), task.attempt)) {
                if slot {
                    self.out.push(Output::Task(task));
                }
            } else if slot {
                self.send_task(p, tenant, workflow, task);
            } else if let Some(st) = self.parts.get_mut(&p) {
                let seq = st.next_seq;
                st.next_seq += 1;
                let key = (task.run, task.step.clone(), task.attempt);
                self.dirty.insert((
                    p,
                    EntryKey::Held(tenant.clone(), task.run, task.step.clone(), task.attempt),
                ));
                st.held_index.insert(key, seq);
                st.held.entry(tenant.clone()).or_default().insert(
                    seq,
                    HeldTask {
                        seq,
                        workflow: workflow.clone(),
                        version: version.record.version,
                        task,
                    },
                );
            }
        }
        if freed {
            self.release_held(p, tenant);
        }
    }

    /// Whether one more task fits under the tenant's in-flight limit and `workflow_max`
    /// (the workflow's, from the version the task belongs to).
    fn task_slot(
        &self,
        p: i32,
        tenant: &TenantId,
        workflow: &WorkflowId,
        workflow_max: Option<u32>,
    ) -> bool {
        let Some(st) = self.parts.get(&p) else {
            return false;
        };
        st.tasks.admits(
            tenant,
            workflow,
            self.settings.quota_for(tenant).max_inflight_tasks,
            workflow_max,
        )
    }

    fn send_task(&mut self, p: i32, tenant: &TenantId, workflow: &WorkflowId, task: TaskMessage) {
        if let Some(st) = self.parts.get_mut(&p) {
            st.tasks.add(tenant, workflow);
        }
        self.out.push(Output::Task(task));
    }

    /// Dispatches the tenant's waiting tasks, oldest first, while slots allow.
    fn release_held(&mut self, p: i32, tenant: &TenantId) {
        let tenant_max = self.settings.quota_for(tenant).max_inflight_tasks;
        // Workflow versions refused a slot in this call: sending only takes slots, so
        // they stay refused, and their tasks further down the line are passed over.
        let mut refused: Vec<(WorkflowId, u32)> = Vec::new();
        let mut from = 0;
        loop {
            let Some(st) = self.parts.get_mut(&p) else {
                return;
            };
            if st.tasks.tenant(tenant) >= tenant_max {
                return;
            }
            let Some(line) = st.held.get_mut(tenant) else {
                return;
            };
            let Some((seq, workflow, version)) = line
                .range(from..)
                .find(|(_, h)| {
                    !refused
                        .iter()
                        .any(|(w, v)| *w == h.workflow && *v == h.version)
                })
                .map(|(seq, h)| (*seq, h.workflow.clone(), h.version))
            else {
                return;
            };
            from = seq + 1;
            let workflow_max = self
                .catalog
                .version(tenant, &workflow, version)
                .and_then(|v| v.workflow.definition().max_inflight_tasks);
            if !self.task_slot(p, tenant, &workflow, workflow_max) {
                refused.push((workflow, version));
                continue;
            }
            let Some(st) = self.parts.get_mut(&p) else {
                return;
            };
            let Some(line) = st.held.get_mut(tenant) else {
                return;
            };
            let Some(h) = line.remove(&seq) else {
                continue;
            };
            if line.is_empty() {
                st.held.remove(tenant);
            }
            st.held_index
                .remove(&(h.task.run, h.task.step.clone(), h.task.attempt));
            self.dirty.insert((
                p,
                EntryKey::Held(
                    tenant.clone(),
                    h.task.run,
                    h.task.step.clone(),
                    h.task.attempt,
                ),
            ));
            self.send_task(p, tenant, &workflow, h.task);
        }
    }

    /// Fills the tenant's free slots from its queue, one workflow after the other.
    fn start_queued(&mut self, p: i32, tenant: &TenantId, now: DateTime<Utc>) {
        loop {
            let Some(st) = self.parts.get(&p) else {
                return;
            };
            let Some(queues) = st.queues.get(tenant) else {
                return;
            };
            let last = st.served_last.get(tenant);
            // Round robin: the workflows after the one served last, then from the start.
            let order: Vec<WorkflowId> = queues
                .keys()
                .filter(|w| last.is_none_or(|l| *w > l))
                .chain(queues.keys().filter(|w| last.is_some_and(|l| *w <= l)))
                .cloned()
                .collect();
            let mut picked = None;
            for w in order {
                let Some(head) = queues.get(&w).and_then(VecDeque::front) else {
                    continue;
                };
                let Some(version) = self.catalog.version(tenant, &w, head.version) else {
                    continue;
                };
                if self.has_slot(p, tenant, &w, &version) {
                    picked = Some((w, version));
                    break;
                }
                if st.running.tenant(tenant) >= self.settings.quota_for(tenant).max_concurrent_runs
                {
                    return;
                }
            }
            let Some((w, version)) = picked else {
                return;
            };
            let Some(st) = self.parts.get_mut(&p) else {
                return;
            };
            let Some(q) = dequeue(st, tenant, &w) else {
                return;
            };
            self.dirty
                .insert((p, EntryKey::Queued(tenant.clone(), q.run)));
            self.start(p, q, &version, now);
        }
    }

    fn cancel_queued(&mut self, p: i32, run: RunId, reason: &str, now: DateTime<Utc>) {
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        let Some((tenant, workflow)) = st.queued.get(&run).cloned() else {
            return;
        };
        let Some(q) = remove_queued(st, &tenant, &workflow, run) else {
            return;
        };
        st.finished.insert(
            run,
            FinishedRun {
                tenant: tenant.clone(),
                workflow: workflow.clone(),
                status: RunStatus::Cancelled,
                finished_at: now,
            },
        );
        self.dirty
            .insert((p, EntryKey::Queued(tenant.clone(), run)));
        self.dirty.insert((p, EntryKey::Run(tenant.clone(), run)));
        self.out.push(Output::Event(Event::Run(RunEvent {
            tenant,
            run,
            workflow,
            version: q.version,
            status: RunStatus::Cancelled,
            at: now,
            input: None,
            output: None,
            error: Some(aiq_topics::Failure {
                class: ErrorClass::Fatal,
                message: format!("cancelled while queued: {reason}"),
                step: None,
            }),
            started_at: None,
            source: Some(q.trigger.source),
            scheduled_at: None,
        })));
    }

    fn signal(
        &mut self,
        rec: &Record<'_>,
        s: SignalEvent,
        now: DateTime<Utc>,
        definitions_fresh: bool,
    ) -> Result<(), NeedDefinitions> {
        let p = rec.partition;
        let Some(st) = self.parts.get(&p) else {
            return Ok(());
        };
        // Run ids are global and tenants share partitions: a signal acts only on a run
        // of the tenant it came from, and another tenant's run looks like no run.
        let owner = owner_of(st, &s.run);
        let known = owner.as_ref() == Some(&s.tenant)
            && (st.runs.contains_key(&s.run) || st.queued.contains_key(&s.run));
        if !known {
            let reason = match st.finished.get(&s.run).filter(|f| f.tenant == s.tenant) {
                Some(f) => format!("run {} already ended ({})", s.run, f.status.as_str()),
                None => format!(
                    "run {} is not in flight for tenant {:?}",
                    s.run,
                    s.tenant.as_str()
                ),
            };
            self.dead_letter(rec, DeadLetterKind::UnknownRun, reason);
            return Ok(());
        }
        let input = match s.action {
            SignalAction::Signal {
                name,
                correlation,
                payload,
            } => {
                if st.queued.contains_key(&s.run) {
                    self.dead_letter(
                        rec,
                        DeadLetterKind::UnknownRun,
                        format!("run {} has not started yet (queued by quota)", s.run),
                    );
                    return Ok(());
                }
                Input::Signal {
                    name,
                    correlation,
                    payload,
                }
            }
            SignalAction::Cancel { reason } => Input::Cancel { reason },
        };
        self.drive(p, s.run, input, now, Origin::Record(rec, definitions_fresh))
    }

    fn result(
        &mut self,
        rec: &Record<'_>,
        r: TaskResult,
        now: DateTime<Utc>,
        definitions_fresh: bool,
    ) -> Result<(), NeedDefinitions> {
        let p = rec.partition;
        let Some(st) = self.parts.get(&p) else {
            return Ok(());
        };
        let owned = owner_of(st, &r.run).as_ref() == Some(&r.tenant);
        if owned && st.runs.contains_key(&r.run) {
            let origin = Origin::Record(rec, definitions_fresh);
            return self.drive(p, r.run, Input::StepResult(r), now, origin);
        } else if owned && st.finished.contains_key(&r.run) {
            // A late or repeated result of a finished run: at-least-once workers.
            self.stats.duplicates += 1;
        } else {
            self.dead_letter(
                rec,
                DeadLetterKind::UnknownRun,
                format!(
                    "result for run {} that is not in flight for tenant {:?}",
                    r.run,
                    r.tenant.as_str()
                ),
            );
        }
        Ok(())
    }

    /// When the earliest timer of any owned partition is due.
    pub fn next_timer(&self) -> Option<DateTime<Utc>> {
        self.parts
            .values()
            .filter_map(|s| s.timers.first().map(|(due, _, _)| *due))
            .min()
    }

    /// Fires every timer due at `now`, earliest first.
    pub fn fire_timers(&mut self, now: DateTime<Utc>) -> usize {
        let mut fired = 0;
        let partitions: Vec<i32> = self.parts.keys().copied().collect();
        for p in partitions {
            while let Some(st) = self.parts.get_mut(&p) {
                let Some(first) = st.timers.first().cloned() else {
                    break;
                };
                if first.0 > now {
                    break;
                }
                st.timers.remove(&first);
                let (_, run, id) = first;
                // Only a record's input can ask for the definitions.
                let _ = self.drive(p, run, Input::TimerFired { id }, now, Origin::Timer);
                fired += 1;
            }
        }
        fired
    }

    /// Fires due cron ticks of the tenants this instance owns, as triggers in the
    /// tenant's partition. Returns when the next tick is due.
    pub fn fire_cron(&mut self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let n = self.tenant_partitions as u32;
        let owned: HashSet<i32> = self.parts.keys().copied().collect();
        let scheduled = self
            .catalog
            .scheduled(|t| owned.contains(&(partition_for_key(t.as_str().as_bytes(), n) as i32)));
        let grace = Duration::milliseconds(self.settings.misfire_grace_ms as i64);
        let mut next_due: Option<DateTime<Utc>> = None;
        for version in scheduled {
            let tenant = version.record.tenant.clone();
            let workflow = version.record.workflow.clone();
            let p = partition_for_key(tenant.as_str().as_bytes(), n) as i32;
            for (idx, cron) in version
                .workflow
                .definition()
                .triggers
                .cron
                .iter()
                .enumerate()
            {
                let key = (tenant.clone(), workflow.clone(), idx as u32);
                let Some(st) = self.parts.get_mut(&p) else {
                    continue;
                };
                let stored = st.cron.get(&key).cloned();
                // A schedule counts from the moment its version was accepted.
                let mut cursor = stored.clone().unwrap_or(CronCursor {
                    last_tick: version.record.created_at,
                    last_run: None,
                    fired_at: None,
                });
                let mut fired = 0u32;
                while let Some(mut tick) =
                    aiq_engine::cron::next_tick(&cron.schedule, &cron.timezone, cursor.last_tick)
                {
                    if tick > now {
                        break;
                    }
                    if now - tick > grace && cron.misfire != MisfirePolicy::FireAll {
                        // Missed while down: jump to the last missed tick and skip it, or
                        // fire only it.
                        let last_missed = aiq_engine::cron::prev_tick(
                            &cron.schedule,
                            &cron.timezone,
                            now - grace - Duration::milliseconds(1),
                        )
                        .filter(|t| *t >= tick)
                        .unwrap_or(tick);
                        if cron.misfire == MisfirePolicy::Skip {
                            cursor.last_tick = last_missed;
                            continue;
                        }
                        tick = last_missed;
                    }
                    // The run fired for the previous tick: its trigger not consumed back
                    // yet (fired earlier in this very pass, say), queued or running.
                    let previous_active = cursor.last_run.is_some_and(|r| {
                        cursor.fired_at.is_some()
                            || st.runs.contains_key(&r)
                            || st.queued.contains_key(&r)
                    });
                    if previous_active && cron.overlap == OverlapPolicy::Queue {
                        break;
                    }
                    cursor.last_tick = tick;
                    if previous_active && cron.overlap == OverlapPolicy::Skip {
                        continue;
                    }
                    let mut trigger = TriggerEvent::new(
                        tenant.clone(),
                        workflow.clone(),
                        TriggerSource::Cron,
                        cron.input.clone(),
                    );
                    trigger.idempotency_key = Some(format!("cron/{idx}/{}", tick.to_rfc3339()));
                    trigger.occurred_at = Some(tick);
                    let run = trigger.run_id(p, 0);
                    trigger.run_id = Some(run);
                    cursor.last_run = Some(run);
                    cursor.fired_at = Some(now);
                    self.out.push(Output::Trigger {
                        partition: p,
                        trigger,
                    });
                    fired += 1;
                    if fired >= self.settings.misfire_max_ticks.max(1) {
                        break;
                    }
                }
                if stored.as_ref() != Some(&cursor) {
                    st.cron.insert(key.clone(), cursor.clone());
                    self.dirty.insert((p, EntryKey::Cron(key.0, key.1, key.2)));
                }
                if let Some(next) =
                    aiq_engine::cron::next_tick(&cron.schedule, &cron.timezone, cursor.last_tick)
                {
                    next_due = Some(next_due.map_or(next, |d: DateTime<Utc>| d.min(next)));
                }
            }
        }
        next_due
    }

    /// A trigger a schedule fired was consumed back (its run started, queued, was a
    /// duplicate or went to the dead-letter topic): the schedule's run is no longer on
    /// its way, and from now on is active only while queued or running.
    fn cron_trigger_arrived(&mut self, p: i32, key: (TenantId, WorkflowId, u32), run: RunId) {
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        if let Some(cursor) = st.cron.get_mut(&key)
            && cursor.last_run == Some(run)
            && cursor.fired_at.is_some()
        {
            cursor.fired_at = None;
            self.dirty.insert((p, EntryKey::Cron(key.0, key.1, key.2)));
        }
    }

    /// Forgets finished runs older than the retention, with tombstones.
    pub fn expire_finished(&mut self, now: DateTime<Utc>) -> usize {
        let keep = Duration::seconds(self.settings.finished_run_retention_secs as i64);
        let mut n = 0;
        for (p, st) in &mut self.parts {
            let old: Vec<(RunId, TenantId)> = st
                .finished
                .iter()
                .filter(|(_, f)| now - f.finished_at > keep)
                .map(|(r, f)| (*r, f.tenant.clone()))
                .collect();
            for (run, tenant) in old {
                st.finished.remove(&run);
                self.dirty.insert((*p, EntryKey::Run(tenant, run)));
                n += 1;
            }
        }
        n
    }

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

    /// A run's state, for tests and inspection.
    pub fn run_state(&self, run: &RunId) -> Option<RunState> {
        self.parts
            .values()
            .find_map(|s| s.runs.get(run).and_then(StoredRun::live).map(|l| l.state))
    }
}

/// The tenant a run of this partition belongs to, wherever the run is.
fn owner_of(st: &PartitionState, run: &RunId) -> Option<TenantId> {
    if let Some(stored) = st.runs.get(run) {
        return Some(stored.tenant.clone());
    }
    if let Some((tenant, _)) = st.queued.get(run) {
        return Some(tenant.clone());
    }
    st.finished.get(run).map(|f| f.tenant.clone())
}

/// The schedule (cursor key) that fired a cron trigger: its idempotency key is
/// `cron/<n>/<tick>`.
fn cron_schedule_of(t: &TriggerEvent) -> Option<(TenantId, WorkflowId, u32)> {
    if t.source != TriggerSource::Cron {
        return None;
    }
    let (idx, _) = t
        .idempotency_key
        .as_deref()?
        .strip_prefix("cron/")?
        .split_once('/')?;
    Some((t.tenant.clone(), t.workflow.clone(), idx.parse().ok()?))
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

fn enqueue(st: &mut PartitionState, q: QueuedRun) {
    let tenant = q.trigger.tenant.clone();
    let workflow = q.trigger.workflow.clone();
    st.queued.insert(q.run, (tenant.clone(), workflow.clone()));
    st.queues
        .entry(tenant)
        .or_default()
        .entry(workflow)
        .or_default()
        .push_back(q);
}

fn dequeue(st: &mut PartitionState, tenant: &TenantId, workflow: &WorkflowId) -> Option<QueuedRun> {
    let queues = st.queues.get_mut(tenant)?;
    let q = queues.get_mut(workflow)?.pop_front()?;
    if queues.get(workflow).is_some_and(VecDeque::is_empty) {
        queues.remove(workflow);
    }
    if queues.is_empty() {
        st.queues.remove(tenant);
    }
    st.queued.remove(&q.run);
    Some(q)
}

fn remove_queued(
    st: &mut PartitionState,
    tenant: &TenantId,
    workflow: &WorkflowId,
    run: RunId,
) -> Option<QueuedRun> {
    let queues = st.queues.get_mut(tenant)?;
    let q = queues.get_mut(workflow)?;
    let pos = q.iter().position(|q| q.run == run)?;
    let item = q.remove(pos)?;
    if q.is_empty() {
        queues.remove(workflow);
    }
    if queues.is_empty() {
        st.queues.remove(tenant);
    }
    st.queued.remove(&run);
    Some(item)
}

fn decrement<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: &K) {
    if let Some(n) = m.get_mut(k) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            m.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::settings::{TenantOverrides, TenantQuota};
    use aiq_topics::DefinitionRecord;
    use serde_json::json;

    const PARTS: i32 = 4;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn catalog(defs: &[serde_json::Value]) -> Arc<Catalog> {
        let c = Catalog::default();
        for d in defs {
            c.apply(DefinitionRecord {
                tenant: TenantId::new("acme").unwrap(),
                workflow: WorkflowId::new(d["id"].as_str().unwrap()).unwrap(),
                version: 1,
                content_hash: "h".into(),
                created_at: t0(),
                definition: d.clone(),
            })
            .unwrap();
        }
        Arc::new(c)
    }

    fn one_task(id: &str, max: Option<u32>) -> serde_json::Value {
        let mut d = json!({"id": id, "steps": [{"id": "t", "task": {"connector": "noop"}}]});
        if let Some(m) = max {
            d["max_concurrent_runs"] = json!(m);
        }
        d
    }

    fn core(defs: &[serde_json::Value], tenant_max: u32) -> (Core, i32) {
        core_with(defs, tenant_max, 10_000)
    }

    fn core_with(defs: &[serde_json::Value], tenant_max: u32, tasks_max: u32) -> (Core, i32) {
        let mut s = OrchestratorSettings::default();
        s.tenants.insert(
            TenantId::new("acme").unwrap(),
            TenantOverrides {
                quota: TenantQuota {
                    max_concurrent_runs: tenant_max,
                    max_inflight_tasks: tasks_max,
                },
            },
        );
        let mut c = Core::new(Arc::new(s), catalog(defs), PARTS);
        let p = partition_for_key(b"acme", PARTS as u32) as i32;
        c.restore(p, Vec::new());
        (c, p)
    }

    fn trigger(c: &mut Core, p: i32, offset: i64, workflow: &str) {
        let t = TriggerEvent::new(
            TenantId::new("acme").unwrap(),
            WorkflowId::new(workflow).unwrap(),
            TriggerSource::Api,
            json!({}),
        );
        feed(c, InputTopic::Triggers, p, offset, &t.encode());
    }

    /// Hands one record of acme's to the core, as the runner does.
    fn feed(c: &mut Core, topic: InputTopic, partition: i32, offset: i64, payload: &[u8]) {
        let rec = Record {
            topic,
            partition,
            offset,
            key: Some(b"acme"),
            payload: Some(payload),
        };
        c.handle(rec, t0(), true).unwrap();
    }

    fn tasks(c: &mut Core) -> Vec<TaskMessage> {
        c.take_outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Task(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    fn answer(c: &mut Core, p: i32, offset: i64, t: &TaskMessage) {
        let r = TaskResult {
            tenant: t.tenant.clone(),
            run: t.run,
            step: t.step.clone(),
            attempt: t.attempt,
            outcome: TaskOutcome::Ok { output: json!(1) },
            started_at: t0(),
            finished_at: t0(),
        };
        feed(
            c,
            InputTopic::Results,
            p,
            offset,
            &serde_json::to_vec(&r).unwrap(),
        );
    }

    #[test]
    fn runs_over_the_tenant_quota_wait_and_start_as_slots_free() {
        let (mut c, p) = core(&[one_task("w", None)], 2);
        for o in 0..5 {
            trigger(&mut c, p, o, "w");
        }
        let started = tasks(&mut c);
        assert_eq!(started.len(), 2);
        assert_eq!(c.load()[&p], (2, 3));
        assert_eq!(c.stats().runs_queued, 3);
        // Finishing one run starts exactly one queued run, the oldest.
        answer(&mut c, p, 100, &started[0]);
        let next = tasks(&mut c);
        assert_eq!(next.len(), 1);
        assert_eq!(c.load()[&p], (2, 2));
        // The queue survives a restore from the changelog.
        let mut again = restored(&mut c, p);
        assert_eq!(again.load()[&p], (2, 2));
        answer(&mut again, p, 101, &started[1]);
        assert_eq!(tasks(&mut again).len(), 1);
        assert_eq!(again.load()[&p], (2, 1));
    }

    fn three_branches(id: &str, max_tasks: Option<u32>) -> serde_json::Value {
        let branch = |n: &str| json!({"steps": [{"id": n, "task": {"connector": "noop"}}]});
        let mut d = json!({"id": id, "steps": [{"id": "all", "parallel": {"branches": [
            branch("a"), branch("b"), branch("c")]}}]});
        if let Some(m) = max_tasks {
            d["max_inflight_tasks"] = json!(m);
        }
        d
    }

    fn restored(c: &mut Core, p: i32) -> Core {
        let entries: Vec<(EntryKey, Entry)> = c
            .take_changelog()
            .iter()
            .filter_map(|w| {
                Some((
                    EntryKey::decode(w.key.as_bytes()).unwrap(),
                    Entry::decode(w.value.as_ref()?).unwrap(),
                ))
            })
            .collect();
        let mut again = Core::new(Arc::clone(&c.settings), Arc::clone(&c.catalog), PARTS);
        again.restore(p, entries);
        again
    }

    #[test]
    fn tasks_over_the_tenant_in_flight_quota_wait_and_go_out_as_answers_come() {
        // The tenant may have 2 tasks in flight; one run wants 3 at once.
        let (mut c, p) = core_with(&[three_branches("fan", None)], 100, 2);
        trigger(&mut c, p, 0, "fan");
        let first = tasks(&mut c);
        assert_eq!(first.len(), 2);
        assert_eq!(c.task_load()[&p], (2, 1));
        // The waiting task survives a restore, and the counts are rebuilt.
        let mut c = restored(&mut c, p);
        assert_eq!(c.task_load()[&p], (2, 1));
        answer(&mut c, p, 10, &first[0]);
        let third = tasks(&mut c);
        assert_eq!(
            third.len(),
            1,
            "the waiting task goes out when a slot frees"
        );
        assert_eq!(c.task_load()[&p], (2, 0));
        answer(&mut c, p, 11, &first[1]);
        answer(&mut c, p, 12, &third[0]);
        assert_eq!(c.task_load()[&p], (0, 0));
        assert!(c.load()[&p].0 == 0, "the run finished");
    }

    #[test]
    fn a_workflow_in_flight_limit_holds_its_tasks_while_other_workflows_proceed() {
        let (mut c, p) = core(
            &[
                three_branches("one-at-a-time", Some(1)),
                one_task("w", None),
            ],
            100,
        );
        trigger(&mut c, p, 0, "one-at-a-time");
        assert_eq!(tasks(&mut c).len(), 1);
        assert_eq!(c.task_load()[&p], (1, 2));
        trigger(&mut c, p, 1, "w");
        assert_eq!(
            tasks(&mut c).len(),
            1,
            "another workflow's task is not held"
        );
    }

    #[test]
    fn a_freed_slot_passes_over_waiting_tasks_of_a_workflow_at_its_limit() {
        // Two tasks in flight for the tenant; `one` may have one of its own.
        let (mut c, p) = core_with(
            &[three_branches("one", Some(1)), three_branches("fan", None)],
            100,
            2,
        );
        trigger(&mut c, p, 0, "one");
        let one = tasks(&mut c);
        trigger(&mut c, p, 1, "fan");
        let fan = tasks(&mut c);
        assert_eq!((one.len(), fan.len()), (1, 1));
        assert_eq!(c.task_load()[&p], (2, 4));
        // `fan`'s slot goes to `fan`'s next task, past `one`'s two older ones.
        answer(&mut c, p, 10, &fan[0]);
        let next = tasks(&mut c);
        assert_eq!(next.len(), 1);
        assert_eq!((next[0].run, next[0].step.as_str()), (fan[0].run, "b"));
        assert_eq!(c.task_load()[&p], (2, 3));
        // `one`'s slot goes to `one`'s oldest waiting task.
        answer(&mut c, p, 11, &one[0]);
        let next = tasks(&mut c);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].run, one[0].run);
        assert_eq!(next[0].step.as_str(), "b");
        assert_eq!(c.task_load()[&p], (2, 2));
    }

    #[test]
    fn a_workflow_limit_queues_its_runs_while_other_workflows_proceed() {
        let (mut c, p) = core(&[one_task("slow", Some(1)), one_task("fast", None)], 100);
        trigger(&mut c, p, 0, "slow");
        trigger(&mut c, p, 1, "slow");
        trigger(&mut c, p, 2, "fast");
        trigger(&mut c, p, 3, "fast");
        let started: Vec<String> = tasks(&mut c).iter().map(|t| t.run.to_string()).collect();
        assert_eq!(started.len(), 3);
        assert_eq!(c.load()[&p], (3, 1));
    }

    #[test]
    fn freed_slots_go_round_robin_across_workflows() {
        let (mut c, p) = core(&[one_task("a", None), one_task("b", None)], 1);
        trigger(&mut c, p, 0, "a");
        let first = tasks(&mut c);
        for o in 1..=3 {
            trigger(&mut c, p, o, "a");
        }
        for o in 4..=6 {
            trigger(&mut c, p, o, "b");
        }
        let mut order = Vec::new();
        let mut running = first;
        for o in 0..6 {
            answer(&mut c, p, 100 + o, &running[0]);
            running = tasks(&mut c);
            assert_eq!(running.len(), 1);
            let wf = c.run_state(&running[0].run).unwrap().workflow.to_string();
            order.push(wf);
        }
        assert_eq!(order, ["b", "a", "b", "a", "b", "a"]);
    }

    #[test]
    fn a_tenant_cannot_signal_or_answer_another_tenants_run_in_the_same_partition() {
        let (mut c, p) = core(&[one_task("w", None)], 10);
        trigger(&mut c, p, 1, "w");
        let task = tasks(&mut c).remove(0);
        // A tenant key that hashes to the same partition as acme's.
        let other = (0..10_000)
            .map(|i| format!("t{i}"))
            .find(|t| partition_for_key(t.as_bytes(), PARTS as u32) as i32 == p)
            .unwrap();
        let cancel = SignalEvent {
            tenant: TenantId::new(&other).unwrap(),
            run: task.run,
            action: SignalAction::Cancel {
                reason: "mine now".into(),
            },
        };
        let bytes = cancel.encode();
        c.handle(
            Record {
                topic: InputTopic::Signals,
                partition: p,
                offset: 2,
                key: Some(other.as_bytes()),
                payload: Some(&bytes),
            },
            t0(),
            true,
        )
        .unwrap();
        let out = c.take_outputs();
        assert!(
            matches!(&out[..], [Output::DeadLetter(d)] if d.kind == DeadLetterKind::UnknownRun
                && d.reason.contains("is not in flight")),
            "{out:?}"
        );
        assert!(c.run_state(&task.run).is_some_and(|s| !s.is_terminal()));
    }

    #[test]
    fn a_duplicate_trigger_starts_nothing_even_after_the_run_finished() {
        let (mut c, p) = core(&[one_task("w", None)], 10);
        trigger(&mut c, p, 7, "w");
        let t = tasks(&mut c);
        answer(&mut c, p, 100, &t[0]);
        let _ = c.take_outputs();
        trigger(&mut c, p, 7, "w");
        assert!(c.take_outputs().is_empty());
        assert_eq!(c.stats().duplicates, 1);
    }

    /// A parallel step whose second branch fails at once: fail-fast cancels the first
    /// branch's task in the very transition that dispatched it.
    fn task_then_fail(id: &str) -> serde_json::Value {
        json!({"id": id, "steps": [{"id": "both", "parallel": {"branches": [
            {"steps": [{"id": "a", "task": {"connector": "noop"}}]},
            {"steps": [{"id": "boom", "fail": {"message": "no"}}]}]}}]})
    }

    #[test]
    fn a_task_cancelled_by_the_transition_that_dispatched_it_takes_no_slot() {
        let (mut c, p) = core(&[task_then_fail("tf")], 100);
        trigger(&mut c, p, 0, "tf");
        // It had a slot, so it went out (results of cancelled branches are no-ops) ...
        let sent = tasks(&mut c);
        assert_eq!(sent.len(), 1);
        assert_eq!(c.load()[&p].0, 0, "the run ended");
        // ... but nothing waits for it: no slot stays taken, as a restore would say.
        assert_eq!(c.task_load()[&p], (0, 0));
        assert_eq!(restored(&mut c, p).task_load()[&p], (0, 0));
        // Its late answer changes nothing.
        answer(&mut c, p, 1, &sent[0]);
        assert_eq!(c.task_load()[&p], (0, 0));
    }

    #[test]
    fn a_task_cancelled_by_the_transition_that_would_hold_it_does_not_wait_in_line() {
        // One task in flight allowed, and taken by `w`.
        let (mut c, p) = core_with(&[one_task("w", None), task_then_fail("tf")], 100, 1);
        trigger(&mut c, p, 0, "w");
        let first = tasks(&mut c);
        assert_eq!(first.len(), 1);
        trigger(&mut c, p, 1, "tf");
        assert!(tasks(&mut c).is_empty());
        assert_eq!(c.task_load()[&p], (1, 0), "nothing waits for a slot");
        assert!(c.take_changelog().iter().all(|w| !w.key.contains("/held/")));
        // The freed slot sends nothing: the cancelled attempt is not in line.
        answer(&mut c, p, 2, &first[0]);
        assert!(tasks(&mut c).is_empty());
        assert_eq!(c.task_load()[&p], (0, 0));
    }

    fn cron_def(id: &str, overlap: &str, misfire: &str) -> serde_json::Value {
        json!({"id": id, "triggers": {"cron": [{"schedule": "*/10 * * * * *",
               "overlap": overlap, "misfire": misfire}]},
               "steps": [{"id": "t", "task": {"connector": "noop"}}]})
    }

    /// The cron triggers written since the last call, as seconds after `t0`.
    fn cron_triggers(c: &mut Core) -> Vec<(i64, i32, TriggerEvent)> {
        c.take_outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Trigger { partition, trigger } => Some((
                    trigger.occurred_at.unwrap().timestamp() - t0().timestamp(),
                    partition,
                    trigger,
                )),
                _ => None,
            })
            .collect()
    }

    /// Consumes a fired trigger back, as the runner does, and returns its run's task.
    fn consume(c: &mut Core, offset: i64, fired: &(i64, i32, TriggerEvent)) -> Vec<TaskMessage> {
        feed(c, InputTopic::Triggers, fired.1, offset, &fired.2.encode());
        tasks(c)
    }

    #[test]
    fn cron_overlap_skip_counts_a_run_fired_earlier_in_the_same_catch_up_pass() {
        let (mut c, p) = core(&[cron_def("s", "skip", "fire_all")], 100);
        c.fire_cron(t0() + Duration::seconds(10));
        let on_time = cron_triggers(&mut c);
        assert_eq!(on_time.len(), 1);
        let task = consume(&mut c, 0, &on_time[0]);
        answer(&mut c, p, 1, &task[0]);
        // Down for 5 minutes, 30 ticks missed: the first fires, and while its run is
        // active (here: on its way through the triggers topic) the others are dropped.
        let next = c.fire_cron(t0() + Duration::seconds(310));
        let caught_up = cron_triggers(&mut c);
        let ticks: Vec<i64> = caught_up.iter().map(|t| t.0).collect();
        assert_eq!(ticks, [20], "{ticks:?}");
        assert_eq!(next, Some(t0() + Duration::seconds(320)));
        // Still on its way after a restore: the next tick is dropped too.
        let mut c = restored(&mut c, p);
        c.fire_cron(t0() + Duration::seconds(320));
        assert!(cron_triggers(&mut c).is_empty());
        // Consumed and running: still active.
        let task = consume(&mut c, 2, &caught_up[0]);
        c.fire_cron(t0() + Duration::seconds(330));
        assert!(cron_triggers(&mut c).is_empty());
        // Ended: the next tick fires.
        answer(&mut c, p, 3, &task[0]);
        c.fire_cron(t0() + Duration::seconds(340));
        let ticks: Vec<i64> = cron_triggers(&mut c).iter().map(|t| t.0).collect();
        assert_eq!(ticks, [340]);
    }

    #[test]
    fn cron_overlap_queue_holds_missed_ticks_until_the_previous_run_ends() {
        let (mut c, p) = core(&[cron_def("q", "queue", "fire_all")], 100);
        // Down from the start for 5 minutes.
        c.fire_cron(t0() + Duration::seconds(300));
        let fired = cron_triggers(&mut c);
        assert_eq!(fired.iter().map(|t| t.0).collect::<Vec<_>>(), [10]);
        c.fire_cron(t0() + Duration::seconds(301));
        assert!(cron_triggers(&mut c).is_empty(), "held while on its way");
        let task = consume(&mut c, 0, &fired[0]);
        c.fire_cron(t0() + Duration::seconds(302));
        assert!(cron_triggers(&mut c).is_empty(), "held while running");
        answer(&mut c, p, 1, &task[0]);
        // The run ended: the next held tick, and only it, fires.
        c.fire_cron(t0() + Duration::seconds(303));
        let fired = cron_triggers(&mut c);
        assert_eq!(fired.iter().map(|t| t.0).collect::<Vec<_>>(), [20]);
    }

    #[test]
    fn a_dead_lettered_cron_trigger_does_not_block_its_schedule() {
        let mut def = cron_def("bad", "skip", "fire_once");
        def["input_schema"] = json!({"type": "object", "required": ["x"]});
        let (mut c, _) = core(&[def], 100);
        c.fire_cron(t0() + Duration::seconds(10));
        let fired = cron_triggers(&mut c);
        assert_eq!(fired.len(), 1);
        feed(
            &mut c,
            InputTopic::Triggers,
            fired[0].1,
            0,
            &fired[0].2.encode(),
        );
        assert!(
            c.take_outputs().iter().any(
                |o| matches!(o, Output::DeadLetter(d) if d.kind == DeadLetterKind::InvalidInput)
            )
        );
        c.fire_cron(t0() + Duration::seconds(20));
        assert_eq!(cron_triggers(&mut c).len(), 1, "no run is active");
    }

    fn without_catalog(c: &mut Core, p: i32) -> Core {
        let mut again = restored(c, p);
        again.catalog = Arc::new(Catalog::default());
        again
    }

    #[test]
    fn an_input_for_a_run_whose_definition_is_missing_is_dead_lettered_and_the_run_kept() {
        let mut def = one_task("w", None);
        def["timeout"] = json!("1h");
        def["steps"][0]["task"]["timeout"] = json!("10s");
        let (mut c, p) = core(&[def], 10);
        trigger(&mut c, p, 0, "w");
        let task = tasks(&mut c).remove(0);
        let mut c = without_catalog(&mut c, p);
        let timers = c.next_timer();
        assert!(timers.is_some());
        let result = TaskResult {
            tenant: task.tenant.clone(),
            run: task.run,
            step: task.step.clone(),
            attempt: task.attempt,
            outcome: TaskOutcome::Ok { output: json!(1) },
            started_at: t0(),
            finished_at: t0(),
        };
        let bytes = serde_json::to_vec(&result).unwrap();
        let rec = Record {
            topic: InputTopic::Results,
            partition: p,
            offset: 5,
            key: Some(b"acme"),
            payload: Some(&bytes),
        };
        // The catalog may be behind: asks for it to be caught up first.
        assert_eq!(c.handle(rec, t0(), false), Err(NeedDefinitions));
        assert!(c.take_outputs().is_empty());
        // Caught up and still missing: set aside, the run and its timers untouched.
        c.handle(rec, t0(), true).unwrap();
        let out = c.take_outputs();
        assert!(
            matches!(&out[..], [Output::DeadLetter(d)] if d.kind == DeadLetterKind::Internal
                && d.offset == 5 && d.payload.as_deref() == Some(&bytes[..])
                && d.reason.contains("\"w\"") && d.reason.contains("version 1")),
            "{out:?}"
        );
        assert_eq!(c.next_timer(), timers);
        assert!(c.run_state(&task.run).is_some_and(|s| !s.is_terminal()));
        // A timer of the run fires: the run keeps its other timers.
        c.fire_timers(t0() + Duration::seconds(20));
        assert_eq!(c.next_timer(), Some(t0() + Duration::hours(1)));
        assert!(c.run_state(&task.run).is_some_and(|s| !s.is_terminal()));
    }

    #[test]
    fn cron_fires_each_tick_once_and_applies_the_misfire_policy() {
        let def = |misfire: &str| {
            json!({"id": format!("c-{misfire}"), "triggers": {"cron": [{"schedule": "*/10 * * * * *", "misfire": misfire}]},
                   "steps": [{"id": "t", "task": {"connector": "noop"}}]})
        };
        let (mut c, _) = core(&[def("skip"), def("fire_once"), def("fire_all")], 100);
        let fired = |c: &mut Core| {
            let mut n: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for o in c.take_outputs() {
                if let Output::Trigger { trigger, .. } = o {
                    n.entry(trigger.workflow.to_string())
                        .or_default()
                        .push(trigger.occurred_at.unwrap().timestamp() - t0().timestamp());
                }
            }
            n
        };
        // On time: the tick at +10 s fires for every policy, once.
        c.fire_cron(t0() + Duration::seconds(10));
        let on_time = fired(&mut c);
        assert_eq!(on_time.values().map(Vec::len).sum::<usize>(), 3);
        c.fire_cron(t0() + Duration::seconds(11));
        assert!(fired(&mut c).is_empty());
        // Down for 5 minutes: 30 ticks missed, the last ones within the 60 s grace.
        let later = c.fire_cron(t0() + Duration::seconds(310));
        let after = fired(&mut c);
        let late_cut = 310 - 60;
        assert!(after["c-skip"].iter().all(|t| *t >= late_cut), "{after:?}");
        assert_eq!(
            after["c-fire_once"]
                .iter()
                .filter(|t| **t < late_cut)
                .count(),
            1,
            "{after:?}"
        );
        assert_eq!(after["c-fire_all"].len(), 30, "{after:?}");
        assert_eq!(later.unwrap(), t0() + Duration::seconds(320));
    }
}
