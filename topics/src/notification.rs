//! Notifications: a workflow (or its tenant, by default) asks to be told when a run
//! ends in some statuses, by a signed webhook and/or an email. The orchestrator writes a
//! [`Notification`] to the notifications topic (key = tenant) in the transaction that
//! ends the run, so each ending is notified once; the worker's notifier delivers it,
//! retrying, and reports each delivery as a step event of the run (step
//! [`WEBHOOK_STEP`] or [`EMAIL_STEP`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::{Failure, RunStatus};
use crate::ids::{RunId, TenantId, WorkflowId};

/// The step id under which a webhook delivery shows in the run's history. Step ids
/// beginning with `aiq.` are reserved for such steps: a workflow cannot declare one.
pub const WEBHOOK_STEP: &str = "aiq.notify.webhook";
pub const EMAIL_STEP: &str = "aiq.notify.email";

/// Where and when to tell: part of a workflow definition, or a tenant's default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// The run statuses that are told (`succeeded`, `failed`, `timed_out`, `cancelled`).
    pub on: Vec<RunStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookTarget>,
    /// The `email` connector's arguments (SMTP server, sender, recipients); the subject
    /// and text are filled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    pub url: String,
    /// The tenant secret the body is signed with (HMAC-SHA256 of
    /// `"{timestamp}.{body}"`, in `X-AIQ-Signature: v1=<hex>` beside `X-AIQ-Timestamp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A run ended in a status someone asked to be told of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub tenant: TenantId,
    pub run: RunId,
    pub workflow: WorkflowId,
    pub version: u32,
    pub status: RunStatus,
    /// When the run ended.
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    pub spec: NotifySpec,
}

impl Notification {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("notification encodes: {e}"))
    }

    pub fn decode(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// The body a webhook receives.
    pub fn body(&self) -> Value {
        serde_json::json!({
            "type": "run.ended",
            "tenant": self.tenant,
            "run_id": self.run,
            "workflow": self.workflow,
            "version": self.version,
            "status": self.status,
            "at": self.at,
            "error": self.error,
        })
    }
}
