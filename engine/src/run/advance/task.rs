//! The task step: dispatching attempts to workers, the timeout of each attempt, and
//! retries with backoff after a failure the step's policy retries.

use aiq_topics::{ErrorClass, StepId, StepStatus, TaskMessage};

use super::{DEFAULT_TASK_TIMEOUT, Flow, Machine, TASK_TIMEOUT_GRACE, failure};
use crate::definition::StepKind;
use crate::run::io::Command;
use crate::run::retry;
use crate::run::state::{FrameId, Pending, TimerPurpose};

/// How long an attempt may wait for a worker when its step sets no
/// `schedule_to_start`: long enough for a worker to be restarted or a backlog to drain,
/// so that a crash delays a run rather than failing it.
pub const DEFAULT_SCHEDULE_TO_START: std::time::Duration = std::time::Duration::from_secs(600);

impl Machine<'_> {
    /// Dispatches the first attempt; the step waits for its result.
    pub(super) fn run_task(&mut self, fid: FrameId) -> Flow {
        self.dispatch(fid);
        Flow::Stop
    }

    /// The next dispatch number of `step` in this run (task attempts and sub-workflow
    /// runs count alike).
    pub(super) fn next_dispatch(&mut self, step: &StepId) -> u32 {
        if let Some(seq) = self.st.dispatches.get_mut(step) {
            *seq += 1;
            return *seq;
        }
        self.st.dispatches.insert(step.clone(), 1);
        1
    }

    /// Dispatches the frame's current task step as a new attempt.
    pub(super) fn dispatch(&mut self, fid: FrameId) {
        let Some(frame) = self.st.frames.get(&fid) else {
            return;
        };
        // Borrowed from the workflow, not the state, so that the state can change.
        let wf = self.wf;
        let Some((at, StepKind::Task(task))) = wf
            .steps
            .get_key_value(&frame.at)
            .map(|(id, i)| (id, &i.step.kind))
        else {
            return;
        };
        let args = match wf.exprs.render(&task.args, &self.scope(fid)) {
            Ok(a) => a,
            Err(e) => {
                return self.fatal(fid, e.to_string());
            }
        };
        let seq = self.next_dispatch(at);
        let timeout = task.timeout.map_or(DEFAULT_TASK_TIMEOUT, |t| t.0);
        let schedule_to_start = task
            .schedule_to_start
            .map_or(DEFAULT_SCHEDULE_TO_START, |t| t.0);
        // The worker cuts a call off `timeout` after it picks the task up; the backstop
        // also allows for the wait before that (schedule-to-start), so only a task no
        // worker answers at all fails here. The task expires at the same instant: a
        // worker picking it up later would run work whose outcome no longer counts.
        let due = self
            .now
            .checked_add_signed(std_to_chrono(schedule_to_start))
            .and_then(|t| t.checked_add_signed(std_to_chrono(timeout)))
            .and_then(|t| t.checked_add_signed(TASK_TIMEOUT_GRACE))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        if let Some(f) = self.st.frames.get_mut(&fid) {
            f.tries += 1;
            f.pending = Pending::Task { attempt: seq };
        }
        self.emit_step(fid, StepStatus::Started, seq, None);
        self.out.push(Command::DispatchTask(TaskMessage {
            tenant: self.st.tenant.clone(),
            run: self.st.run,
            step: at.clone(),
            attempt: seq,
            connector: task.connector.as_str().to_owned(),
            args,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            dispatched_at: self.now,
            expires_at: Some(due),
        }));
        self.start_timer(
            task_timeout_id(at, seq),
            due,
            TimerPurpose::TaskTimeout {
                frame: fid,
                attempt: seq,
            },
        );
    }

    /// The attempt the frame waits for failed: retried after a backoff if the step's
    /// policy says so, else the step fails.
    pub(super) fn task_failed(&mut self, fid: FrameId, class: ErrorClass, message: String) {
        let Some(frame) = self.st.frames.get(&fid) else {
            return;
        };
        let at = frame.at.clone();
        let tries = frame.tries;
        let attempt = match frame.pending {
            Pending::Task { attempt } => attempt,
            _ => return,
        };
        self.cancel_timer(&task_timeout_id(&at, attempt));
        let err = failure(class, message, Some(&at));
        let retry = match self.wf.step(&at).map(|i| &i.step.kind) {
            Some(StepKind::Task(t)) => t.retry.clone(),
            _ => None,
        };
        if let Some(policy) = retry
            && policy.retry_on.contains(&class)
            && tries < policy.max_attempts
        {
            {
                let delay = retry::backoff(&policy, tries, &self.st.run, &at);
                self.emit_step(fid, StepStatus::Retrying, attempt, Some(err));
                self.set_pending(fid, Pending::Backoff);
                self.start_timer(
                    format!("retry/{fid}/{at}/{attempt}"),
                    self.now + delay,
                    TimerPurpose::Retry { frame: fid },
                );
                return;
            }
        }
        self.fail_step_attempt(fid, err, attempt);
    }
}

fn std_to_chrono(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The id of the timer that fails attempt `attempt` of `step` if no result comes.
pub(super) fn task_timeout_id(step: &StepId, attempt: u32) -> String {
    format!("timeout/{step}/{attempt}")
}
