//! The in-flight task quota: tasks dispatched and not yet answered count against the
//! tenant's and the workflow's limits; a task over a limit waits in line (in the
//! changelog) and goes out, oldest first, as answers free slots.

use std::collections::BTreeSet;

use aiq_engine::Version;
use aiq_topics::{RunId, StepId, TaskMessage, TenantId, WorkflowId};

use super::{Core, Output};
use crate::changelog::{EntryKey, HeldTask};

impl Core {
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
    pub(super) fn settle_tasks(
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
            self.quota_for(tenant).max_inflight_tasks,
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
        let tenant_max = self.quota_for(tenant).max_inflight_tasks;
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
}
