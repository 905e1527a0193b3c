//! Audit events: who changed what in a tenant's configuration, on the audit topic
//! (key = tenant). The sink stores them in the `audit` table. Field names are part of the
//! contract: add fields, never rename them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::ids::TenantId;

/// What was done. New actions are added at the end; readers treat an unknown action as
/// an opaque string (it is stored as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    WorkflowRegistered,
    ApiKeyCreated,
    ApiKeyRevoked,
    WebhookSecretSet,
    SecretPut,
    SecretDeleted,
    DeadLetterReplayed,
    DeadLetterResolved,
    RunRedriven,
    RunRerun,
    ReplayStarted,
    ReplayCancelled,
    WorkflowDisabled,
    WorkflowEnabled,
    WorkflowDeleted,
    DefaultVersionSet,
    TenantCreated,
    TenantUpdated,
    TenantSuspended,
    TenantResumed,
    /// Any mutating API call, and a platform admin's call for another tenant.
    ApiCall,
    /// A run started, from any source.
    RunStarted,
    RunCancelled,
    SignalSent,
    /// A SQL query or report (its text's SHA-256, never the text).
    SqlQuery,
    /// A worker opened a secret for a step (its name, never its value).
    SecretOpened,
    /// A tenant's data was erased: the certificate (what, where, when, by whom).
    TenantErased,
    /// One run's payloads were erased: the certificate.
    RunErased,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::WorkflowRegistered => "workflow_registered",
            AuditAction::ApiKeyCreated => "api_key_created",
            AuditAction::ApiKeyRevoked => "api_key_revoked",
            AuditAction::WebhookSecretSet => "webhook_secret_set",
            AuditAction::SecretPut => "secret_put",
            AuditAction::SecretDeleted => "secret_deleted",
            AuditAction::DeadLetterReplayed => "dead_letter_replayed",
            AuditAction::DeadLetterResolved => "dead_letter_resolved",
            AuditAction::RunRedriven => "run_redriven",
            AuditAction::RunRerun => "run_rerun",
            AuditAction::ReplayStarted => "replay_started",
            AuditAction::ReplayCancelled => "replay_cancelled",
            AuditAction::WorkflowDisabled => "workflow_disabled",
            AuditAction::WorkflowEnabled => "workflow_enabled",
            AuditAction::WorkflowDeleted => "workflow_deleted",
            AuditAction::DefaultVersionSet => "default_version_set",
            AuditAction::TenantCreated => "tenant_created",
            AuditAction::TenantUpdated => "tenant_updated",
            AuditAction::TenantSuspended => "tenant_suspended",
            AuditAction::TenantResumed => "tenant_resumed",
            AuditAction::ApiCall => "api_call",
            AuditAction::RunStarted => "run_started",
            AuditAction::RunCancelled => "run_cancelled",
            AuditAction::SignalSent => "signal_sent",
            AuditAction::SqlQuery => "sql_query",
            AuditAction::SecretOpened => "secret_opened",
            AuditAction::TenantErased => "tenant_erased",
            AuditAction::RunErased => "run_erased",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Chosen once by the producer; a replayed record keeps it, so the stored row is the
    /// same.
    pub id: Uuid,
    pub tenant: TenantId,
    pub at: DateTime<Utc>,
    /// A token's `sub` or an API key's id.
    pub actor: String,
    pub action: AuditAction,
    /// What was acted on: `workflow/version`, a key id, a hook or secret name.
    pub subject: String,
    /// Never a secret value.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
    /// The actor's own tenant when it acted for another (a platform admin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_tenant: Option<TenantId>,
    /// The request's id (`X-Request-Id`, or one given to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// How it ended: an HTTP status, or `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

impl AuditEvent {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("audit event encodes: {e}"))
    }

    pub fn decode(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_events_round_trip_with_snake_case_actions() {
        let e = AuditEvent {
            id: Uuid::from_u128(7),
            tenant: TenantId::new("acme").unwrap(),
            at: DateTime::from_timestamp(1, 0).unwrap(),
            actor: "key-1".into(),
            action: AuditAction::SecretPut,
            subject: "db".into(),
            detail: Value::Null,
            actor_tenant: None,
            request_id: None,
            outcome: None,
        };
        let v: Value = serde_json::from_slice(&e.encode()).unwrap();
        assert_eq!(v["action"], "secret_put");
        assert!(v.get("detail").is_none());
        assert_eq!(AuditEvent::decode(&e.encode()).unwrap(), e);
        assert_eq!(AuditAction::SecretPut.as_str(), "secret_put");
    }
}
