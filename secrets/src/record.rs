//! The record of the compacted secrets topic, keyed `tenant/name`; a tombstone deletes.

use aiq_topics::TenantId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A secret's name as definitions reference it: 1 to 64 of `a-z A-Z 0-9 _ - .`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret name {name:?} is invalid: {reason}")]
pub struct SecretNameError {
    pub name: String,
    pub reason: &'static str,
}

impl SecretName {
    pub fn new(name: &str) -> Result<Self, SecretNameError> {
        let err = |reason| SecretNameError {
            name: name.chars().take(80).collect(),
            reason,
        };
        if name.is_empty() || name.len() > 64 {
            return Err(err("it must be 1 to 64 characters long"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(err("only letters, digits, `_`, `-` and `.` are allowed"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SecretName {
    type Error = SecretNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<SecretName> for String {
    fn from(n: SecretName) -> Self {
        n.0
    }
}

impl std::fmt::Display for SecretName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One sealed secret. `nonce` and `ciphertext` are base64; the ciphertext includes the
/// Poly1305 tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRecord {
    pub tenant: TenantId,
    pub name: SecretName,
    pub key_id: String,
    pub nonce: String,
    pub ciphertext: String,
    pub updated_at: DateTime<Utc>,
}

impl SecretRecord {
    pub fn key(&self) -> String {
        Self::key_of(&self.tenant, &self.name)
    }

    pub fn key_of(tenant: &TenantId, name: &SecretName) -> String {
        format!("{tenant}/{name}")
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("secret record encodes: {e}"))
    }

    pub fn decode(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_the_error_says_why() {
        assert!(SecretName::new("api-token.v2_x").is_ok());
        assert_eq!(
            SecretName::new("a/b").unwrap_err().to_string(),
            "secret name \"a/b\" is invalid: only letters, digits, `_`, `-` and `.` are allowed"
        );
        assert!(SecretName::new("").is_err());
        assert!(SecretName::new(&"x".repeat(65)).is_err());
    }
}
