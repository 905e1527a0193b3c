//! A record of the compacted definitions topic: one accepted, immutable workflow version.
//! Ingest writes it after the registry has stored the version; every orchestrator (and
//! every ingest instance) reads the topic into memory, so nobody calls a database to find
//! a definition.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{TenantId, WorkflowId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefinitionRecord {
    pub tenant: TenantId,
    pub workflow: WorkflowId,
    pub version: u32,
    /// SHA-256 of the definition's canonical JSON, hex.
    pub content_hash: String,
    pub created_at: DateTime<Utc>,
    /// The definition document as accepted (JSON, whatever format it was sent in).
    pub definition: Value,
}

impl DefinitionRecord {
    /// The record key: `tenant/workflow/version`, one compacted entry per version.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.tenant, self.workflow, self.version)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("definition record encodes: {e}"))
    }

    pub fn decode(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

/// The value of [`WorkflowState::kind`], which tells a state record from a version.
pub const STATE_KIND: &str = "workflow_state";

/// A workflow's lifecycle, beside its versions on the definitions topic (key
/// `tenant/workflow/state`, compacted: the latest is the state). Without one a workflow
/// is enabled and starts its newest version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowState {
    /// Always [`STATE_KIND`].
    pub kind: String,
    pub tenant: TenantId,
    pub workflow: WorkflowId,
    /// No new runs from any trigger, and no cron ticks; runs in flight go on.
    #[serde(default)]
    pub disabled: bool,
    /// Gone from listings and triggers; its history is kept for its retention.
    #[serde(default)]
    pub deleted: bool,
    /// The version a trigger without one starts; the newest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_version: Option<u32>,
    pub changed_at: DateTime<Utc>,
}

impl WorkflowState {
    pub fn new(tenant: TenantId, workflow: WorkflowId, changed_at: DateTime<Utc>) -> Self {
        Self {
            kind: STATE_KIND.to_owned(),
            tenant,
            workflow,
            disabled: false,
            deleted: false,
            default_version: None,
            changed_at,
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}/state", self.tenant, self.workflow)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("workflow state encodes: {e}"))
    }
}

/// A record of the definitions topic: a version or a workflow's state.
#[derive(Debug, Clone, PartialEq)]
pub enum DefinitionsEntry {
    Version(Box<DefinitionRecord>),
    State(WorkflowState),
}

impl DefinitionsEntry {
    pub fn decode(payload: &[u8]) -> Result<Self, serde_json::Error> {
        let v: Value = serde_json::from_slice(payload)?;
        if v.get("kind").and_then(Value::as_str) == Some(STATE_KIND) {
            Ok(Self::State(serde_json::from_value(v)?))
        } else {
            Ok(Self::Version(Box::new(serde_json::from_value(v)?)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_record_is_told_from_a_version() {
        let s = WorkflowState {
            disabled: true,
            default_version: Some(2),
            ..WorkflowState::new(
                TenantId::new("acme").unwrap(),
                WorkflowId::new("sync").unwrap(),
                DateTime::from_timestamp(0, 0).unwrap(),
            )
        };
        assert_eq!(s.key(), "acme/sync/state");
        assert_eq!(
            DefinitionsEntry::decode(&s.encode()).unwrap(),
            DefinitionsEntry::State(s)
        );
        let r = DefinitionRecord {
            tenant: TenantId::new("acme").unwrap(),
            workflow: WorkflowId::new("sync").unwrap(),
            version: 1,
            content_hash: "ab".into(),
            created_at: DateTime::from_timestamp(0, 0).unwrap(),
            definition: serde_json::json!({"id": "sync"}),
        };
        assert!(matches!(
            DefinitionsEntry::decode(&r.encode()).unwrap(),
            DefinitionsEntry::Version(_)
        ));
    }

    #[test]
    fn keys_name_tenant_workflow_and_version() {
        let r = DefinitionRecord {
            tenant: TenantId::new("acme").unwrap(),
            workflow: WorkflowId::new("sync").unwrap(),
            version: 7,
            content_hash: "ab".into(),
            created_at: DateTime::from_timestamp(0, 0).unwrap(),
            definition: serde_json::json!({"id": "sync"}),
        };
        assert_eq!(r.key(), "acme/sync/7");
        assert_eq!(DefinitionRecord::decode(&r.encode()).unwrap(), r);
    }
}
