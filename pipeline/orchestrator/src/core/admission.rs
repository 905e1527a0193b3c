//! Admission: a trigger becomes a run if its workflow is known and its input valid,
//! and starts at once if the tenant's and the workflow's run quotas allow, else waits in
//! the tenant's fair queue (round robin across workflows, FIFO within one). A queued run
//! may be cancelled before it starts.

use std::collections::{BTreeSet, VecDeque};

use aiq_engine::{Input, Version, advance};
use aiq_topics::{
    DeadLetterKind, ErrorClass, Event, RunEvent, RunId, RunStatus, TenantId, TriggerEvent,
    TriggerSource, WorkflowId,
};
use chrono::{DateTime, Utc};

use super::state::PartitionState;
use super::{Core, NeedDefinitions, Output, Record};
use crate::changelog::{EntryKey, FinishedRun, QueuedRun};

impl Core {
    pub(super) fn trigger(
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
        } else if let Some(message) = super::limits::queued_oversize(&self.settings, &q) {
            self.end_unstarted(p, q, RunStatus::Failed, ErrorClass::TooLarge, message, now);
        } else if let Some(st) = self.parts.get_mut(&p) {
            q.seq = st.next_seq;
            st.next_seq += 1;
            self.dirty.insert((p, EntryKey::Queued(tenant, q.run)));
            let run = q.run;
            enqueue(st, q);
            self.stats.runs_queued += 1;
            self.cancel_queued_early(p, run, now);
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
        self.deliver_early(p, q.run, now);
    }

    /// Fills the tenant's free slots from its queue, one workflow after the other.
    pub(super) fn start_queued(&mut self, p: i32, tenant: &TenantId, now: DateTime<Utc>) {
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

    pub(super) fn cancel_queued(&mut self, p: i32, run: RunId, reason: &str, now: DateTime<Utc>) {
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        let Some((tenant, workflow)) = st.queued.get(&run).cloned() else {
            return;
        };
        let Some(q) = remove_queued(st, &tenant, &workflow, run) else {
            return;
        };
        self.dirty
            .insert((p, EntryKey::Queued(tenant.clone(), run)));
        let message = format!("cancelled while queued: {reason}");
        self.end_unstarted(p, q, RunStatus::Cancelled, ErrorClass::Fatal, message, now);
    }

    /// Ends a run that never started: its short record and one small run event; the
    /// signals kept for it are set aside as for any ended run.
    fn end_unstarted(
        &mut self,
        p: i32,
        q: QueuedRun,
        status: RunStatus,
        class: ErrorClass,
        message: String,
        now: DateTime<Utc>,
    ) {
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        let (tenant, workflow) = (q.trigger.tenant.clone(), q.trigger.workflow.clone());
        st.finished.insert(
            q.run,
            FinishedRun {
                tenant: tenant.clone(),
                workflow: workflow.clone(),
                status,
                finished_at: now,
            },
        );
        self.dirty.insert((p, EntryKey::Run(tenant.clone(), q.run)));
        self.out.push(Output::Event(Event::Run(RunEvent {
            tenant,
            run: q.run,
            workflow,
            version: q.version,
            status,
            at: now,
            input: None,
            output: None,
            error: Some(aiq_topics::Failure {
                class,
                message,
                step: None,
            }),
            started_at: None,
            source: Some(q.trigger.source),
            scheduled_at: None,
        })));
        self.drop_early_of(p, q.run, &format!("ended {}", status.as_str()));
    }
}

pub(super) fn enqueue(st: &mut PartitionState, q: QueuedRun) {
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
