//! `advance(workflow, state, input, now) -> (state, commands)`: the only way a run moves.
//!
//! Pure: no clock (time is `now`), no randomness (jitter is a hash), no I/O. Stale inputs
//! — a result for an attempt no frame waits for, a timer that was cancelled, anything
//! after the run ended — change nothing and produce nothing, because at-least-once
//! workers and restarts deliver them.

use std::collections::{BTreeMap, BTreeSet};

use aiq_topics::{
    ErrorClass, Failure, RunEvent, RunId, RunStatus, StepEvent, StepId, StepStatus, TaskMessage,
    TaskOutcome, TenantId,
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::definition::{Join, StepKind};
use crate::expr::Scope;
use crate::run::io::{Command, Input, Transition};
use crate::run::retry;
use crate::run::state::{
    BufferedSignal, Frame, FrameId, Parent, Pending, RunState, STATE_FORMAT, Timer, TimerPurpose,
};
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

/// The length of `v` as compact JSON, counted without building the string.
fn json_size(v: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a Value into a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

fn failure(class: ErrorClass, message: impl Into<String>, step: Option<&StepId>) -> Failure {
    Failure {
        class,
        message: message.into(),
        step: step.cloned(),
    }
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

impl Machine<'_> {
    // ------------------------------------------------------------ inputs

    fn apply(&mut self, input: Input) {
        match input {
            Input::Trigger { .. } => {}
            Input::StepResult(r) => {
                let Some(fid) = self.frame_awaiting_task(&r.step, r.attempt) else {
                    return;
                };
                self.cancel_timer(&task_timeout_id(&r.step, r.attempt));
                self.result_duration_ms =
                    u64::try_from((r.finished_at - r.started_at).num_milliseconds()).ok();
                match r.outcome {
                    TaskOutcome::Ok { output } => {
                        self.result_output_bytes = Some(json_size(&output));
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
                        self.result_output_bytes = Some(json_size(&output));
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

    // ------------------------------------------------------------ commands

    fn emit_run(
        &mut self,
        status: RunStatus,
        input: Option<Value>,
        output: Option<Value>,
        error: Option<Failure>,
    ) {
        self.out.push(Command::EmitRun(RunEvent {
            tenant: self.st.tenant.clone(),
            run: self.st.run,
            workflow: self.st.workflow.clone(),
            version: self.st.version,
            status,
            at: self.now,
            input,
            output,
            error,
            started_at: status.is_terminal().then_some(self.st.started_at),
            source: None,
            scheduled_at: None,
        }));
    }

    fn emit_step(
        &mut self,
        fid: FrameId,
        status: StepStatus,
        attempt: u32,
        error: Option<Failure>,
    ) {
        let Some(frame) = self.st.frames.get(&fid) else {
            return;
        };
        let Some(info) = self.wf.step(&frame.at) else {
            return;
        };
        let connector = match &info.step.kind {
            StepKind::Task(t) => Some(t.connector.as_str().to_owned()),
            _ => None,
        };
        let duration_ms = match status {
            StepStatus::Succeeded
            | StepStatus::Failed
            | StepStatus::TimedOut
            | StepStatus::Retrying => self.result_duration_ms.take(),
            _ => None,
        };
        self.out.push(Command::EmitStep(StepEvent {
            tenant: self.st.tenant.clone(),
            run: self.st.run,
            step: frame.at.clone(),
            attempt,
            status,
            at: self.now,
            kind: info.step.kind.name().to_owned(),
            connector,
            error,
            iteration: frame.index,
            duration_ms,
            output_bytes: if status == StepStatus::Succeeded {
                self.result_output_bytes.take()
            } else {
                None
            },
        }));
    }

    fn start_timer(&mut self, id: String, due: DateTime<Utc>, purpose: TimerPurpose) {
        self.st.timers.insert(id.clone(), Timer { due, purpose });
        self.out.push(Command::StartTimer { id, due });
    }

    fn cancel_timer(&mut self, id: &str) {
        if self.st.timers.remove(id).is_some() {
            self.out.push(Command::CancelTimer { id: id.to_owned() });
        }
    }

    /// Cancels every timer that belongs to a frame.
    fn cancel_frame_timers(&mut self, fid: FrameId) {
        let ids: Vec<String> = self
            .st
            .timers
            .iter()
            .filter(|(_, t)| match t.purpose {
                TimerPurpose::Retry { frame }
                | TimerPurpose::TaskTimeout { frame, .. }
                | TimerPurpose::Wait { frame }
                | TimerPurpose::SignalTimeout { frame } => frame == fid,
                TimerPurpose::RunTimeout => false,
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.cancel_timer(&id);
        }
    }

    // ------------------------------------------------------------ frames

    fn new_frame(
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

    fn scope(&self, fid: FrameId) -> Scope<'_> {
        let mut chain = Vec::new();
        let mut cur = self.st.frames.get(&fid);
        while let Some(f) = cur {
            chain.push(f);
            cur = f.parent.and_then(|p| self.st.frames.get(&p.frame));
        }
        let mut steps = BTreeMap::new();
        let (mut item, mut index) = (None, None);
        for f in chain.iter().rev() {
            for (k, v) in &f.outputs {
                steps.insert(k.as_str().to_owned(), v.clone());
            }
        }
        // The innermost loop's item wins.
        for f in &chain {
            if f.index.is_some() {
                item = f.item.as_ref();
                index = f.index;
                break;
            }
        }
        Scope {
            input: &self.st.input,
            vars: &self.st.vars,
            steps,
            item,
            index,
            run: json!({
                "id": self.st.run.to_string(),
                "tenant": self.st.tenant.as_str(),
                "workflow": self.st.workflow.as_str(),
                "version": self.st.version,
            }),
        }
    }

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
            let at = frame.at.clone();
            let Some(info) = self.wf.step(&at) else {
                return;
            };
            let kind = info.step.kind.clone();
            match kind {
                StepKind::Task(_) => {
                    self.dispatch(fid);
                    return;
                }
                StepKind::Choice(c) => {
                    self.emit_step(fid, StepStatus::Started, 1, None);
                    let mut target = None;
                    for case in &c.cases {
                        match self.wf.exprs.eval(&case.when, &self.scope(fid)) {
                            Ok(Value::Bool(true)) => {
                                target = Some(case.next.clone());
                                break;
                            }
                            Ok(Value::Bool(false)) => {}
                            Ok(other) => {
                                return self.fatal(
                                    fid,
                                    format!(
                                        "`when: {}` gave {other}, not true or false",
                                        case.when
                                    ),
                                );
                            }
                            Err(e) => {
                                return self.fatal(fid, e.to_string());
                            }
                        }
                    }
                    match target.or(c.default) {
                        Some(next) => {
                            self.emit_step(fid, StepStatus::Succeeded, 1, None);
                            self.goto(fid, next);
                        }
                        None => {
                            return self
                                .fatal(fid, "no case matched and the choice has no default");
                        }
                    }
                }
                StepKind::Parallel(p) => {
                    self.emit_step(fid, StepStatus::Started, 1, None);
                    let open: BTreeSet<u64> = (0..p.branches.len() as u64).collect();
                    self.set_pending(
                        fid,
                        Pending::Branches {
                            join: p.join,
                            fail_fast: p.fail_fast,
                            open: open.clone(),
                            done: BTreeMap::new(),
                            failure: None,
                        },
                    );
                    let mut children = Vec::new();
                    for slot in open {
                        let block = BlockId::Branch {
                            step: at.clone(),
                            index: slot as usize,
                        };
                        if let Some(first) = self.wf.first_of(&block).cloned() {
                            children.push(self.new_frame(
                                Some(Parent { frame: fid, slot }),
                                block,
                                first,
                                None,
                                None,
                            ));
                        }
                    }
                    for c in children {
                        self.run_frame(c);
                    }
                    return;
                }
                StepKind::Foreach(f) => {
                    self.emit_step(fid, StepStatus::Started, 1, None);
                    let items = match self.wf.exprs.eval(&f.items, &self.scope(fid)) {
                        Ok(Value::Array(items)) => items,
                        Ok(other) => {
                            return self.fatal(
                                fid,
                                format!("`items: {}` gave {other}, not a list", f.items),
                            );
                        }
                        Err(e) => {
                            return self.fatal(fid, e.to_string());
                        }
                    };
                    if items.len() > MAX_FOREACH_ITEMS {
                        return self.fatal(
                            fid,
                            format!(
                                "{} items; a foreach takes at most {MAX_FOREACH_ITEMS}",
                                items.len()
                            ),
                        );
                    }
                    if items.is_empty() {
                        self.complete_step(fid, Value::Array(Vec::new()));
                        continue;
                    }
                    self.set_pending(
                        fid,
                        Pending::Foreach {
                            items,
                            started: 0,
                            concurrency: f.concurrency,
                            open: BTreeSet::new(),
                            done: BTreeMap::new(),
                        },
                    );
                    self.fill_foreach(fid);
                    return;
                }
                StepKind::Wait(w) => {
                    let due = match (w.duration, &w.until) {
                        (Some(d), _) => self.now + d.as_chrono(),
                        (None, Some(until)) => match self.wf.exprs.eval(until, &self.scope(fid)) {
                            Ok(Value::String(s)) => match DateTime::parse_from_rfc3339(&s) {
                                Ok(t) => t.with_timezone(&Utc),
                                Err(e) => {
                                    return self.fatal(
                                        fid,
                                        format!("`until` gave {s:?}, not an RFC 3339 time: {e}"),
                                    );
                                }
                            },
                            Ok(other) => {
                                return self
                                    .fatal(fid, format!("`until` gave {other}, not a time"));
                            }
                            Err(e) => {
                                return self.fatal(fid, e.to_string());
                            }
                        },
                        (None, None) => self.now,
                    };
                    if due <= self.now {
                        self.emit_step(fid, StepStatus::Started, 1, None);
                        self.complete_step(fid, Value::Null);
                        continue;
                    }
                    self.emit_step(fid, StepStatus::Waiting, 1, None);
                    self.set_pending(fid, Pending::Timer);
                    self.start_timer(
                        format!("wait/{fid}/{at}"),
                        due,
                        TimerPurpose::Wait { frame: fid },
                    );
                    return;
                }
                StepKind::WaitForEvent(w) => {
                    let correlation = match &w.correlation {
                        None => None,
                        Some(expr) => match self.wf.exprs.eval(expr, &self.scope(fid)) {
                            Ok(Value::String(s)) => Some(s),
                            Ok(other) => Some(other.to_string()),
                            Err(e) => {
                                return self.fatal(fid, e.to_string());
                            }
                        },
                    };
                    let pending = Pending::Signal {
                        name: w.signal.clone(),
                        correlation: correlation.clone(),
                    };
                    self.emit_step(fid, StepStatus::Waiting, 1, None);
                    // A signal that came early is used now.
                    if let Some(i) =
                        self.st.signals.iter().position(|s| {
                            signal_matches(&pending, &s.name, s.correlation.as_deref())
                        })
                    {
                        let s = self.st.signals.remove(i);
                        self.complete_step(fid, s.payload);
                        continue;
                    }
                    self.set_pending(fid, pending);
                    if let Some(t) = w.timeout {
                        self.start_timer(
                            format!("signal-timeout/{fid}/{at}"),
                            self.now + t.as_chrono(),
                            TimerPurpose::SignalTimeout { frame: fid },
                        );
                    }
                    return;
                }
                StepKind::SubWorkflow(s) => {
                    let input = match self.wf.exprs.render(&s.input, &self.scope(fid)) {
                        Ok(v) => v,
                        Err(e) => {
                            return self.fatal(fid, e.to_string());
                        }
                    };
                    let seq = self.next_dispatch(&at);
                    let child_run = RunId::from_uuid(Uuid::new_v5(
                        &self.st.run.as_uuid(),
                        format!("{at}/{seq}").as_bytes(),
                    ));
                    self.emit_step(fid, StepStatus::Waiting, seq, None);
                    self.set_pending(fid, Pending::Child { run: child_run });
                    self.out.push(Command::StartSubWorkflow {
                        child_run,
                        workflow: s.workflow.clone(),
                        version: s.version,
                        input,
                    });
                    return;
                }
                StepKind::Set(s) => {
                    self.emit_step(fid, StepStatus::Started, 1, None);
                    let mut assigned = serde_json::Map::new();
                    for (name, template) in &s.vars {
                        match self.wf.exprs.render(template, &self.scope(fid)) {
                            Ok(v) => {
                                assigned.insert(name.clone(), v.clone());
                                self.st.vars.insert(name.clone(), v);
                            }
                            Err(e) => {
                                return self.fatal(fid, e.to_string());
                            }
                        }
                    }
                    self.complete_step(fid, Value::Object(assigned));
                }
                StepKind::Succeed(s) => {
                    self.emit_step(fid, StepStatus::Started, 1, None);
                    let output = match &s.output {
                        None => self.st.frames[&fid].last.clone(),
                        Some(t) => match self.wf.exprs.render(t, &self.scope(fid)) {
                            Ok(v) => v,
                            Err(e) => {
                                return self.fatal(fid, e.to_string());
                            }
                        },
                    };
                    self.emit_step(fid, StepStatus::Succeeded, 1, None);
                    return self.finish_frame(fid, Ok(output));
                }
                StepKind::Fail(f) => {
                    self.emit_step(fid, StepStatus::Started, 1, None);
                    let message = match self
                        .wf
                        .exprs
                        .render(&Value::String(f.message.clone()), &self.scope(fid))
                    {
                        Ok(Value::String(s)) => s,
                        Ok(other) => other.to_string(),
                        Err(e) => e.to_string(),
                    };
                    let err = failure(f.class, message, Some(&at));
                    self.emit_step(fid, StepStatus::Failed, 1, Some(err.clone()));
                    return self.finish_frame(fid, Err(err));
                }
            }
        }
    }

    fn set_pending(&mut self, fid: FrameId, pending: Pending) {
        if let Some(f) = self.st.frames.get_mut(&fid) {
            f.pending = pending;
        }
    }

    fn goto(&mut self, fid: FrameId, next: StepId) {
        if let Some(f) = self.st.frames.get_mut(&fid) {
            f.at = next;
            f.pending = Pending::Ready;
            f.tries = 0;
        }
    }

    fn next_dispatch(&mut self, step: &StepId) -> u32 {
        let seq = self.st.dispatches.entry(step.clone()).or_insert(0);
        *seq += 1;
        *seq
    }

    /// Dispatches the frame's current task step as a new attempt.
    fn dispatch(&mut self, fid: FrameId) {
        let Some(frame) = self.st.frames.get(&fid) else {
            return;
        };
        let at = frame.at.clone();
        let Some(StepKind::Task(task)) = self.wf.step(&at).map(|i| i.step.kind.clone()) else {
            return;
        };
        let args = match self.wf.exprs.render(&task.args, &self.scope(fid)) {
            Ok(a) => a,
            Err(e) => {
                return self.fatal(fid, e.to_string());
            }
        };
        let seq = self.next_dispatch(&at);
        let timeout = task.timeout.map_or(DEFAULT_TASK_TIMEOUT, |t| t.0);
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
        }));
        let due = self.now
            + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX)
            + TASK_TIMEOUT_GRACE;
        self.start_timer(
            task_timeout_id(&at, seq),
            due,
            TimerPurpose::TaskTimeout {
                frame: fid,
                attempt: seq,
            },
        );
    }

    fn task_failed(&mut self, fid: FrameId, class: ErrorClass, message: String) {
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

    fn deliver_signal(&mut self, fid: FrameId, payload: Value) {
        let at = self.st.frames[&fid].at.clone();
        self.cancel_timer(&format!("signal-timeout/{fid}/{at}"));
        self.complete_step(fid, payload);
        self.run_frame(fid);
    }

    /// The current step finished with `output`; move on (or end the frame).
    fn complete_step(&mut self, fid: FrameId, output: Value) {
        let Some(frame) = self.st.frames.get(&fid) else {
            return;
        };
        let at = frame.at.clone();
        let attempt = match frame.pending {
            Pending::Task { attempt } => attempt,
            _ => 1,
        };
        self.emit_step(fid, StepStatus::Succeeded, attempt, None);
        if let Some(f) = self.st.frames.get_mut(&fid) {
            f.outputs.insert(at.clone(), output.clone());
            f.last = output.clone();
        }
        match self.wf.next_after(&at) {
            Some(next) => self.goto(fid, next),
            None => self.finish_frame(fid, Ok(output)),
        }
    }

    /// The current step fails with class `fatal`: an expression error or a value of the
    /// wrong kind, which no retry can fix.
    fn fatal(&mut self, fid: FrameId, message: impl Into<String>) {
        let at = self.st.frames.get(&fid).map(|f| f.at.clone());
        self.fail_step(fid, failure(ErrorClass::Fatal, message, at.as_ref()));
    }

    fn fail_step(&mut self, fid: FrameId, err: Failure) {
        self.fail_step_attempt(fid, err, 1);
    }

    /// The current step failed for good: a matching catch rule takes over, else the
    /// frame fails.
    fn fail_step_attempt(&mut self, fid: FrameId, err: Failure, attempt: u32) {
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
    fn finish_frame(&mut self, fid: FrameId, result: Result<Value, Failure>) {
        self.cancel_frame_timers(fid);
        let Some(frame) = self.st.frames.remove(&fid) else {
            return;
        };
        let Some(parent) = frame.parent else {
            match result {
                Ok(output) => self.finish_run(RunStatus::Succeeded, Some(output), None),
                Err(e) => self.finish_run(RunStatus::Failed, None, Some(e)),
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

    fn child_done(&mut self, pid: FrameId, slot: u64, result: Result<Value, Failure>) {
        let Some(parent) = self.st.frames.get_mut(&pid) else {
            return;
        };
        let mut cancel: Vec<u64> = Vec::new();
        enum Next {
            Wait,
            Complete(Value),
            Fail(Failure),
            Fill,
        }
        let next = match &mut parent.pending {
            Pending::Branches {
                join,
                fail_fast,
                open,
                done,
                failure: first_failure,
            } => {
                open.remove(&slot);
                match result {
                    Ok(v) if *join == Join::First => {
                        cancel.extend(open.iter().copied());
                        open.clear();
                        Next::Complete(v)
                    }
                    Ok(v) => {
                        done.insert(slot, v);
                        if open.is_empty() {
                            match first_failure.take() {
                                Some(f) => Next::Fail(f),
                                None => Next::Complete(Value::Array(
                                    std::mem::take(done).into_values().collect(),
                                )),
                            }
                        } else {
                            Next::Wait
                        }
                    }
                    Err(f) if *fail_fast => {
                        cancel.extend(open.iter().copied());
                        open.clear();
                        Next::Fail(f)
                    }
                    Err(f) => {
                        first_failure.get_or_insert(f);
                        if open.is_empty() {
                            first_failure.take().map_or(Next::Wait, Next::Fail)
                        } else {
                            Next::Wait
                        }
                    }
                }
            }
            Pending::Foreach { open, done, .. } => {
                open.remove(&slot);
                match result {
                    Ok(v) => {
                        done.insert(slot, v);
                        Next::Fill
                    }
                    Err(f) => {
                        cancel.extend(open.iter().copied());
                        open.clear();
                        Next::Fail(f)
                    }
                }
            }
            _ => Next::Wait,
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
            Next::Wait => {}
            Next::Fill => self.fill_foreach(pid),
            Next::Complete(v) => {
                self.complete_step(pid, v);
                self.run_frame(pid);
            }
            Next::Fail(f) => self.fail_step(pid, f),
        }
    }

    /// Starts foreach iterations up to the concurrency limit, and completes the step
    /// once every iteration has finished.
    fn fill_foreach(&mut self, fid: FrameId) {
        if !self.filling.insert(fid) {
            return;
        }
        let at = self.st.frames[&fid].at.clone();
        let body = BlockId::Body { step: at };
        let first = self.wf.first_of(&body).cloned();
        while let Some(first) = &first {
            let Some(Pending::Foreach {
                items,
                started,
                concurrency,
                open,
                ..
            }) = self.st.frames.get_mut(&fid).map(|f| &mut f.pending)
            else {
                break;
            };
            if *started as usize >= items.len() || open.len() >= *concurrency as usize {
                break;
            }
            let slot = *started;
            let item = items[slot as usize].clone();
            *started += 1;
            open.insert(slot);
            let child = self.new_frame(
                Some(Parent { frame: fid, slot }),
                body.clone(),
                first.clone(),
                Some(item),
                Some(slot),
            );
            self.run_frame(child);
        }
        self.filling.remove(&fid);
        let finished = match self.st.frames.get_mut(&fid).map(|f| &mut f.pending) {
            Some(Pending::Foreach {
                items,
                started,
                open,
                done,
                ..
            }) if open.is_empty() && *started as usize >= items.len() => {
                Some(Value::Array(std::mem::take(done).into_values().collect()))
            }
            _ => None,
        };
        if let Some(v) = finished {
            self.complete_step(fid, v);
            self.run_frame(fid);
        }
    }

    /// Stops a frame and everything under it.
    fn cancel_frame(&mut self, fid: FrameId) {
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

    fn finish_run(&mut self, status: RunStatus, output: Option<Value>, error: Option<Failure>) {
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
        let remaining: Vec<String> = self.st.timers.keys().cloned().collect();
        for id in remaining {
            self.cancel_timer(&id);
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

fn task_timeout_id(step: &StepId, attempt: u32) -> String {
    format!("timeout/{step}/{attempt}")
}

fn signal_matches(pending: &Pending, name: &str, correlation: Option<&str>) -> bool {
    match pending {
        Pending::Signal {
            name: n,
            correlation: c,
        } => n == name && (c.is_none() || c.as_deref() == correlation),
        _ => false,
    }
}
