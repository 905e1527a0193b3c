//! Admission: a trigger becomes a run if its workflow is known and its input valid,
//! and starts at once if the tenant's and the workflow's run quotas allow, else waits in
//! the tenant's fair queue (round robin across workflows, FIFO within one). A queued run
//! may be cancelled before it starts.

use std::collections::BTreeSet;

use aiq_engine::{Input, Version, advance};
use aiq_topics::{
    DeadLetterKind, ErrorClass, Event, QueueState, RunEvent, RunId, RunStatus, TenantId,
    TriggerEvent, TriggerSource, WorkflowId,
};
use chrono::{DateTime, Utc};

use super::state::{PartitionState, QueuedSlot};
use super::{Core, NeedDefinitions, Output, Record};
use crate::changelog::{EntryKey, QueuedRun};

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
        if st.runs.contains_key(&run) || st.queued.contains_key(&run) || st.finished.contains(&run)
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
        // A sub-workflow's start belongs to a run in flight, which goes on.
        if trigger.source != aiq_topics::TriggerSource::SubWorkflow
            && self
                .tenants
                .with(&trigger.tenant, |t| {
                    t.refuses_trigger_at(trigger.occurred_at)
                })
                .unwrap_or(false)
        {
            self.dead_letter(
                rec,
                DeadLetterKind::TenantSuspended,
                format!(
                    "trigger field `tenant`: tenant {:?} is suspended",
                    trigger.tenant.as_str()
                ),
            );
            return Ok(());
        }
        if trigger.source != aiq_topics::TriggerSource::SubWorkflow
            && let Some(reason) = self.catalog.refusal(&trigger.tenant, &trigger.workflow)
        {
            self.dead_letter(
                rec,
                DeadLetterKind::UnknownWorkflow,
                format!("trigger field `workflow`: {reason}"),
            );
            return Ok(());
        }
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
        self.admit(rec, p, queued, &version, now);
        Ok(())
    }

    /// Starts the run if the quotas allow, else queues it, unless the tenant's queue is
    /// full.
    fn admit(
        &mut self,
        rec: &Record<'_>,
        p: i32,
        mut q: QueuedRun,
        version: &Version,
        now: DateTime<Utc>,
    ) {
        let tenant = q.trigger.tenant.clone();
        if self.has_slot(p, &tenant, &q.trigger.workflow, version) {
            self.start(p, q, version, now);
        } else if let Some(reason) = self.queue_full(p, &q) {
            self.dead_letter(rec, DeadLetterKind::QueueFull, reason);
        } else if let Some(message) = super::limits::queued_oversize(&self.settings, &q) {
            self.end_unstarted(p, q, RunStatus::Failed, ErrorClass::TooLarge, message, now);
        } else if let Some(st) = self.parts.get_mut(&p) {
            q.seq = st.next_seq;
            st.next_seq += 1;
            self.dirty
                .insert((p, EntryKey::Queued(tenant.clone(), q.run)));
            let run = q.run;
            enqueue(st, &q);
            self.stats.runs_queued += 1;
            self.queue_changed(p, &tenant, now);
            self.cancel_queued_early(p, run, now);
        }
    }

    /// Why the run cannot wait in its tenant's queue, if it cannot. Ingest stops
    /// accepting a tenant's triggers (429) once its queue reaches `max_queued_runs`, but
    /// learns that a moment late: a run it accepted meanwhile (or a sub-workflow, whose
    /// parent waits for it) may use a headroom of a tenth more. A trigger from an outside
    /// producer or a cron tick gets none.
    fn queue_full(&self, p: i32, q: &QueuedRun) -> Option<String> {
        let st = self.parts.get(&p)?;
        let tenant = &q.trigger.tenant;
        let max = self.quota_for(tenant).max_queued_runs;
        let limit = match q.trigger.source {
            TriggerSource::Api
            | TriggerSource::Manual
            | TriggerSource::Webhook
            | TriggerSource::SubWorkflow => max.saturating_add(max / 10),
            TriggerSource::Cron | TriggerSource::Kafka => max,
        };
        let queued = st.queued_of(tenant);
        (queued >= limit as usize).then(|| {
            format!(
                "the queue of waiting runs of tenant {:?} is full: {queued} runs wait for a \
                 slot (max_queued_runs = {max})",
                tenant.as_str()
            )
        })
    }

    /// Announces the tenant's queue as full once it reaches `max_queued_runs`, and as
    /// free once it is back under 95% of it.
    pub(super) fn queue_changed(&mut self, p: i32, tenant: &TenantId, now: DateTime<Utc>) {
        let max = self.quota_for(tenant).max_queued_runs;
        let Some(st) = self.parts.get(&p) else {
            return;
        };
        let queued = st.queued_of(tenant) as u64;
        let was = st.full_queues.contains(tenant);
        let full = if was {
            queued > QueueState::clear_at(max)
        } else {
            queued >= u64::from(max)
        };
        if full != was {
            self.announce_queue(p, tenant, full, now);
        }
    }

    /// Records the tenant's queue as full or free and writes that to the queue-state
    /// topic, with the queue's length and bound.
    pub(super) fn announce_queue(
        &mut self,
        p: i32,
        tenant: &TenantId,
        full: bool,
        now: DateTime<Utc>,
    ) {
        let max = self.quota_for(tenant).max_queued_runs;
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        if full {
            st.full_queues.insert(tenant.clone());
        } else {
            st.full_queues.remove(tenant);
        }
        self.out.push(Output::QueueState(QueueState {
            tenant: tenant.clone(),
            full,
            queued: st.queued_of(tenant) as u64,
            max,
            at: now,
        }));
    }

    fn has_slot(&self, p: i32, tenant: &TenantId, workflow: &WorkflowId, v: &Version) -> bool {
        let Some(st) = self.parts.get(&p) else {
            return false;
        };
        st.running.admits(
            tenant,
            workflow,
            self.quota_for(tenant).max_concurrent_runs,
            v.workflow.definition().max_concurrent_runs,
        )
    }

    fn start(&mut self, p: i32, q: QueuedRun, version: &Version, now: DateTime<Utc>) {
        let tenant = q.trigger.tenant.clone();
        let audit = run_started(&q, version, now);
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
        self.out.push(Output::Audit(audit));
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
                let head = queues
                    .get(&w)
                    .and_then(|q| q.first_key_value())
                    .and_then(|(_, run)| st.queued.get(run));
                let Some(head) = head else {
                    continue;
                };
                let Some(version) = self.catalog.version(tenant, &w, head.version) else {
                    continue;
                };
                if self.has_slot(p, tenant, &w, &version) {
                    picked = Some((w, version));
                    break;
                }
                if st.running.tenant(tenant) >= self.quota_for(tenant).max_concurrent_runs {
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
            self.queue_changed(p, tenant, now);
            self.start(p, q, &version, now);
        }
    }

    pub(super) fn cancel_queued(&mut self, p: i32, run: RunId, reason: &str, now: DateTime<Utc>) {
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        let Some(q) = remove_queued(st, run) else {
            return;
        };
        let tenant = q.trigger.tenant.clone();
        self.dirty
            .insert((p, EntryKey::Queued(tenant.clone(), run)));
        self.queue_changed(p, &tenant, now);
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
        st.finished.record(q.run, &tenant, status, now);
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

pub(super) fn enqueue(st: &mut PartitionState, q: &QueuedRun) {
    let slot = QueuedSlot::new(q);
    st.queues
        .entry(slot.tenant.clone())
        .or_default()
        .entry(slot.workflow.clone())
        .or_default()
        .insert(slot.seq, q.run);
    *st.queued_by_tenant.entry(slot.tenant.clone()).or_default() += 1;
    st.queued.insert(q.run, slot);
}

fn dequeue(st: &mut PartitionState, tenant: &TenantId, workflow: &WorkflowId) -> Option<QueuedRun> {
    let run = *st.queues.get(tenant)?.get(workflow)?.first_key_value()?.1;
    remove_queued(st, run)
}

/// Takes a run out of the queue, wherever it is in it, decoded.
fn remove_queued(st: &mut PartitionState, run: RunId) -> Option<QueuedRun> {
    let slot = st.queued.remove(&run)?;
    if let Some(queues) = st.queues.get_mut(&slot.tenant) {
        if let Some(q) = queues.get_mut(&slot.workflow) {
            q.remove(&slot.seq);
            if q.is_empty() {
                queues.remove(&slot.workflow);
            }
        }
        if queues.is_empty() {
            st.queues.remove(&slot.tenant);
        }
    }
    if let Some(n) = st.queued_by_tenant.get_mut(&slot.tenant) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            st.queued_by_tenant.remove(&slot.tenant);
        }
    }
    slot.queued()
}

/// The audit event of a run's start: by its source (the trigger's, as its `actor`).
fn run_started(q: &QueuedRun, version: &Version, now: DateTime<Utc>) -> aiq_topics::AuditEvent {
    let source = serde_json::to_value(q.trigger.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    aiq_topics::AuditEvent {
        id: uuid::Uuid::new_v5(&q.run.as_uuid(), b"run_started"),
        tenant: q.trigger.tenant.clone(),
        at: now,
        actor: format!("trigger:{source}"),
        action: aiq_topics::AuditAction::RunStarted,
        subject: q.run.to_string(),
        detail: serde_json::json!({
            "workflow": q.trigger.workflow.as_str(),
            "version": version.record.version,
            "source": source,
            "parent_run": q.trigger.parent_run.map(|r| r.to_string()),
        }),
        actor_tenant: None,
        request_id: None,
        outcome: Some("ok".into()),
    }
}
