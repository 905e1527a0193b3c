//! Per-tenant API keys for machine clients: `aiq_<key_id>_<secret>`.
//!
//! Stored as SHA-256 of the secret, not argon2: the secret is 256 random bits, not a
//! guessable password, so a slow hash buys nothing and would cost every request.

use aiq_topics::TenantId;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::role::Role;

const PREFIX: &str = "aiq_";

/// What the store keeps; never the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub tenant: TenantId,
    pub role: Role,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    pub created_at: u64,
    pub revoked: bool,
    pub label: String,
}

/// A malformed key. Says nothing about which part is wrong beyond the shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed API key")]
pub struct MalformedApiKey;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operating system random source failed")]
pub struct RandomUnavailable;

pub struct ApiKey;

impl ApiKey {
    /// A new key: the plaintext (shown once) and the record to store.
    pub fn generate(
        tenant: TenantId,
        role: Role,
        label: impl Into<String>,
        now_unix: u64,
    ) -> Result<(String, ApiKeyRecord), RandomUnavailable> {
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        getrandom::fill(&mut id).map_err(|_| RandomUnavailable)?;
        getrandom::fill(&mut secret).map_err(|_| RandomUnavailable)?;
        let key_id = hex::encode(id);
        let secret = URL_SAFE_NO_PAD.encode(secret);
        let record = ApiKeyRecord {
            key_id: key_id.clone(),
            tenant,
            role,
            hash: hash_secret(&secret),
            created_at: now_unix,
            revoked: false,
            label: label.into(),
        };
        Ok((format!("{PREFIX}{key_id}_{secret}"), record))
    }

    /// Splits a plaintext key into (key_id, secret). The secret may contain `_`
    /// (base64url), so split only at the first `_` after the id.
    pub fn parse(plaintext: &str) -> Result<(String, String), MalformedApiKey> {
        let rest = plaintext.strip_prefix(PREFIX).ok_or(MalformedApiKey)?;
        let (id, secret) = rest.split_once('_').ok_or(MalformedApiKey)?;
        let id_ok = id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let secret_ok = URL_SAFE_NO_PAD
            .decode(secret)
            .is_ok_and(|bytes| bytes.len() == 32);
        if id_ok && secret_ok {
            Ok((id.to_owned(), secret.to_owned()))
        } else {
            Err(MalformedApiKey)
        }
    }

    /// Constant-time comparison of the secret's hash with the stored one.
    pub fn verify(secret: &str, record: &ApiKeyRecord) -> bool {
        let computed = hash_secret(secret);
        computed.as_bytes().ct_eq(record.hash.as_bytes()).into()
    }
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generate_parse_verify() {
        let t = TenantId::new("acme").unwrap();
        let (plain, rec) = ApiKey::generate(t.clone(), Role::TenantAdmin, "ci", 7).unwrap();
        let (id, secret) = ApiKey::parse(&plain).unwrap();
        assert_eq!(id, rec.key_id);
        assert_eq!(
            (rec.tenant, rec.role, rec.created_at),
            (t, Role::TenantAdmin, 7)
        );
        assert!(!plain.contains(&rec.hash));
        let rec = ApiKeyRecord {
            tenant: TenantId::new("acme").unwrap(),
            ..rec
        };
        assert!(ApiKey::verify(&secret, &rec));
        let (_, other) = ApiKey::parse(
            &ApiKey::generate(rec.tenant.clone(), Role::User, "x", 0)
                .unwrap()
                .0,
        )
        .unwrap();
        assert!(!ApiKey::verify(&other, &rec));
    }

    #[test]
    fn parse_rejects_bad_shapes() {
        for s in [
            "",
            "aiq_",
            "aiq_0123456789abcdef",
            "aiq_XYZ_abc",
            "key_0123456789abcdef_AAAA",
        ] {
            assert_eq!(ApiKey::parse(s), Err(MalformedApiKey), "{s}");
        }
    }
}
