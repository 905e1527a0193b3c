//! The data keys one process holds, and sealing with them. Pure: the follower and the
//! key creation in `lib.rs` feed it.
//!
//! A sealed JSON value is the object `{"aiq_sealed": "v1.<key id>.<base64 nonce ‖
//! ciphertext>"}` put where the value was; a sealed byte string (a whole record) is
//! `\0aiqs1` ‖ key id (16 bytes) ‖ nonce (12) ‖ ciphertext. ChaCha20-Poly1305, with the
//! tenant and the field (the JSON key holding the value, or the record's purpose) as
//! associated data: a sealed value moved to another tenant or field does not open.

use std::collections::{BTreeMap, HashMap, HashSet};

use aiq_topics::{DataKeyId, TenantId};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::VaultError;

/// The one member of a sealed value's object.
pub const SEALED_FIELD: &str = "aiq_sealed";
/// How a sealed text (an error message, where a field holds a string) begins; it holds
/// [`SEALED_FIELD`] too, so one substring search finds both forms in a record.
pub const TEXT_PREFIX: &str = "aiq_sealed:v1.";
const VALUE_VERSION: &str = "v1";
const BYTES_MAGIC: &[u8] = b"\0aiqs1";
const NONCE_LEN: usize = 12;

struct TenantKeys {
    keys: BTreeMap<DataKeyId, (DateTime<Utc>, ChaCha20Poly1305)>,
}

impl TenantKeys {
    /// The oldest key (then the smallest id): every process picks the same one.
    fn sealing(&self) -> Option<(DataKeyId, &ChaCha20Poly1305)> {
        self.keys
            .iter()
            .min_by_key(|(id, (at, _))| (*at, **id))
            .map(|(id, (_, c))| (*id, c))
    }
}

/// Every data key this process knows, by tenant.
#[derive(Default)]
pub struct KeyTable {
    tenants: HashMap<TenantId, TenantKeys>,
    /// Tenants whose keys this process saw destroyed: nothing more is sealed for them.
    destroyed: HashSet<TenantId>,
}

fn aad(tenant: &TenantId, field: &str) -> Vec<u8> {
    format!("aiq-data:v1:{tenant}:{field}").into_bytes()
}

fn nonce() -> Result<[u8; NONCE_LEN], VaultError> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).map_err(|e| VaultError::Random(e.to_string()))?;
    Ok(n)
}

impl KeyTable {
    pub fn insert(&mut self, tenant: &TenantId, id: DataKeyId, at: DateTime<Utc>, key: &[u8; 32]) {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
        self.destroyed.remove(tenant);
        self.tenants
            .entry(tenant.clone())
            .or_insert_with(|| TenantKeys {
                keys: BTreeMap::new(),
            })
            .keys
            .insert(id, (at, cipher));
    }

    /// A tombstone: the key is gone, and what it sealed with it.
    pub fn remove(&mut self, tenant: &TenantId, id: DataKeyId) {
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.keys.remove(&id);
            if t.keys.is_empty() {
                self.tenants.remove(tenant);
            }
        }
        self.destroyed.insert(tenant.clone());
    }

    pub fn has_key(&self, tenant: &TenantId) -> bool {
        self.tenants.contains_key(tenant)
    }

    pub fn is_destroyed(&self, tenant: &TenantId) -> bool {
        self.destroyed.contains(tenant) && !self.tenants.contains_key(tenant)
    }

    pub fn key_ids(&self, tenant: &TenantId) -> Vec<DataKeyId> {
        self.tenants
            .get(tenant)
            .map(|t| t.keys.keys().copied().collect())
            .unwrap_or_default()
    }

    pub fn has(&self, tenant: &TenantId, id: DataKeyId) -> bool {
        self.tenants
            .get(tenant)
            .is_some_and(|t| t.keys.contains_key(&id))
    }

    fn seal_raw(
        &self,
        tenant: &TenantId,
        field: &str,
        plain: &[u8],
    ) -> Result<(DataKeyId, Vec<u8>), VaultError> {
        let (id, cipher) = self
            .tenants
            .get(tenant)
            .and_then(TenantKeys::sealing)
            .ok_or_else(|| VaultError::NoKey {
                tenant: tenant.clone(),
            })?;
        let n = nonce()?;
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&n),
                Payload {
                    msg: plain,
                    aad: &aad(tenant, field),
                },
            )
            .map_err(|_| VaultError::Random("encryption failed".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&n);
        out.extend_from_slice(&ct);
        Ok((id, out))
    }

    fn open_raw(
        &self,
        tenant: &TenantId,
        field: &str,
        id: DataKeyId,
        sealed: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let cipher = self
            .tenants
            .get(tenant)
            .and_then(|t| t.keys.get(&id))
            .map(|(_, c)| c)
            .ok_or_else(|| VaultError::UnknownKey {
                tenant: tenant.clone(),
                key_id: id,
            })?;
        if sealed.len() < NONCE_LEN {
            return Err(VaultError::Malformed {
                tenant: tenant.clone(),
                field: field.to_owned(),
                reason: "shorter than a nonce".into(),
            });
        }
        let (n, ct) = sealed.split_at(NONCE_LEN);
        cipher
            .decrypt(
                Nonce::from_slice(n),
                Payload {
                    msg: ct,
                    aad: &aad(tenant, field),
                },
            )
            .map_err(|_| VaultError::Tampered {
                tenant: tenant.clone(),
                field: field.to_owned(),
            })
    }

    /// `value` sealed under the tenant's key, bound to `field`.
    pub fn seal_value(
        &self,
        tenant: &TenantId,
        field: &str,
        value: &Value,
    ) -> Result<Value, VaultError> {
        let plain = serde_json::to_vec(value)
            .unwrap_or_else(|e| unreachable!("a JSON value serializes: {e}"));
        let (id, sealed) = self.seal_raw(tenant, field, &plain)?;
        let text = format!("{VALUE_VERSION}.{id}.{}", B64.encode(sealed));
        let mut env = serde_json::Map::with_capacity(1);
        env.insert(SEALED_FIELD.to_owned(), Value::String(text));
        Ok(Value::Object(env))
    }

    /// `text` sealed for the tenant's `field`, as a string (`aiq_sealed:v1.<key id>.<base64>`).
    pub fn seal_text(
        &self,
        tenant: &TenantId,
        field: &str,
        text: &str,
    ) -> Result<String, VaultError> {
        let (id, sealed) = self.seal_raw(tenant, field, text.as_bytes())?;
        Ok(format!("{TEXT_PREFIX}{id}.{}", B64.encode(sealed)))
    }

    /// Opens `text` if it is a sealed text; `None` when it is not one.
    pub fn open_text(
        &self,
        tenant: &TenantId,
        field: &str,
        text: &str,
    ) -> Result<Option<String>, VaultError> {
        let Some(rest) = text.strip_prefix(TEXT_PREFIX) else {
            return Ok(None);
        };
        let malformed = |reason: &str| VaultError::Malformed {
            tenant: tenant.clone(),
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        let (id, body) = rest
            .split_once('.')
            .ok_or_else(|| malformed("not `aiq_sealed:v1.<key id>.<base64>`"))?;
        let id: DataKeyId = id.parse().map_err(|_| malformed("the key id is no UUID"))?;
        let sealed = B64
            .decode(body)
            .map_err(|_| malformed("the body is not base64"))?;
        let plain = self.open_raw(tenant, field, id, &sealed)?;
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| malformed("the opened text is not UTF-8"))
    }

    /// Opens `value` if it is a sealed value; `None` when it is not one.
    pub fn open_value(
        &self,
        tenant: &TenantId,
        field: &str,
        value: &Value,
    ) -> Result<Option<Value>, VaultError> {
        let Some(text) = sealed_text(value) else {
            return Ok(None);
        };
        let malformed = |reason: &str| VaultError::Malformed {
            tenant: tenant.clone(),
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = text.splitn(3, '.');
        let (_, id, body) = match (parts.next(), parts.next(), parts.next()) {
            (Some(v), Some(id), Some(body)) if v == VALUE_VERSION => (v, id, body),
            _ => return Err(malformed("not `v1.<key id>.<base64>`")),
        };
        let id: DataKeyId = id.parse().map_err(|_| malformed("the key id is no UUID"))?;
        let sealed = B64
            .decode(body)
            .map_err(|_| malformed("the body is not base64"))?;
        let plain = self.open_raw(tenant, field, id, &sealed)?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|_| malformed("the opened value is not JSON"))
    }

    /// Opens every sealed value in `value`, in place; each is bound to the name of the
    /// member holding it (`""` at the top). Returns how many were opened.
    pub fn open_tree(&self, tenant: &TenantId, value: &mut Value) -> Result<usize, VaultError> {
        self.open_at(tenant, "", value)
    }

    fn open_at(
        &self,
        tenant: &TenantId,
        field: &str,
        value: &mut Value,
    ) -> Result<usize, VaultError> {
        if let Some(open) = self.open_value(tenant, field, value)? {
            // What a tenant sent is not walked: only what a stage sealed is opened.
            *value = open;
            return Ok(1);
        }
        if let Value::String(text) = value
            && let Some(open) = self.open_text(tenant, field, text)?
        {
            *text = open;
            return Ok(1);
        }
        let mut n = 0;
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    n += self.open_at(tenant, k, v)?;
                }
            }
            Value::Array(items) => {
                for v in items {
                    n += self.open_at(tenant, field, v)?;
                }
            }
            _ => {}
        }
        Ok(n)
    }

    /// A whole record sealed under the tenant's key, bound to `purpose`.
    pub fn seal_bytes(
        &self,
        tenant: &TenantId,
        purpose: &str,
        plain: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let (id, sealed) = self.seal_raw(tenant, purpose, plain)?;
        let mut out = Vec::with_capacity(BYTES_MAGIC.len() + 16 + sealed.len());
        out.extend_from_slice(BYTES_MAGIC);
        out.extend_from_slice(id.0.as_bytes());
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`KeyTable::seal_bytes`] sealed; bytes that are not sealed come back
    /// as they are (records written before sealing was on).
    pub fn open_bytes<'a>(
        &self,
        tenant: &TenantId,
        purpose: &str,
        bytes: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, VaultError> {
        let Some(rest) = bytes.strip_prefix(BYTES_MAGIC) else {
            return Ok(std::borrow::Cow::Borrowed(bytes));
        };
        if rest.len() < 16 {
            return Err(VaultError::Malformed {
                tenant: tenant.clone(),
                field: purpose.to_owned(),
                reason: "shorter than a key id".into(),
            });
        }
        let (id, sealed) = rest.split_at(16);
        let id = DataKeyId(uuid_from(id));
        self.open_raw(tenant, purpose, id, sealed)
            .map(std::borrow::Cow::Owned)
    }
}

fn uuid_from(bytes: &[u8]) -> uuid::Uuid {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[..16]);
    uuid::Uuid::from_bytes(b)
}

/// The sealed text if `value` is a sealed value.
pub fn sealed_text(value: &Value) -> Option<&str> {
    match value {
        Value::Object(map) if map.len() == 1 => map.get(SEALED_FIELD)?.as_str(),
        _ => None,
    }
}

/// Whether `value` is sealed: a sealed value's object or a sealed text.
pub fn is_sealed(value: &Value) -> bool {
    sealed_text(value).is_some() || value.as_str().is_some_and(|t| t.starts_with(TEXT_PREFIX))
}

/// Whether `bytes` is a record sealed whole.
pub fn is_sealed_bytes(bytes: &[u8]) -> bool {
    bytes.starts_with(BYTES_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn table() -> (KeyTable, TenantId) {
        let mut t = KeyTable::default();
        let acme = TenantId::new("acme").unwrap();
        t.insert(&acme, DataKeyId::random(), Utc::now(), &[1u8; 32]);
        (t, acme)
    }

    #[test]
    fn a_value_opens_only_for_its_tenant_and_field() {
        let (mut t, acme) = table();
        let v = json!({"card": "4111-canary"});
        let s = t.seal_value(&acme, "input", &v).unwrap();
        assert!(!s.to_string().contains("canary"));
        assert_eq!(t.open_value(&acme, "input", &s).unwrap(), Some(v.clone()));
        assert!(matches!(
            t.open_value(&acme, "output", &s),
            Err(VaultError::Tampered { .. })
        ));
        let zeta = TenantId::new("zeta").unwrap();
        t.insert(&zeta, DataKeyId::random(), Utc::now(), &[1u8; 32]);
        assert!(
            t.open_value(&zeta, "input", &s).is_err(),
            "another tenant's key"
        );
        assert_eq!(t.open_value(&acme, "input", &v).unwrap(), None, "clear");
    }

    #[test]
    fn a_tree_opens_in_place_and_a_destroyed_key_leaves_it_shut() {
        let (mut t, acme) = table();
        let mut rec = json!({
            "run": "r1",
            "input": t.seal_value(&acme, "input", &json!({"a": 1})).unwrap(),
            "steps": [{"output": t.seal_value(&acme, "output", &json!("x")).unwrap()}],
        });
        let sealed = rec.clone();
        assert_eq!(t.open_tree(&acme, &mut rec).unwrap(), 2);
        assert_eq!(
            rec,
            json!({"run": "r1", "input": {"a": 1}, "steps": [{"output": "x"}]})
        );
        for id in t.key_ids(&acme) {
            t.remove(&acme, id);
        }
        assert!(t.is_destroyed(&acme) && !t.has_key(&acme));
        let mut again = sealed;
        assert!(matches!(
            t.open_tree(&acme, &mut again),
            Err(VaultError::UnknownKey { .. })
        ));
        assert!(matches!(
            t.seal_value(&acme, "input", &json!(1)),
            Err(VaultError::NoKey { .. })
        ));
    }

    #[test]
    fn a_text_is_sealed_as_a_string_and_opens_in_a_tree() {
        let (t, acme) = table();
        let s = t
            .seal_text(&acme, "message", "HTTP 500: card 4111-canary")
            .unwrap();
        assert!(s.starts_with(TEXT_PREFIX) && !s.contains("canary"));
        assert!(is_sealed(&serde_json::Value::String(s.clone())));
        let mut rec = json!({"error": {"class": "fatal", "message": s}});
        assert_eq!(t.open_tree(&acme, &mut rec).unwrap(), 1);
        assert_eq!(rec["error"]["message"], "HTTP 500: card 4111-canary");
        assert_eq!(t.open_text(&acme, "message", "plain").unwrap(), None);
        assert!(
            t.open_text(
                &acme,
                "reason",
                &t.seal_text(&acme, "message", "x").unwrap()
            )
            .is_err()
        );
    }

    #[test]
    fn bytes_round_trip_and_clear_bytes_pass() {
        let (t, acme) = table();
        let s = t.seal_bytes(&acme, "changelog", b"state canary").unwrap();
        assert!(is_sealed_bytes(&s));
        assert!(!s.windows(6).any(|w| w == b"canary"));
        assert_eq!(
            &*t.open_bytes(&acme, "changelog", &s).unwrap(),
            b"state canary"
        );
        assert_eq!(&*t.open_bytes(&acme, "changelog", b"{}").unwrap(), b"{}");
        assert!(t.open_bytes(&acme, "other", &s).is_err());
    }

    #[test]
    fn the_oldest_key_seals_and_every_key_opens() {
        let (mut t, acme) = table();
        let old = t.seal_value(&acme, "f", &json!(1)).unwrap();
        let later = Utc::now() + chrono::Duration::seconds(5);
        t.insert(&acme, DataKeyId::random(), later, &[2u8; 32]);
        let first = t.key_ids(&acme);
        let s = t.seal_value(&acme, "f", &json!(2)).unwrap();
        assert_eq!(t.open_value(&acme, "f", &old).unwrap(), Some(json!(1)));
        assert_eq!(t.open_value(&acme, "f", &s).unwrap(), Some(json!(2)));
        assert_eq!(first.len(), 2);
    }

    proptest! {
        #[test]
        fn any_value_round_trips(s in ".{0,64}", n in any::<i64>(), b in any::<bool>()) {
            let (t, acme) = table();
            let v = json!({"s": s, "n": n, "b": b, "l": [s, n]});
            let sealed = t.seal_value(&acme, "output", &v).unwrap();
            prop_assert_eq!(t.open_value(&acme, "output", &sealed).unwrap(), Some(v));
        }
    }
}
