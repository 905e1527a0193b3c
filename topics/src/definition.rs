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

#[cfg(test)]
mod tests {
    use super::*;

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
