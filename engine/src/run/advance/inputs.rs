//! What each input does to a run that exists: a task's result, a sub-workflow's end, a
//! timer firing, a signal, a cancellation. Inputs nothing waits for change nothing.

use aiq_topics::{ErrorClass, RunStatus, StepId, TaskOutcome};
use serde_json::Value;

use super::task::task_timeout_id;
use super::wait_for_event::signal_matches;
use super::{MAX_BUFFERED_SIGNALS, Machine, failure};
use crate::run::io::Input;
use crate::run::state::{BufferedSignal, FrameId, Pending, TimerPurpose};

impl Machine<'_> {
    pub(super) fn apply(&mut self, input: Input) {
        match input {
            Input::Trigger { .. } | Input::Redrive { .. } => {}
            Input::StepResult(r) => {
                let Some(fid) = self.frame_awaiting_task(&r.step, r.attempt) else {
                    return;
                };
                self.cancel_timer(&task_timeout_id(&r.step, r.attempt));
                self.result_duration_ms =
                    u64::try_from((r.finished_at - r.started_at).num_milliseconds()).ok();
                match r.outcome {
                    TaskOutcome::Ok { output } => {
                        self.result_output_bytes = Some(aiq_topics::json_size(&output) as u64);
                        self.complete_step(fid, output);
                        self.run_frame(fid);
                    }
                    TaskOutcome::Error { class, message } => self.task_failed(fid, class, message),
                }
            }
            Input::ChildCompleted { child_run, outcome } => {
                let found = self
                    .st
                    .frames
                    .iter()
                    .find(|(_, f)| matches!(f.pending, Pending::Child { run } if run == child_run))
                    .map(|(id, _)| *id);
                let Some(fid) = found else { return };
                match outcome {
                    TaskOutcome::Ok { output } => {
                        self.result_output_bytes = Some(aiq_topics::json_size(&output) as u64);
                        self.complete_step(fid, output);
                        self.run_frame(fid);
                    }
                    TaskOutcome::Error { class, message } => {
                        let at = self.st.frames[&fid].at.clone();
                        self.fail_step(fid, failure(class, message, Some(&at)));
                    }
                }
            }
            Input::TimerFired { id } => {
                let Some(timer) = self.st.timers.remove(&id) else {
                    return;
                };
                self.timer_fired(timer.purpose);
            }
            Input::Signal {
                name,
                correlation,
                payload,
            } => {
                let found = self
                    .st
                    .frames
                    .iter()
                    .find(|(_, f)| signal_matches(&f.pending, &name, correlation.as_deref()))
                    .map(|(id, _)| *id);
                match found {
                    Some(fid) => self.deliver_signal(fid, payload),
                    None => {
                        if self.st.signals.len() >= MAX_BUFFERED_SIGNALS {
                            self.st.signals.remove(0);
                        }
                        self.st.signals.push(BufferedSignal {
                            name,
                            correlation,
                            payload,
                        });
                    }
                }
            }
            Input::Cancel { reason } => self.finish_run(
                RunStatus::Cancelled,
                None,
                Some(failure(
                    ErrorClass::Fatal,
                    format!("cancelled: {reason}"),
                    None,
                )),
            ),
        }
    }

    fn timer_fired(&mut self, purpose: TimerPurpose) {
        match purpose {
            TimerPurpose::RunTimeout => {
                let msg = match self.wf.definition().timeout {
                    Some(t) => format!("the run exceeded its timeout of {t}"),
                    None => "the run exceeded its timeout".to_owned(),
                };
                self.finish_run(
                    RunStatus::TimedOut,
                    None,
                    Some(failure(ErrorClass::Timeout, msg, None)),
                );
            }
            TimerPurpose::Retry { frame } => {
                if matches!(
                    self.st.frames.get(&frame).map(|f| &f.pending),
                    Some(Pending::Backoff)
                ) {
                    self.dispatch(frame);
                }
            }
            TimerPurpose::TaskTimeout { frame, attempt } => {
                if matches!(self.st.frames.get(&frame).map(|f| &f.pending), Some(Pending::Task { attempt: a }) if *a == attempt)
                {
                    self.task_failed(
                        frame,
                        ErrorClass::Timeout,
                        "no result within the step's timeout".into(),
                    );
                }
            }
            TimerPurpose::Wait { frame } => {
                if matches!(
                    self.st.frames.get(&frame).map(|f| &f.pending),
                    Some(Pending::Timer)
                ) {
                    self.complete_step(frame, Value::Null);
                    self.run_frame(frame);
                }
            }
            TimerPurpose::SignalTimeout { frame } => {
                if let Some(Pending::Signal { name, .. }) =
                    self.st.frames.get(&frame).map(|f| f.pending.clone())
                {
                    let at = self.st.frames[&frame].at.clone();
                    self.fail_step(
                        frame,
                        failure(
                            ErrorClass::Timeout,
                            format!("no signal {name:?} arrived in time"),
                            Some(&at),
                        ),
                    );
                }
            }
        }
    }

    fn frame_awaiting_task(&self, step: &StepId, attempt: u32) -> Option<FrameId> {
        self.st
            .frames
            .iter()
            .find(|(_, f)| {
                &f.at == step && matches!(f.pending, Pending::Task { attempt: a } if a == attempt)
            })
            .map(|(id, _)| *id)
    }
}
