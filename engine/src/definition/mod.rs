//! What a workflow is: the document a tenant registers, as a typed model.
//!
//! Steps are an ordered list: a step without `next` goes on to the step below it, so a
//! long workflow reads top to bottom. Step ids are unique across the whole document, at
//! every nesting level, so `steps.<id>.output` always names one step.

mod step;

pub use step::{
    CatchOn, CatchRule, ChoiceCase, ChoiceStep, Connector, FailStep, ForeachStep, Join,
    ParallelBranch, ParallelStep, RetryPolicy, SetStep, Step, StepKind, SubWorkflowStep,
    SucceedStep, TaskStep, WaitForEventStep, WaitStep,
};

use aiq_topics::WorkflowId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::duration::HumanDuration;

/// A workflow definition document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// Unique within the tenant: letters, digits, `-`, `_`, `.`.
    #[schemars(with = "String")]
    pub id: WorkflowId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema every run's input must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    /// A run still going after this long ends as `timed_out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Runs of this workflow beyond this many wait in a queue (the orchestrator's quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_runs: Option<u32>,
    /// Tasks of this workflow's runs in flight at once; more wait to be dispatched (the
    /// orchestrator's quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_inflight_tasks: Option<u32>,
    #[serde(default)]
    pub retention: RetentionClass,
    #[serde(default, skip_serializing_if = "Triggers::is_empty")]
    pub triggers: Triggers,
    /// Who to tell when a run ends in some statuses (else the tenant's default, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    pub steps: Vec<Step>,
}

/// Tell someone when a run ends: a signed webhook and/or an email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// The statuses that are told: any of `succeeded`, `failed`, `timed_out`, `cancelled`.
    pub on: Vec<NotifyOn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<NotifyWebhook>,
    /// The `email` connector's arguments (`smtp`, `from`, `to`, ...); the subject and
    /// text are filled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyWebhook {
    /// Receives a POST of the run's end as JSON.
    pub url: String,
    /// The tenant secret the body is signed with, as AutomateIQ's own webhooks are
    /// (`X-AIQ-Timestamp`, `X-AIQ-Signature: v1=<hex>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl Notify {
    /// As the notifications topic carries it.
    pub fn to_spec(&self) -> aiq_topics::NotifySpec {
        use aiq_topics::RunStatus;
        aiq_topics::NotifySpec {
            on: self
                .on
                .iter()
                .map(|o| match o {
                    NotifyOn::Succeeded => RunStatus::Succeeded,
                    NotifyOn::Failed => RunStatus::Failed,
                    NotifyOn::TimedOut => RunStatus::TimedOut,
                    NotifyOn::Cancelled => RunStatus::Cancelled,
                })
                .collect(),
            webhook: self.webhook.as_ref().map(|w| aiq_topics::WebhookTarget {
                url: w.url.clone(),
                secret: w.secret.clone(),
            }),
            email: self.email.clone(),
        }
    }
}

/// How long a run's history is kept in the hot store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetentionClass {
    /// 7 days.
    Short,
    /// 90 days.
    #[default]
    Standard,
    /// 365 days.
    Long,
}

impl RetentionClass {
    pub fn days(self) -> u32 {
        match self {
            RetentionClass::Short => 7,
            RetentionClass::Standard => 90,
            RetentionClass::Long => 365,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cron: Vec<CronTrigger>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookTrigger>,
}

impl Triggers {
    pub fn is_empty(&self) -> bool {
        self.cron.is_empty() && self.webhooks.is_empty()
    }
}

/// A schedule that starts runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CronTrigger {
    /// Standard 5-field crontab (minute hour day-of-month month day-of-week), or 6 fields
    /// with seconds first (`*/5 * * * * *` fires every five seconds).
    pub schedule: String,
    /// An IANA time zone such as `Europe/Berlin`; DST follows its rules.
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default)]
    pub overlap: OverlapPolicy,
    #[serde(default)]
    pub misfire: MisfirePolicy,
    /// The input of every run this schedule starts.
    #[serde(default)]
    pub input: Value,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// When a tick comes while the previous scheduled run still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    #[default]
    Allow,
    Skip,
    Queue,
}

/// What happens to ticks missed while the system was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    Skip,
    #[default]
    FireOnce,
    FireAll,
}

/// An endpoint `/v1/hooks/{tenant}/{name}` that starts runs of this workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookTrigger {
    pub name: String,
}
