//! Frames: starting one, the expression scope it sees, moving it to its next step,
//! failing its step (into a catch rule or out of the frame), ending it into its parent,
//! cancelling it with everything under it, and ending the run.

use std::collections::BTreeMap;

use aiq_topics::{ErrorClass, Failure, RunStatus, StepId, StepStatus};
use serde_json::{Value, json};

use super::{Joined, Machine, failure, foreach, parallel};
use crate::expr::{RunScope, Scope};
use crate::run::io::Command;
use crate::run::state::{Frame, FrameId, Parent, Pending, Resume};
use crate::workflow::BlockId;

impl Machine<'_> {
    pub(super) fn new_frame(
        &mut self,
        parent: Option<Parent>,
        block: BlockId,
        at: StepId,
        item: Option<Value>,
        index: Option<u64>,
    ) -> FrameId {
        let id = self.st.next_frame;
        self.st.next_frame += 1;
        self.st.frames.insert(
            id,
            Frame {
                parent,
                block,
                at,
                pending: Pending::Ready,
                outputs: BTreeMap::new(),
                last: Value::Null,
                item,
                index,
                tries: 0,
            },
        );
        id
    }

    pub(super) fn scope(&self, fid: FrameId) -> Scope<'_> {
        let mut steps = Vec::new();
        let (mut item, mut index) = (None, None);
        let mut cur = self.st.frames.get(&fid);
        while let Some(f) = cur {
            steps.push(&f.outputs);
            // The innermost loop's item wins.
            if index.is_none() && f.index.is_some() {
                item = f.item.as_ref();
                index = f.index;
            }
            cur = f.parent.and_then(|p| self.st.frames.get(&p.frame));
        }
        steps.reverse();
        Scope {
            input: &self.st.input,
            vars: &self.st.vars,
            steps,
            item,
            index,
            run: RunScope {
                id: &self.st.run,
                tenant: self.st.tenant.as_str(),
                workflow: self.st.workflow.as_str(),
                version: self.st.version,
            },
        }
    }

    pub(super) fn set_pending(&mut self, fid: FrameId, pending: Pending) {
        if let Some(f) = self.st.frames.get_mut(&fid) {
            f.pending = pending;
        }
    }

    pub(super) fn goto(&mut self, fid: FrameId, next: StepId) {
        if let Some(f) = self.st.frames.get_mut(&fid) {
            f.at = next;
            f.pending = Pending::Ready;
            f.tries = 0;
        }
    }

    /// The current step finished with `output`; move on (or end the frame).
    pub(super) fn complete_step(&mut self, fid: FrameId, output: Value) {
        let Some(frame) = self.st.frames.get(&fid) else {
            return;
        };
        let at = frame.at.clone();
        let attempt = match frame.pending {
            Pending::Task { attempt } => attempt,
            _ => 1,
        };
        self.emit_step(fid, StepStatus::Succeeded, attempt, None);
        let next = self.wf.next_after(&at);
        let Some(f) = self.st.frames.get_mut(&fid) else {
            return;
        };
        f.outputs.insert(at, output.clone());
        // The output is copied only as often as it is kept.
        match next {
            Some(next) => {
                f.last = output;
                self.goto(fid, next);
            }
            None => {
                f.last = output.clone();
                self.finish_frame(fid, Ok(output));
            }
        }
    }

    /// The current step fails with class `fatal`: an expression error or a value of the
    /// wrong kind, which no retry can fix.
    pub(super) fn fatal(&mut self, fid: FrameId, message: impl Into<String>) {
        let at = self.st.frames.get(&fid).map(|f| f.at.clone());
        self.fail_step(fid, failure(ErrorClass::Fatal, message, at.as_ref()));
    }

    pub(super) fn fail_step(&mut self, fid: FrameId, err: Failure) {
        self.fail_step_attempt(fid, err, 1);
    }

    /// The current step failed for good: a matching catch rule takes over, else the
    /// frame fails.
    pub(super) fn fail_step_attempt(&mut self, fid: FrameId, err: Failure, attempt: u32) {
        let Some(frame) = self.st.frames.get(&fid) else {
            return;
        };
        let at = frame.at.clone();
        let status = if err.class == ErrorClass::Timeout {
            StepStatus::TimedOut
        } else {
            StepStatus::Failed
        };
        self.emit_step(fid, status, attempt, Some(err.clone()));
        let rule = self
            .wf
            .step(&at)
            .and_then(|i| {
                i.step
                    .catch
                    .iter()
                    .find(|r| r.errors.iter().any(|e| e.matches(err.class)))
            })
            .cloned();
        match rule {
            Some(rule) => {
                if let Some(name) = &rule.store_as {
                    self.st.vars.insert(
                        name.clone(),
                        json!({ "class": err.class.as_str(), "message": err.message, "step": at.as_str() }),
                    );
                }
                self.goto(fid, rule.next);
                self.run_frame(fid);
            }
            None => self.finish_frame(fid, Err(err)),
        }
    }

    /// A frame's block ended. The root ends the run; any other frame reports to its parent.
    pub(super) fn finish_frame(&mut self, fid: FrameId, result: Result<Value, Failure>) {
        self.cancel_frame_timers(fid);
        let Some(frame) = self.st.frames.remove(&fid) else {
            return;
        };
        let Some(parent) = frame.parent else {
            match result {
                Ok(output) => self.finish_run(RunStatus::Succeeded, Some(output), None),
                Err(e) => {
                    self.st.resume = Some(Resume {
                        at: frame.at,
                        outputs: frame.outputs,
                        last: frame.last,
                    });
                    self.finish_run(RunStatus::Failed, None, Some(e));
                }
            }
            return;
        };
        // A finished branch's step outputs stay readable after the parallel step.
        if result.is_ok()
            && frame.index.is_none()
            && let Some(p) = self.st.frames.get_mut(&parent.frame)
        {
            p.outputs.extend(frame.outputs);
        }
        self.child_done(parent.frame, parent.slot, result);
    }

    /// The child frame in `slot` of frame `pid` ended: the parallel or foreach step
    /// there decides (see `parallel::branch_ended`, `foreach::iteration_ended`).
    fn child_done(&mut self, pid: FrameId, slot: u64, result: Result<Value, Failure>) {
        let Some(parent) = self.st.frames.get_mut(&pid) else {
            return;
        };
        let mut cancel: Vec<u64> = Vec::new();
        let next = match &mut parent.pending {
            Pending::Branches {
                join,
                fail_fast,
                open,
                done,
                failure: first_failure,
            } => parallel::branch_ended(
                parallel::Branches {
                    join: *join,
                    fail_fast: *fail_fast,
                    open,
                    done,
                    first_failure,
                },
                slot,
                result,
                &mut cancel,
            ),
            Pending::Foreach { open, done, .. } => {
                foreach::iteration_ended(open, done, slot, result, &mut cancel)
            }
            _ => Joined::Wait,
        };
        for slot in cancel {
            let child = self
                .st
                .frames
                .iter()
                .find(|(_, f)| f.parent == Some(Parent { frame: pid, slot }))
                .map(|(id, _)| *id);
            if let Some(c) = child {
                self.cancel_frame(c);
            }
        }
        match next {
            Joined::Wait => {}
            Joined::Fill => self.fill_foreach(pid),
            Joined::Complete(v) => {
                self.complete_step(pid, v);
                self.run_frame(pid);
            }
            Joined::Fail(f) => self.fail_step(pid, f),
        }
    }

    /// Stops a frame and everything under it.
    pub(super) fn cancel_frame(&mut self, fid: FrameId) {
        let children: Vec<FrameId> = self
            .st
            .frames
            .iter()
            .filter(|(_, f)| f.parent.is_some_and(|p| p.frame == fid))
            .map(|(id, _)| *id)
            .collect();
        for c in children {
            self.cancel_frame(c);
        }
        self.cancel_frame_timers(fid);
        let Some(frame) = self.st.frames.get(&fid) else {
            return;
        };
        let attempt = match frame.pending {
            Pending::Task { attempt } => attempt,
            _ => 1,
        };
        if let Pending::Child { run } = frame.pending {
            self.out.push(Command::CancelSubWorkflow { child_run: run });
        }
        if !matches!(frame.pending, Pending::Ready) {
            self.emit_step(fid, StepStatus::Cancelled, attempt, None);
        }
        self.st.frames.remove(&fid);
    }

    pub(super) fn finish_run(
        &mut self,
        status: RunStatus,
        output: Option<Value>,
        error: Option<Failure>,
    ) {
        // A run that times out is resumed where its top level waits.
        if matches!(status, RunStatus::Failed | RunStatus::TimedOut) && self.st.resume.is_none() {
            self.st.resume = self
                .st
                .frames
                .values()
                .find(|f| f.parent.is_none())
                .map(|f| Resume {
                    at: f.at.clone(),
                    outputs: f.outputs.clone(),
                    last: f.last.clone(),
                });
        }
        let roots: Vec<FrameId> = self
            .st
            .frames
            .iter()
            .filter(|(_, f)| f.parent.is_none())
            .map(|(id, _)| *id)
            .collect();
        for r in roots {
            self.cancel_frame(r);
        }
        for (id, _) in std::mem::take(&mut self.st.timers) {
            self.out.push(Command::CancelTimer { id });
        }
        self.st.signals.clear();
        self.st.status = status;
        self.st.finished_at = Some(self.now);
        self.st.output = output.clone();
        self.st.error = error.clone();
        self.emit_run(status, None, output.clone(), error.clone());
        self.out.push(Command::CompleteRun {
            status,
            output,
            error,
        });
    }
}
