//! Records of the data-keys topic (compacted, key = `tenant/key-id`): each tenant's data
//! encryption keys, wrapped by the deployment's key. Every payload a tenant sends (trigger
//! inputs, task arguments and results, run and step outputs, signal payloads, the
//! orchestrator's run state) is sealed under one of them wherever it is kept, so
//! destroying a tenant's keys (a tombstone per key) leaves every copy unreadable: Kafka's
//! retained records, Cassandra's files, Parquet, backups.
//!
//! A tenant may hold several keys: two processes meeting a new tenant at once may each
//! create one, and every key listed opens what it sealed. Processes seal with the
//! oldest (then smallest id), so they converge on one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::TenantId;

/// One data key's id, carried by every value it sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DataKeyId(pub Uuid);

impl DataKeyId {
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl std::fmt::Display for DataKeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

impl std::str::FromStr for DataKeyId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// A data key sealed by the deployment's key `kek_id` (ChaCha20-Poly1305, the tenant
/// and key id as associated data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    pub kek_id: String,
    /// Base64.
    pub nonce: String,
    /// Base64.
    pub ciphertext: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataKeyRecord {
    pub tenant: TenantId,
    pub key_id: DataKeyId,
    pub wrapped: WrappedKey,
    pub created_at: DateTime<Utc>,
}

impl DataKeyRecord {
    pub fn key(&self) -> String {
        record_key(&self.tenant, self.key_id)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self)
            .unwrap_or_else(|e| unreachable!("a data key record serializes: {e}"))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The topic key of one tenant's key.
pub fn record_key(tenant: &TenantId, key_id: DataKeyId) -> String {
    format!("{tenant}/{key_id}")
}

/// Splits a topic key into its tenant and key id.
pub fn parse_record_key(key: &[u8]) -> Option<(TenantId, DataKeyId)> {
    let text = std::str::from_utf8(key).ok()?;
    let (tenant, id) = text.split_once('/')?;
    Some((TenantId::new(tenant).ok()?, id.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let t = TenantId::new("acme").unwrap();
        let id = DataKeyId::random();
        let r = DataKeyRecord {
            tenant: t.clone(),
            key_id: id,
            wrapped: WrappedKey {
                kek_id: "k1".into(),
                nonce: "bm9uY2U=".into(),
                ciphertext: "Y3Q=".into(),
            },
            created_at: Utc::now(),
        };
        assert_eq!(DataKeyRecord::decode(&r.encode()).unwrap(), r);
        assert_eq!(parse_record_key(r.key().as_bytes()), Some((t, id)));
        assert_eq!(parse_record_key(b"acme/not-a-uuid"), None);
        assert_eq!(parse_record_key(b"no-slash"), None);
    }
}
