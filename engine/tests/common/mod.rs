//! A small driver for runs: carries the state, keeps the timers the engine asked for,
//! and answers tasks, so tests read as a story.
#![allow(dead_code)]
// Test support: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use aiq_engine::run::{Command, Input, RunState};
use aiq_engine::{Workflow, advance, validate_source};
use aiq_topics::{
    ErrorClass, RunId, RunStatus, StepId, TaskMessage, TaskOutcome, TaskResult, TenantId,
};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

pub fn workflow(yaml: &str) -> Workflow {
    match validate_source("test.yaml", yaml) {
        Ok(w) => w.with_version(1),
        Err(errors) => panic!(
            "test workflow does not validate:\n{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-29T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

pub struct Sim {
    pub wf: Workflow,
    pub state: Option<RunState>,
    pub now: DateTime<Utc>,
    pub log: Vec<Command>,
    pub timers: BTreeMap<String, DateTime<Utc>>,
    pub open_tasks: Vec<TaskMessage>,
}

impl Sim {
    pub fn start(yaml: &str, input: Value) -> Sim {
        let mut sim = Sim {
            wf: workflow(yaml),
            state: None,
            now: t0(),
            log: Vec::new(),
            timers: BTreeMap::new(),
            open_tasks: Vec::new(),
        };
        let run = RunId::from_uuid(uuid::Uuid::from_u128(42));
        sim.apply(Input::Trigger {
            run,
            tenant: TenantId::new("acme").unwrap(),
            input,
        });
        sim
    }

    pub fn apply(&mut self, input: Input) -> Vec<Command> {
        let t = advance(&self.wf, self.state.take(), input, self.now);
        self.state = t.state;
        for c in &t.commands {
            match c {
                Command::StartTimer { id, due } => {
                    self.timers.insert(id.clone(), *due);
                }
                Command::CancelTimer { id } => {
                    self.timers.remove(id);
                }
                Command::DispatchTask(m) => self.open_tasks.push(m.clone()),
                _ => {}
            }
        }
        self.log.extend(t.commands.clone());
        t.commands
    }

    pub fn state(&self) -> &RunState {
        self.state.as_ref().expect("a run")
    }

    pub fn status(&self) -> RunStatus {
        self.state().status
    }

    /// The open task for `step`, taken off the list.
    pub fn take_task(&mut self, step: &str) -> TaskMessage {
        let i = self
            .open_tasks
            .iter()
            .position(|t| t.step.as_str() == step)
            .unwrap_or_else(|| {
                panic!(
                    "no open task for {step}; open: {:?}",
                    self.open_task_steps()
                )
            });
        self.open_tasks.remove(i)
    }

    pub fn open_task_steps(&self) -> Vec<String> {
        self.open_tasks.iter().map(|t| t.step.to_string()).collect()
    }

    pub fn result(&self, task: &TaskMessage, outcome: TaskOutcome) -> Input {
        Input::StepResult(TaskResult {
            tenant: task.tenant.clone(),
            run: task.run,
            step: task.step.clone(),
            attempt: task.attempt,
            outcome,
            started_at: self.now,
            finished_at: self.now,
        })
    }

    pub fn ok(&mut self, step: &str, output: Value) -> TaskMessage {
        let task = self.take_task(step);
        let input = self.result(&task, TaskOutcome::Ok { output });
        self.apply(input);
        task
    }

    pub fn err(&mut self, step: &str, class: ErrorClass) -> TaskMessage {
        let task = self.take_task(step);
        let input = self.result(
            &task,
            TaskOutcome::Error {
                class,
                message: format!("{step} failed"),
            },
        );
        self.apply(input);
        task
    }

    /// Moves time to the earliest timer and fires it; returns its id.
    pub fn fire_next_timer(&mut self) -> Option<String> {
        let (id, due) = self
            .timers
            .iter()
            .min_by_key(|(id, due)| (**due, (*id).clone()))
            .map(|(i, d)| (i.clone(), *d))?;
        if due > self.now {
            self.now = due;
        }
        self.timers.remove(&id);
        self.apply(Input::TimerFired { id: id.clone() });
        Some(id)
    }

    pub fn advance_time(&mut self, d: Duration) {
        self.now += d;
    }

    /// (step, status) of every step event so far, in order.
    pub fn step_events(&self) -> Vec<(String, String)> {
        self.log
            .iter()
            .filter_map(|c| match c {
                Command::EmitStep(e) => Some((
                    e.step.to_string(),
                    serde_json::to_value(e.status)
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )),
                _ => None,
            })
            .collect()
    }

    pub fn output(&self) -> Option<&Value> {
        self.state().output.as_ref()
    }

    pub fn step_output(&self, step: &str) -> Option<Value> {
        let id = StepId::new(step).unwrap();
        self.state()
            .frames
            .values()
            .find_map(|f| f.outputs.get(&id).cloned())
    }
}
