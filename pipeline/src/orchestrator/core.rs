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

/// Counts since start, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub runs_started: u64,
    pub runs_queued: u64,
    pub runs_finished: BTreeMap<&'static str, u64>,
    pub dead_letters: BTreeMap<&'static str, u64>,
    pub duplicates: u64,
    pub timers_fired: u64,
    pub cron_fired: u64,
    pub tasks_held: u64,
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

    /// Takes over a partition from its changelog: `entries` are the latest value of
    /// each key, in any order. Undecodable entries are returned (and skipped).
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
                    self.trigger(&rec, run, trigger, now, definitions_fresh)?;
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
                Ok(s) if key_names(key, &s.tenant) => self.signal(&rec, s, now),
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
                Ok(r) if key_names(key, &r.tenant) => self.result(&rec, r, now),
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
        if let Some(st) = self.parts.get_mut(&p) {
            st.served_last
                .insert(tenant.clone(), q.trigger.workflow.clone());
            st.running.add(&tenant, &q.trigger.workflow);
        }
        self.stats.runs_started += 1;
        self.apply(p, q.run, q.trigger.parent_run, BTreeSet::new(), t, now);
    }

    /// Feeds `input` to `run` and everything that follows from it (a finished child
    /// tells its parent, a cancelled parent its children) within this partition.
    fn drive(&mut self, p: i32, run: RunId, input: Input, now: DateTime<Utc>) {
        let mut work = VecDeque::from([(run, input)]);
        while let Some((run, input)) = work.pop_front() {
            let Some(st) = self.parts.get_mut(&p) else {
                return;
            };
            let Some(stored) = st.runs.remove(&run) else {
                if let Input::Cancel { reason } = input {
                    self.cancel_queued(p, run, &reason, now);
                }
                continue;
            };
            let Some(live) = stored.live() else {
                st.runs.insert(run, stored);
                continue;
            };
            for (id, t) in &live.state.timers {
                st.timers.remove(&(t.due, run, id.clone()));
            }
            let Some(version) =
                self.catalog
                    .version(&live.state.tenant, &live.state.workflow, live.state.version)
            else {
                // Versions are immutable and the topic is compacted, never deleted: this
                // means the catalog was not loaded. Keep the run as it is.
                tracing::error!(%run, workflow = %live.state.workflow, version = live.state.version,
                    "definition of a run in flight is missing; input not applied");
                st.runs.insert(run, stored);
                continue;
            };
            let parent = live.parent;
            let before = inflight_of(&live.state);
            let t = advance(&version.workflow, Some(live.state), input, now);
            work.extend(self.apply(p, run, parent, before, t, now));
        }
    }

    /// Stores the transition's state, writes its commands, and returns the inputs it
    /// causes for other runs of this partition.
    fn apply(
        &mut self,
        p: i32,
        run: RunId,
        parent: Option<RunId>,
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
        let (workflow, version) = (state.workflow.clone(), state.version);
        self.settle_tasks(
            p,
            run,
            &tenant,
            (&workflow, version),
            &before,
            &after,
            dispatches,
        );
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
            *self
                .stats
                .runs_finished
                .entry(state.status.as_str())
                .or_default() += 1;
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
    #[allow(clippy::too_many_arguments)]
    fn settle_tasks(
        &mut self,
        p: i32,
        run: RunId,
        tenant: &TenantId,
        (workflow, version): (&WorkflowId, u32),
        before: &BTreeSet<(StepId, u32)>,
        after: &BTreeSet<(StepId, u32)>,
        dispatches: Vec<TaskMessage>,
    ) {
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
            if self.task_slot(p, tenant, workflow, version) {
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
                        version,
                        task,
                    },
                );
                self.stats.tasks_held += 1;
            }
        }
        if freed {
            self.release_held(p, tenant);
        }
    }

    fn task_slot(&self, p: i32, tenant: &TenantId, workflow: &WorkflowId, version: u32) -> bool {
        let Some(st) = self.parts.get(&p) else {
            return false;
        };
        st.tasks.admits(
            tenant,
            workflow,
            self.settings.quota_for(tenant).max_inflight_tasks,
            self.catalog
                .version(tenant, workflow, version)
                .and_then(|v| v.workflow.definition().max_inflight_tasks),
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
        let Some(st) = self.parts.get(&p) else {
            return;
        };
        let waiting: Vec<(u64, WorkflowId, u32)> = st
            .held
            .get(tenant)
            .into_iter()
            .flat_map(BTreeMap::values)
            .map(|h| (h.seq, h.workflow.clone(), h.version))
            .collect();
        let tenant_max = self.settings.quota_for(tenant).max_inflight_tasks;
        for (seq, workflow, version) in waiting {
            if !self.task_slot(p, tenant, &workflow, version) {
                if self.parts[&p].tasks.tenant(tenant) >= tenant_max {
                    return;
                }
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
        *self
            .stats
            .runs_finished
            .entry(RunStatus::Cancelled.as_str())
            .or_default() += 1;
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
        })));
    }

    fn signal(&mut self, rec: &Record<'_>, s: SignalEvent, now: DateTime<Utc>) {
        let p = rec.partition;
        let Some(st) = self.parts.get(&p) else {
            return;
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
            return;
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
                    return;
                }
                Input::Signal {
                    name,
                    correlation,
                    payload,
                }
            }
            SignalAction::Cancel { reason } => Input::Cancel { reason },
        };
        self.drive(p, s.run, input, now);
    }

    fn result(&mut self, rec: &Record<'_>, r: TaskResult, now: DateTime<Utc>) {
        let p = rec.partition;
        let Some(st) = self.parts.get(&p) else {
            return;
        };
        let owned = owner_of(st, &r.run).as_ref() == Some(&r.tenant);
        if owned && st.runs.contains_key(&r.run) {
            self.drive(p, r.run, Input::StepResult(r), now);
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
                self.drive(p, run, Input::TimerFired { id }, now);
                fired += 1;
            }
        }
        self.stats.timers_fired += fired as u64;
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
                    let previous_active = cursor.last_run.is_some_and(|r| {
                        st.runs.contains_key(&r)
                            || st.queued.contains_key(&r)
                            // Fired but not consumed back yet.
                            || (!st.finished.contains_key(&r)
                                && now - cursor.last_tick < Duration::seconds(60))
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
                    self.out.push(Output::Trigger {
                        partition: p,
                        trigger,
                    });
                    self.stats.cron_fired += 1;
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
        *self.stats.dead_letters.entry(kind.as_str()).or_default() += 1;
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
        let writes = c.take_changelog();
        let entries: Vec<(EntryKey, Entry)> = writes
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
