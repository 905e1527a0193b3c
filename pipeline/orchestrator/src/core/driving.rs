//! Driving runs: a signal or a result reaches its run (only a run of the tenant it
//! came from), the engine advances the run, and what it decided is applied — tasks,
//! events, sub-workflow starts and cancels, the parent told of a finished child, the
//! timer index, the run stored or finished.

use std::collections::{BTreeSet, VecDeque};

use aiq_engine::{Input, Transition, Version, advance};
use aiq_topics::{
    DeadLetterKind, ErrorClass, Event, RunId, RunStatus, SignalAction, SignalEvent, StepId,
    TaskOutcome, TaskResult, TriggerEvent, TriggerSource,
};
use chrono::{DateTime, Utc};

use super::state::{StoredRun, inflight_of, owner_of};
use super::{Core, NeedDefinitions, Origin, Output, Record};
use crate::changelog::{EntryKey, LiveRun};

impl Core {
    pub(super) fn signal(
        &mut self,
        rec: &Record<'_>,
        s: SignalEvent,
        now: DateTime<Utc>,
        definitions_fresh: bool,
    ) -> Result<(), NeedDefinitions> {
        let p = rec.partition;
        if matches!(s.action, SignalAction::Redrive { .. }) {
            return self.redrive(rec, s, now, definitions_fresh);
        }
        if matches!(s.action, SignalAction::Erase) {
            self.forget_erased(p, &s);
            return Ok(());
        }
        if let SignalAction::CancelTenant { reason } = &s.action {
            return self.cancel_tenant(rec, &s.tenant, reason, now, definitions_fresh);
        }
        let Some(st) = self.parts.get(&p) else {
            return Ok(());
        };
        // Run ids are global and tenants share partitions: a signal acts only on a run
        // of the tenant it came from, and another tenant's run looks like no run.
        let queued = st.queued.contains_key(&s.run);
        match owner_of(st, &s.run) {
            None => {
                // Its trigger may still be behind in the partition: kept for the run.
                self.keep_early(rec, s, now);
                return Ok(());
            }
            Some(owner) if owner != s.tenant => {
                let reason = format!(
                    "run {} is not in flight for tenant {:?}",
                    s.run,
                    s.tenant.as_str()
                );
                self.dead_letter(rec, DeadLetterKind::UnknownRun, reason);
                return Ok(());
            }
            Some(_) => {}
        }
        if let Some(f) = st.finished.get(&s.run) {
            let reason = format!("run {} already ended ({})", s.run, f.status.as_str());
            self.dead_letter(rec, DeadLetterKind::UnknownRun, reason);
            return Ok(());
        }
        if queued && matches!(s.action, SignalAction::Signal { .. }) {
            // Delivered when the run starts, after any kept before it.
            self.keep_early(rec, s, now);
            return Ok(());
        }
        let input = Input::from(s.action);
        self.drive(p, s.run, input, now, Origin::Record(rec, definitions_fresh))
    }

    pub(super) fn result(
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
        } else if owned && st.finished.contains(&r.run) {
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

    /// Feeds `input` to `run` and everything that follows from it (a finished child
    /// tells its parent, a cancelled parent its children) within this partition.
    ///
    /// When the run's definition is missing, nothing changes: a record's input asks for
    /// the catalog to be caught up (`NeedDefinitions`, before anything else is done),
    /// then goes to the dead-letter topic; a timer or a follow-up input is logged.
    pub(super) fn drive(
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
                    Some(Origin::Timer | Origin::Early) | None => {
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
    pub(super) fn apply(
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
        let t = match super::limits::oversize(&self.settings, &t) {
            Some(message) => {
                tracing::warn!(%run, %message, "run too large; it fails");
                super::limits::fail_too_large(t, message, now)
            }
            None => t,
        };
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
                    let notify = version.workflow.definition().notify.as_ref().or_else(|| {
                        self.settings
                            .tenants
                            .get(&tenant)
                            .and_then(|t| t.notify.as_ref())
                    });
                    if let Some(n) = notify.map(aiq_engine::definition::Notify::to_spec)
                        && n.on.contains(&status)
                    {
                        self.out
                            .push(Output::Notification(aiq_topics::Notification {
                                tenant: tenant.clone(),
                                run,
                                workflow: state.workflow.clone(),
                                version: state.version,
                                status,
                                at: now,
                                error: error.clone(),
                                spec: n,
                            }));
                    }
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
            let ended = state.finished_at.unwrap_or(now);
            st.finished.record(run, &tenant, state.status, ended);
            st.running.remove(&tenant, &workflow);
            let max = self.settings.redrive_max_runs;
            if self.settings.redrive_retention_secs > 0
                && max > 0
                && super::redrive::keeps(state.status, parent.is_some(), state.resume.is_some())
            {
                let stored = StoredRun::new(LiveRun { parent, state });
                for (t, pushed) in st.redrivable.insert(run, ended, stored, max) {
                    self.dirty.insert((p, EntryKey::Run(t, pushed)));
                }
            }
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
}
