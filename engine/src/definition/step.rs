//! The step kinds.

use aiq_topics::{ErrorClass, StepId, WorkflowId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::duration::HumanDuration;

/// One step. Exactly one of the kind keys (`task`, `choice`, ...) is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RawStep", into = "RawStep")]
pub struct Step {
    pub id: StepId,
    /// The step to go to afterwards; by default the one below, or the end of the block.
    pub next: Option<StepId>,
    /// Ends the block (the workflow, a branch, a loop body) after this step.
    pub end: bool,
    /// Where a failure goes instead of failing the block, by error class.
    pub catch: Vec<CatchRule>,
    pub kind: StepKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    Task(TaskStep),
    Choice(ChoiceStep),
    Parallel(ParallelStep),
    Foreach(ForeachStep),
    Wait(WaitStep),
    WaitForEvent(WaitForEventStep),
    SubWorkflow(SubWorkflowStep),
    Set(SetStep),
    Succeed(SucceedStep),
    Fail(FailStep),
}

impl StepKind {
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Task(_) => "task",
            StepKind::Choice(_) => "choice",
            StepKind::Parallel(_) => "parallel",
            StepKind::Foreach(_) => "foreach",
            StepKind::Wait(_) => "wait",
            StepKind::WaitForEvent(_) => "wait_for_event",
            StepKind::SubWorkflow(_) => "sub_workflow",
            StepKind::Set(_) => "set",
            StepKind::Succeed(_) => "succeed",
            StepKind::Fail(_) => "fail",
        }
    }

    /// Steps that wait for time or for the world; a loop must pass one of them.
    pub fn waits(&self) -> bool {
        matches!(self, StepKind::Wait(_) | StepKind::WaitForEvent(_))
    }
}

/// The document form of a step: one optional field per kind, so that serde's errors and
/// the editor schema name the kinds; `Step::try_from` insists on exactly one.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    #[schemars(with = "String")]
    pub id: StepId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub next: Option<StepId>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catch: Vec<CatchRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<ChoiceStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<ParallelStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreach: Option<ForeachStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_event: Option<WaitForEventStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_workflow: Option<SubWorkflowStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<SetStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeed: Option<SucceedStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<FailStep>,
}

impl TryFrom<RawStep> for Step {
    type Error = String;

    fn try_from(r: RawStep) -> Result<Self, Self::Error> {
        let mut kinds: Vec<StepKind> = Vec::new();
        kinds.extend(r.task.map(StepKind::Task));
        kinds.extend(r.choice.map(StepKind::Choice));
        kinds.extend(r.parallel.map(StepKind::Parallel));
        kinds.extend(r.foreach.map(StepKind::Foreach));
        kinds.extend(r.wait.map(StepKind::Wait));
        kinds.extend(r.wait_for_event.map(StepKind::WaitForEvent));
        kinds.extend(r.sub_workflow.map(StepKind::SubWorkflow));
        kinds.extend(r.set.map(StepKind::Set));
        kinds.extend(r.succeed.map(StepKind::Succeed));
        kinds.extend(r.fail.map(StepKind::Fail));
        match kinds.len() {
            1 => Ok(Step {
                id: r.id,
                next: r.next,
                end: r.end,
                catch: r.catch,
                kind: kinds.remove(0),
            }),
            0 => Err(format!(
                "step {:?} has no kind; give exactly one of task, choice, parallel, foreach, \
                 wait, wait_for_event, sub_workflow, set, succeed, fail",
                r.id.as_str()
            )),
            _ => Err(format!(
                "step {:?} has {} kinds ({}); give exactly one",
                r.id.as_str(),
                kinds.len(),
                kinds
                    .iter()
                    .map(StepKind::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

impl From<Step> for RawStep {
    fn from(s: Step) -> Self {
        let mut r = RawStep {
            id: s.id,
            next: s.next,
            end: s.end,
            catch: s.catch,
            task: None,
            choice: None,
            parallel: None,
            foreach: None,
            wait: None,
            wait_for_event: None,
            sub_workflow: None,
            set: None,
            succeed: None,
            fail: None,
        };
        match s.kind {
            StepKind::Task(k) => r.task = Some(k),
            StepKind::Choice(k) => r.choice = Some(k),
            StepKind::Parallel(k) => r.parallel = Some(k),
            StepKind::Foreach(k) => r.foreach = Some(k),
            StepKind::Wait(k) => r.wait = Some(k),
            StepKind::WaitForEvent(k) => r.wait_for_event = Some(k),
            StepKind::SubWorkflow(k) => r.sub_workflow = Some(k),
            StepKind::Set(k) => r.set = Some(k),
            StepKind::Succeed(k) => r.succeed = Some(k),
            StepKind::Fail(k) => r.fail = Some(k),
        }
        r
    }
}

/// The connectors workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Connector {
    Http,
    Soap,
    Sql,
    Email,
    File,
    Kafka,
    /// Does nothing but answer: its output is `args.output` (or null), after
    /// `args.delay_ms`. For load tests, demos and placeholders.
    Noop,
}

impl Connector {
    pub fn as_str(self) -> &'static str {
        match self {
            Connector::Http => "http",
            Connector::Soap => "soap",
            Connector::Sql => "sql",
            Connector::Email => "email",
            Connector::File => "file",
            Connector::Kafka => "kafka",
            Connector::Noop => "noop",
        }
    }
}

/// Calls a connector in a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskStep {
    pub connector: Connector,
    /// The connector's arguments; strings may hold `${ expression }` templates.
    #[serde(default)]
    pub args: Value,
    /// One attempt running longer than this fails with class `timeout`. Default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// How long an attempt may wait for a worker to pick it up (a backlog, a worker
    /// restarting) before it fails with class `timeout`; counted apart from `timeout`,
    /// so waiting delays a run rather than failing it. Default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_to_start: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

/// How a failed task is tried again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included: 1 to 100.
    pub max_attempts: u32,
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: HumanDuration,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
    /// Each wait is this many times the previous one: 1 to 10.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Up to this fraction of each wait is taken off, pseudo-randomly: 0 to 1.
    #[serde(default)]
    pub jitter: f64,
    /// Which failures are tried again.
    #[serde(default = "default_retry_on")]
    #[schemars(with = "Vec<String>")]
    pub retry_on: Vec<ErrorClass>,
}

fn default_initial_backoff() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(1))
}
fn default_max_backoff() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(60))
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_retry_on() -> Vec<ErrorClass> {
    vec![ErrorClass::Retryable, ErrorClass::Timeout]
}

/// Which failures a catch rule takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchOn {
    Retryable,
    Fatal,
    Timeout,
    CircuitOpen,
    /// Any failure.
    All,
}

impl CatchOn {
    pub fn matches(self, class: ErrorClass) -> bool {
        match self {
            CatchOn::All => true,
            CatchOn::Retryable => class == ErrorClass::Retryable,
            CatchOn::Fatal => class == ErrorClass::Fatal,
            CatchOn::Timeout => class == ErrorClass::Timeout,
            CatchOn::CircuitOpen => class == ErrorClass::CircuitOpen,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatchRule {
    pub errors: Vec<CatchOn>,
    #[schemars(with = "String")]
    pub next: StepId,
    /// Stores the error (`{class, message, step}`) in this variable.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "as")]
    pub store_as: Option<String>,
}

/// Goes to the first case whose `when` is true, else to `default`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChoiceStep {
    pub cases: Vec<ChoiceCase>,
    #[schemars(with = "Option<String>")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<StepId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChoiceCase {
    /// A CEL expression that yields a boolean, e.g. `input.amount > 100`.
    pub when: String,
    #[schemars(with = "String")]
    pub next: StepId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Join {
    /// Wait for every branch; the output is the list of branch outputs.
    #[default]
    All,
    /// The first branch to finish wins; the others are cancelled.
    First,
}

/// Runs branches at the same time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParallelStep {
    pub branches: Vec<ParallelBranch>,
    #[serde(default)]
    pub join: Join,
    /// Cancel the other branches as soon as one fails (default true).
    #[serde(default = "yes")]
    pub fail_fast: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParallelBranch {
    pub steps: Vec<Step>,
}

/// Runs its steps once per item of a list, `concurrency` at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForeachStep {
    /// A CEL expression that yields a list, e.g. `input.orders`.
    pub items: String,
    #[serde(default = "one")]
    pub concurrency: u32,
    pub steps: Vec<Step>,
}

fn one() -> u32 {
    1
}

/// Pauses for a duration, or until a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    /// A CEL expression yielding a timestamp or an RFC 3339 string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// Waits for a named signal; its payload becomes the step's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitForEventStep {
    pub signal: String,
    /// A CEL expression; only a signal carrying the same correlation key matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
    /// Past this the step fails with class `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// Starts a run of another workflow of the same tenant and waits for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubWorkflowStep {
    #[schemars(with = "String")]
    pub workflow: WorkflowId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    #[serde(default)]
    pub input: Value,
}

/// Assigns variables, readable as `vars.<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStep {
    pub vars: std::collections::BTreeMap<String, Value>,
}

/// Ends its block (at the top, the run) successfully.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SucceedStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

/// Ends its block (at the top, the run) with a failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailStep {
    pub message: String,
    #[serde(default = "fatal")]
    #[schemars(with = "String")]
    pub class: ErrorClass,
}

fn fatal() -> ErrorClass {
    ErrorClass::Fatal
}
