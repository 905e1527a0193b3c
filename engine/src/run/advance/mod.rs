//! `advance(workflow, state, input, now) -> (state, commands)`: the only way a run moves.
//!
//! Pure: no clock (time is `now`), no randomness (jitter is a hash), no I/O. Stale inputs
//! — a result for an attempt no frame waits for, a timer that was cancelled, anything
//! after the run ended — change nothing and produce nothing, because at-least-once
//! workers and restarts deliver them.
//!
//! This module holds the entry points, the [`Machine`] a transition runs in, and the
//! frame loop that hands each step to its kind. The rest of the machine:
//!
//! - `inputs`: what each [`Input`] does, timers firing among them;
//! - `commands`: the events and timers a transition asks for;
//! - `frames`: frames starting, moving on, failing, ending and being cancelled, and
//!   the run ending;
//! - one module per step kind: `task`, `choice`, `parallel`, `foreach`, `wait`,
//!   `wait_for_event`, `sub_workflow`, `set`, `succeed`, `fail`.

mod choice;
mod commands;
mod fail;
mod foreach;
mod frames;
mod inputs;
mod parallel;
mod set;
mod sub_workflow;
mod succeed;
mod task;
mod wait;
mod wait_for_event;

pub use task::DEFAULT_SCHEDULE_TO_START;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use aiq_topics::{ErrorClass, Failure, RunId, RunStatus, StepId, TenantId};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::definition::StepKind;
use crate::run::io::{Command, Input, Transition};
use crate::run::state::{FrameId, Pending, RunState, STATE_FORMAT, TimerPurpose};
use crate::workflow::{BlockId, Workflow};

/// A task attempt that has not reported this long after its own timeout is failed
/// with class `timeout` by the orchestrator (the worker enforces the timeout itself).
pub const TASK_TIMEOUT_GRACE: chrono::Duration = chrono::Duration::seconds(5);
/// A task without a timeout gets this one.
pub const DEFAULT_TASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Most items one foreach takes.
pub const MAX_FOREACH_ITEMS: usize = 10_000;
/// Most signals kept for steps that do not wait yet.
pub const MAX_BUFFERED_SIGNALS: usize = 64;

/// Applies one input. See the module docs.
pub fn advance(
    wf: &Workflow,
    state: Option<RunState>,
    input: Input,
    now: DateTime<Utc>,
) -> Transition {
    match (state, input) {
        (None, Input::Trigger { run, tenant, input }) => start(wf, run, tenant, input, now),
        (None, _) => Transition {
            state: None,
            commands: Vec::new(),
        },
        (Some(st), Input::Redrive { failed_at }) => redrive(wf, st, failed_at, now),
        (Some(st), input) => {
            if st.is_terminal() || matches!(input, Input::Trigger { .. }) {
                return Transition {
                    state: Some(st),
                    commands: Vec::new(),
                };
            }
            let mut m = Machine::new(wf, st, now);
            m.apply(input);
            Transition {
                state: Some(m.st),
                commands: m.out,
            }
        }
    }
}

fn start(
    wf: &Workflow,
    run: RunId,
    tenant: TenantId,
    input: Value,
    now: DateTime<Utc>,
) -> Transition {
    let def = wf.definition();
    let Some(first) = wf.first_of(&BlockId::Top).cloned() else {
        return Transition {
            state: None,
            commands: Vec::new(),
        };
    };
    let st = RunState {
        format: STATE_FORMAT,
        run,
        tenant,
        workflow: def.id.clone(),
        version: wf.version(),
        content_hash: wf.content_hash().to_owned(),
        status: RunStatus::Running,
        started_at: now,
        finished_at: None,
        input: input.clone(),
        vars: BTreeMap::new(),
        frames: BTreeMap::new(),
        next_frame: 0,
        dispatches: BTreeMap::new(),
        timers: BTreeMap::new(),
        signals: Vec::new(),
        output: None,
        error: None,
        resume: None,
        redrives: 0,
    };
    let mut m = Machine::new(wf, st, now);
    m.emit_run(RunStatus::Running, Some(input), None, None);
    if let Some(t) = def.timeout {
        m.start_timer(
            "run-timeout".into(),
            now + t.as_chrono(),
            TimerPurpose::RunTimeout,
        );
    }
    let root = m.new_frame(None, BlockId::Top, first, None, None);
    m.run_frame(root);
    Transition {
        state: Some(m.st),
        commands: m.out,
    }
}

/// Resumes the failure that ended at `failed_at` from its [`crate::run::state::Resume`]:
/// the run is running again at that step, with fresh attempts, a fresh run timeout and
/// everything else as it was. Anything else (another failure, a run that did not fail,
/// one without a place to resume) changes nothing.
fn redrive(
    wf: &Workflow,
    st: RunState,
    failed_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Transition {
    let redrivable = matches!(st.status, RunStatus::Failed | RunStatus::TimedOut)
        // Milliseconds: the history the request was read from stores no finer.
        && st.finished_at.map(|t| t.timestamp_millis()) == Some(failed_at.timestamp_millis())
        && st.resume.as_ref().is_some_and(|r| wf.step(&r.at).is_some());
    if !redrivable {
        return Transition {
            state: Some(st),
            commands: Vec::new(),
        };
    }
    let mut m = Machine::new(wf, st, now);
    let Some(resume) = m.st.resume.take() else {
        return Transition {
            state: Some(m.st),
            commands: Vec::new(),
        };
    };
    m.st.status = RunStatus::Running;
    m.st.finished_at = None;
    m.st.output = None;
    m.st.error = None;
    m.st.redrives += 1;
    m.emit_run(RunStatus::Running, None, None, None);
    if let Some(t) = wf.definition().timeout {
        m.start_timer(
            "run-timeout".into(),
            now + t.as_chrono(),
            TimerPurpose::RunTimeout,
        );
    }
    let root = m.new_frame(None, BlockId::Top, resume.at, None, None);
    if let Some(f) = m.st.frames.get_mut(&root) {
        f.outputs = resume.outputs;
        f.last = resume.last;
    }
    m.run_frame(root);
    Transition {
        state: Some(m.st),
        commands: m.out,
    }
}

/// One transition in progress: the state it changes and the [`Command`]s it has
/// produced so far.
struct Machine<'w> {
    wf: &'w Workflow,
    st: RunState,
    now: DateTime<Utc>,
    out: Vec<Command>,
    /// Foreach frames whose iterations are being started; a finishing iteration must
    /// not recurse into starting more (thousands of instant iterations would overflow
    /// the stack), the loop already running does it.
    filling: BTreeSet<FrameId>,
    /// The worker's duration of the result being applied; the first step event that
    /// reports its outcome carries it, and only that one.
    result_duration_ms: Option<u64>,
    /// The JSON size of the successful result being applied, for the same event.
    result_output_bytes: Option<u64>,
}

impl<'w> Machine<'w> {
    fn new(wf: &'w Workflow, st: RunState, now: DateTime<Utc>) -> Self {
        Self {
            wf,
            st,
            now,
            out: Vec::new(),
            filling: BTreeSet::new(),
            result_duration_ms: None,
            result_output_bytes: None,
        }
    }
}

/// How running one step leaves its frame.
enum Flow {
    /// The frame is at its next step, ready: the frame loop goes on.
    Next,
    /// The frame waits for something, has ended, or has handed over to frames of its
    /// own: the frame loop stops.
    Stop,
}

/// Why a step cannot go on: an expression error or a value of the wrong kind, which no
/// retry can fix. The frame loop fails the step with class `fatal` and this message.
struct Fatal(String);

impl<E: fmt::Display> From<E> for Fatal {
    fn from(e: E) -> Self {
        Fatal(e.to_string())
    }
}

/// What a child frame's end means for the parallel or foreach step that waits for it.
enum Joined {
    /// Other children are still running.
    Wait,
    /// The step is done with this output.
    Complete(Value),
    /// The step failed.
    Fail(Failure),
    /// A foreach iteration ended well: start the next ones, or complete.
    Fill,
}

fn failure(class: ErrorClass, message: impl Into<String>, step: Option<&StepId>) -> Failure {
    Failure {
        class,
        message: message.into(),
        step: step.cloned(),
    }
}

impl Machine<'_> {
    /// Runs a frame's steps until one has to wait, or the frame ends.
    fn run_frame(&mut self, fid: FrameId) {
        // Bounded: validation refuses loops that never wait, so a frame passes each step
        // at most once per transition; the bound guards against a bug, not a workflow.
        for _ in 0..=(2 * self.wf.step_count() + 2) {
            let Some(frame) = self.st.frames.get(&fid) else {
                return;
            };
            if !matches!(frame.pending, Pending::Ready) || self.st.is_terminal() {
                return;
            }
            // The step borrows from the workflow, not from `self`: nothing is cloned.
            let wf = self.wf;
            let Some((at, info)) = wf.steps.get_key_value(&frame.at) else {
                return;
            };
            match self.run_step(fid, at, &info.step.kind) {
                Ok(Flow::Next) => {}
                Ok(Flow::Stop) => return,
                Err(Fatal(message)) => return self.fatal(fid, message),
            }
        }
    }

    /// Runs the frame's current step, `at`, by its kind.
    fn run_step(&mut self, fid: FrameId, at: &StepId, kind: &StepKind) -> Result<Flow, Fatal> {
        match kind {
            StepKind::Task(_) => Ok(self.run_task(fid)),
            StepKind::Choice(c) => self.run_choice(fid, c),
            StepKind::Parallel(p) => Ok(self.run_parallel(fid, at, p)),
            StepKind::Foreach(f) => self.run_foreach(fid, f),
            StepKind::Wait(w) => self.run_wait(fid, at, w),
            StepKind::WaitForEvent(w) => self.run_wait_for_event(fid, at, w),
            StepKind::SubWorkflow(s) => self.run_sub_workflow(fid, at, s),
            StepKind::Set(s) => self.run_set(fid, s),
            StepKind::Succeed(s) => self.run_succeed(fid, s),
            StepKind::Fail(f) => Ok(self.run_fail(fid, at, f)),
        }
    }
}
