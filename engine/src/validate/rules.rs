//! Per-field rules, walked over the whole document with the JSON pointer of each step.

use std::collections::BTreeMap;
use std::time::Duration;

use aiq_topics::StepId;
use serde_json::Value;

use crate::definition::{Definition, Step, StepKind};
use crate::expr::Expressions;
use crate::validation_error::ValidationError;
use crate::workflow::{BlockId, StepInfo};

/// Most steps in one workflow, at all levels together.
pub const MAX_STEPS: usize = 1000;
/// Deepest nesting of parallel and foreach blocks.
pub const MAX_DEPTH: usize = 8;
pub const MAX_FOREACH_CONCURRENCY: u32 = 1000;
const MAX_RETRY_ATTEMPTS: u32 = 100;
const MAX_TASK_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// A task may wait this long for a worker at the most: beyond it, a lost task would hold
/// its run (and its quota slot) for longer than any outage we plan to ride out.
const MAX_SCHEDULE_TO_START: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(366 * 24 * 3600);
/// Step ids AutomateIQ writes into a run's history itself (`aiq.notify.webhook`).
pub const RESERVED_STEP_PREFIX: &str = "aiq.";

pub(crate) struct Walk<'a> {
    file: &'a str,
    pub errors: Vec<ValidationError>,
    pub steps: BTreeMap<StepId, StepInfo>,
    pub blocks: BTreeMap<BlockId, Vec<StepId>>,
    pub exprs: Expressions,
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl<'a> Walk<'a> {
    pub fn new(file: &'a str) -> Self {
        Self {
            file,
            errors: Vec::new(),
            steps: BTreeMap::new(),
            blocks: BTreeMap::new(),
            exprs: Expressions::default(),
        }
    }

    pub fn error(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ValidationError {
            file: self.file.to_owned(),
            pointer: pointer.into(),
            message: message.into(),
        });
    }

    fn expr(&mut self, pointer: String, source: &str, in_loop: bool) {
        if let Err(e) = self.exprs.compile(source, in_loop) {
            self.error(pointer, format!("bad expression `{source}`: {e}"));
        }
    }

    fn template(&mut self, pointer: String, value: &Value, in_loop: bool) {
        if let Err(e) = self.exprs.compile_template(value, in_loop) {
            self.error(pointer, format!("bad template: {e}"));
        }
    }

    fn duration(&mut self, pointer: String, d: Duration, max: Duration) {
        if d.is_zero() {
            self.error(pointer, "must be longer than 0s");
        } else if d > max {
            self.error(
                pointer,
                format!("must be at most {}", humantime::format_duration(max)),
            );
        }
    }

    pub fn workflow(&mut self, def: &Definition) {
        if let Some(schema) = &def.input_schema
            && let Err(e) = jsonschema::validator_for(schema)
        {
            self.error("/input_schema", format!("not a valid JSON Schema: {e}"));
        }
        if let Some(t) = def.timeout {
            self.duration("/timeout".into(), t.0, MAX_RUN_TIMEOUT);
        }
        if def.max_concurrent_runs == Some(0) {
            self.error("/max_concurrent_runs", "must be at least 1");
        }
        if def.max_inflight_tasks == Some(0) {
            self.error("/max_inflight_tasks", "must be at least 1");
        }
        if let Some(n) = &def.notify {
            for (pointer, message) in super::notify::check(n) {
                self.error(format!("/notify{pointer}"), message);
            }
        }
        for (i, c) in def.triggers.cron.iter().enumerate() {
            let p = format!("/triggers/cron/{i}");
            if !matches!(c.schedule.split_whitespace().count(), 5 | 6) {
                self.error(
                    format!("{p}/schedule"),
                    format!(
                        "{:?} must have 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first",
                        c.schedule
                    ),
                );
            } else if let Err(e) = crate::cron::parse(&c.schedule) {
                self.error(
                    format!("{p}/schedule"),
                    format!("{:?} is not a valid schedule: {e}", c.schedule),
                );
            }
            if c.timezone.parse::<chrono_tz::Tz>().is_err() {
                self.error(
                    format!("{p}/timezone"),
                    format!(
                        "{:?} is not an IANA time zone such as \"Europe/Berlin\" or \"UTC\"",
                        c.timezone
                    ),
                );
            }
            self.template(format!("{p}/input"), &c.input, false);
        }
        let mut hooks = BTreeMap::new();
        for (i, h) in def.triggers.webhooks.iter().enumerate() {
            let p = format!("/triggers/webhooks/{i}/name");
            if !is_slug(&h.name) {
                self.error(
                    p,
                    format!(
                        "{:?} must be 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.'",
                        h.name
                    ),
                );
            } else if let Some(first) = hooks.insert(h.name.clone(), i) {
                self.error(
                    p,
                    format!(
                        "webhook {:?} is declared twice (also at /triggers/webhooks/{first})",
                        h.name
                    ),
                );
            }
        }
        if def.steps.is_empty() {
            self.error("/steps", "a workflow needs at least one step");
        }
        self.block(&def.steps, "/steps", BlockId::Top, 0, false);
        if self.steps.len() > MAX_STEPS {
            self.error(
                "/steps",
                format!(
                    "{} steps in all; the limit is {MAX_STEPS}",
                    self.steps.len()
                ),
            );
        }
    }

    fn block(
        &mut self,
        steps: &[Step],
        pointer: &str,
        block: BlockId,
        depth: usize,
        in_loop: bool,
    ) {
        if depth > MAX_DEPTH {
            self.error(
                pointer,
                format!("blocks nest {depth} deep; the limit is {MAX_DEPTH}"),
            );
            return;
        }
        let mut ids = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let p = format!("{pointer}/{i}");
            if step.id.as_str().starts_with(RESERVED_STEP_PREFIX) {
                self.error(
                    format!("{p}/id"),
                    format!(
                        "step id {:?} begins with {RESERVED_STEP_PREFIX:?}, which is reserved for \
                         the steps AutomateIQ adds to a run's history (notifications)",
                        step.id.as_str()
                    ),
                );
            }
            if let Some(first) = self.steps.get(&step.id) {
                let first = first.pointer.clone();
                self.error(
                    format!("{p}/id"),
                    format!("step id {:?} is used again (first at {first}); ids are unique in the whole workflow", step.id.as_str()),
                );
                continue;
            }
            self.steps.insert(
                step.id.clone(),
                StepInfo {
                    step: step.clone(),
                    block: block.clone(),
                    position: i,
                    pointer: p.clone(),
                    in_loop,
                },
            );
            ids.push(step.id.clone());
            self.step(step, &p, depth, in_loop);
        }
        self.blocks.insert(block, ids);
    }

    fn step(&mut self, step: &Step, p: &str, depth: usize, in_loop: bool) {
        let kind = step.kind.name();
        let ends_itself = matches!(
            step.kind,
            StepKind::Choice(_) | StepKind::Succeed(_) | StepKind::Fail(_)
        );
        if ends_itself && step.next.is_some() {
            self.error(
                format!("{p}/next"),
                format!("a {kind} step does not go on to a next step; remove `next`"),
            );
        }
        if ends_itself && step.end {
            self.error(
                format!("{p}/end"),
                format!("a {kind} step does not take `end`"),
            );
        }
        if step.next.is_some() && step.end {
            self.error(
                format!("{p}/end"),
                "`end` and `next` contradict each other; keep one",
            );
        }
        if matches!(step.kind, StepKind::Succeed(_) | StepKind::Fail(_)) && !step.catch.is_empty() {
            self.error(
                format!("{p}/catch"),
                format!("a {kind} step cannot fail, so it has nothing to catch"),
            );
        }
        for (i, rule) in step.catch.iter().enumerate() {
            if rule.errors.is_empty() {
                self.error(
                    format!("{p}/catch/{i}/errors"),
                    "name at least one error class, or `all`",
                );
            }
            if let Some(name) = &rule.store_as
                && !is_identifier(name)
            {
                self.error(
                    format!("{p}/catch/{i}/as"),
                    format!("{name:?} is not a variable name (letters, digits, '_')"),
                );
            }
        }
        match &step.kind {
            StepKind::Task(t) => {
                self.template(format!("{p}/task/args"), &t.args, in_loop);
                if let Some(timeout) = t.timeout {
                    self.duration(format!("{p}/task/timeout"), timeout.0, MAX_TASK_TIMEOUT);
                }
                // 0s is allowed: no wait for a worker at all (the old backstop).
                if let Some(s) = t.schedule_to_start
                    && s.0 > MAX_SCHEDULE_TO_START
                {
                    self.error(
                        format!("{p}/task/schedule_to_start"),
                        format!(
                            "must be at most {}",
                            humantime::format_duration(MAX_SCHEDULE_TO_START)
                        ),
                    );
                }
                if let Some(r) = &t.retry {
                    let rp = format!("{p}/task/retry");
                    if !(1..=MAX_RETRY_ATTEMPTS).contains(&r.max_attempts) {
                        self.error(
                            format!("{rp}/max_attempts"),
                            format!(
                                "must be between 1 and {MAX_RETRY_ATTEMPTS}, got {}",
                                r.max_attempts
                            ),
                        );
                    }
                    self.duration(
                        format!("{rp}/initial_backoff"),
                        r.initial_backoff.0,
                        MAX_TASK_TIMEOUT,
                    );
                    self.duration(
                        format!("{rp}/max_backoff"),
                        r.max_backoff.0,
                        MAX_TASK_TIMEOUT,
                    );
                    if r.max_backoff < r.initial_backoff {
                        self.error(
                            format!("{rp}/max_backoff"),
                            format!(
                                "{} is shorter than initial_backoff {}",
                                r.max_backoff, r.initial_backoff
                            ),
                        );
                    }
                    if !(1.0..=10.0).contains(&r.multiplier) {
                        self.error(
                            format!("{rp}/multiplier"),
                            format!("must be between 1 and 10, got {}", r.multiplier),
                        );
                    }
                    if !(0.0..=1.0).contains(&r.jitter) {
                        self.error(
                            format!("{rp}/jitter"),
                            format!("must be between 0 and 1, got {}", r.jitter),
                        );
                    }
                    if r.retry_on.is_empty() {
                        self.error(
                            format!("{rp}/retry_on"),
                            "name at least one error class to retry",
                        );
                    }
                }
            }
            StepKind::Choice(c) => {
                if c.cases.is_empty() {
                    self.error(
                        format!("{p}/choice/cases"),
                        "a choice needs at least one case",
                    );
                }
                for (i, case) in c.cases.iter().enumerate() {
                    self.expr(format!("{p}/choice/cases/{i}/when"), &case.when, in_loop);
                }
            }
            StepKind::Parallel(par) => {
                if par.branches.is_empty() {
                    self.error(
                        format!("{p}/parallel/branches"),
                        "a parallel step needs at least one branch",
                    );
                }
                for (i, b) in par.branches.iter().enumerate() {
                    let bp = format!("{p}/parallel/branches/{i}/steps");
                    if b.steps.is_empty() {
                        self.error(bp.clone(), "a branch needs at least one step");
                    }
                    self.block(
                        &b.steps,
                        &bp,
                        BlockId::Branch {
                            step: step.id.clone(),
                            index: i,
                        },
                        depth + 1,
                        in_loop,
                    );
                }
            }
            StepKind::Foreach(f) => {
                self.expr(format!("{p}/foreach/items"), &f.items, in_loop);
                if !(1..=MAX_FOREACH_CONCURRENCY).contains(&f.concurrency) {
                    self.error(
                        format!("{p}/foreach/concurrency"),
                        format!(
                            "must be between 1 and {MAX_FOREACH_CONCURRENCY}, got {}",
                            f.concurrency
                        ),
                    );
                }
                let bp = format!("{p}/foreach/steps");
                if f.steps.is_empty() {
                    self.error(bp.clone(), "a foreach needs at least one step");
                }
                self.block(
                    &f.steps,
                    &bp,
                    BlockId::Body {
                        step: step.id.clone(),
                    },
                    depth + 1,
                    true,
                );
            }
            StepKind::Wait(w) => match (&w.duration, &w.until) {
                (Some(d), None) => {
                    self.duration(format!("{p}/wait/duration"), d.0, MAX_RUN_TIMEOUT)
                }
                (None, Some(u)) => self.expr(format!("{p}/wait/until"), u, in_loop),
                _ => self.error(
                    format!("{p}/wait"),
                    "give exactly one of `duration` and `until`",
                ),
            },
            StepKind::WaitForEvent(w) => {
                if !is_slug(&w.signal) {
                    self.error(
                        format!("{p}/wait_for_event/signal"),
                        format!(
                            "{:?} must be 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.'",
                            w.signal
                        ),
                    );
                }
                if let Some(c) = &w.correlation {
                    self.expr(format!("{p}/wait_for_event/correlation"), c, in_loop);
                }
                if let Some(t) = w.timeout {
                    self.duration(format!("{p}/wait_for_event/timeout"), t.0, MAX_RUN_TIMEOUT);
                }
            }
            StepKind::SubWorkflow(s) => {
                if s.version == Some(0) {
                    self.error(format!("{p}/sub_workflow/version"), "versions start at 1");
                }
                self.template(format!("{p}/sub_workflow/input"), &s.input, in_loop);
            }
            StepKind::Set(s) => {
                if s.vars.is_empty() {
                    self.error(format!("{p}/set/vars"), "set at least one variable");
                }
                for (name, v) in &s.vars {
                    if !is_identifier(name) {
                        self.error(
                            format!("{p}/set/vars/{name}"),
                            format!("{name:?} is not a variable name (letters, digits, '_')"),
                        );
                    }
                    self.template(format!("{p}/set/vars/{name}"), v, in_loop);
                }
            }
            StepKind::Succeed(s) => {
                if let Some(o) = &s.output {
                    self.template(format!("{p}/succeed/output"), o, in_loop);
                }
            }
            StepKind::Fail(f) => {
                if f.message.trim().is_empty() {
                    self.error(format!("{p}/fail/message"), "say why the workflow fails");
                }
                self.template(
                    format!("{p}/fail/message"),
                    &Value::String(f.message.clone()),
                    in_loop,
                );
            }
        }
    }
}
