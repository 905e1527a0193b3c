//! The deployment's sealing keys. The first key of the key file seals; every key listed
//! opens, so keys rotate by prepending a new one and re-sealing at leisure.

use std::path::Path;

use aiq_topics::{DataKeyId, TenantId, WrappedKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::SecretsError;
use crate::record::{SecretName, SecretRecord};

pub const KEY_FILE_HELP: &str = "one key per line, `<key-id> <64 hex digits>`, the sealing key \
     first; `#` starts a comment. Make one with `aiq secrets new-key`.";

struct MasterKey {
    id: String,
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({:?}, <redacted>)", self.id)
    }
}

impl MasterKey {
    fn from_bytes(id: &str, bytes: &[u8; 32]) -> Self {
        Self {
            id: id.to_owned(),
            cipher: ChaCha20Poly1305::new(Key::from_slice(bytes)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("secrets key file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secrets key file {path}, line {line}: {reason} ({KEY_FILE_HELP})")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("secrets key file {path} holds no key ({KEY_FILE_HELP})")]
    Empty { path: String },
    #[error("the random number generator failed: {0}")]
    Random(String),
}

#[derive(Debug)]
pub struct Keyring {
    /// Never empty; the first seals.
    keys: Vec<MasterKey>,
}

fn aad(tenant: &TenantId, name: &SecretName) -> Vec<u8> {
    format!("aiq-secret:v1:{tenant}/{name}").into_bytes()
}

impl Keyring {
    /// Parses a key file's text; `path` only names it in errors.
    pub fn parse(path: &str, text: &str) -> Result<Self, KeyringError> {
        let mut keys = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: String| KeyringError::Line {
                path: path.to_owned(),
                line: i + 1,
                reason,
            };
            let mut parts = line.split_whitespace();
            let (Some(id), Some(hex_key), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("expected `<key-id> <64 hex digits>`".into()));
            };
            let bytes =
                hex::decode(hex_key).map_err(|e| bad(format!("the key is not hex: {e}")))?;
            let bytes: [u8; 32] = bytes
                .try_into()
                .map_err(|b: Vec<u8>| bad(format!("the key has {} bytes, not 32", b.len())))?;
            if keys.iter().any(|k: &MasterKey| k.id == id) {
                return Err(bad(format!("key id {id:?} is listed twice")));
            }
            keys.push(MasterKey::from_bytes(id, &bytes));
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Self { keys })
    }

    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyringError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&shown, &text)
    }

    /// A keyring of one fresh random key, kept only in memory (tools and tests).
    pub fn generate(id: &str) -> Result<Self, KeyringError> {
        Self::parse("generated", &Self::new_key_line(id)?)
    }

    /// A key file line with a fresh random key.
    pub fn new_key_line(id: &str) -> Result<String, KeyringError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyringError::Random(e.to_string()))?;
        Ok(format!("{id} {}", hex::encode(bytes)))
    }

    pub fn sealing_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Seals `plain` under the sealing key, bound to `aad`: (key id, nonce, ciphertext).
    fn seal_raw(
        &self,
        aad: &[u8],
        plain: &[u8],
    ) -> Result<(String, [u8; 12], Vec<u8>), KeyringError> {
        let key = &self.keys[0];
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| KeyringError::Random(e.to_string()))?;
        let ciphertext = key
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            // Encryption fails only for messages beyond 256 GiB.
            .map_err(|_| KeyringError::Random("encryption failed".into()))?;
        Ok((key.id.clone(), nonce, ciphertext))
    }

    /// Opens what [`Keyring::seal_raw`] sealed; `name` names the value in errors.
    fn open_raw(
        &self,
        name: &str,
        key_id: &str,
        nonce: &str,
        ciphertext: &str,
        aad: &[u8],
    ) -> Result<SecretString, SecretsError> {
        let key =
            self.keys
                .iter()
                .find(|k| k.id == key_id)
                .ok_or_else(|| SecretsError::UnknownKey {
                    name: name.to_owned(),
                    key_id: key_id.to_owned(),
                })?;
        let malformed = |reason: String| SecretsError::Malformed {
            name: name.to_owned(),
            reason,
        };
        let nonce = B64
            .decode(nonce)
            .map_err(|e| malformed(format!("nonce: {e}")))?;
        if nonce.len() != 12 {
            return Err(malformed(format!(
                "nonce has {} bytes, not 12",
                nonce.len()
            )));
        }
        let ciphertext = B64
            .decode(ciphertext)
            .map_err(|e| malformed(format!("ciphertext: {e}")))?;
        let plain = key
            .cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad,
                },
            )
            .map_err(|_| SecretsError::Tampered {
                name: name.to_owned(),
            })?;
        let text = String::from_utf8(plain).map_err(|_| malformed("not UTF-8".into()))?;
        Ok(SecretString::from(text))
    }

    pub fn seal(
        &self,
        tenant: &TenantId,
        name: &SecretName,
        value: &SecretString,
        now: DateTime<Utc>,
    ) -> Result<SecretRecord, KeyringError> {
        let (key_id, nonce, ciphertext) =
            self.seal_raw(&aad(tenant, name), value.expose_secret().as_bytes())?;
        Ok(SecretRecord {
            tenant: tenant.clone(),
            name: name.clone(),
            key_id,
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ciphertext),
            updated_at: now,
        })
    }

    pub fn open(&self, record: &SecretRecord) -> Result<SecretString, SecretsError> {
        self.open_raw(
            record.name.as_str(),
            &record.key_id,
            &record.nonce,
            &record.ciphertext,
            &aad(&record.tenant, &record.name),
        )
    }

    /// Seals a value that is not a connector secret (a webhook's signing secret), bound
    /// to `context`, which must name what it is and whose (`webhook:acme/shop-paid`):
    /// the value opens only for the same context.
    pub fn seal_value(&self, context: &str, value: &SecretString) -> Result<Sealed, KeyringError> {
        let (key_id, nonce, ciphertext) =
            self.seal_raw(&value_aad(context), value.expose_secret().as_bytes())?;
        Ok(Sealed {
            key_id,
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ciphertext),
        })
    }

    /// Opens what [`Keyring::seal_value`] sealed for the same `context`.
    pub fn open_value(&self, context: &str, sealed: &Sealed) -> Result<SecretString, SecretsError> {
        self.open_raw(
            context,
            &sealed.key_id,
            &sealed.nonce,
            &sealed.ciphertext,
            &value_aad(context),
        )
    }
}

impl Keyring {
    /// Wraps a tenant's data key under the sealing key, bound to the tenant and the
    /// key's id.
    pub fn wrap_data_key(
        &self,
        tenant: &TenantId,
        key_id: DataKeyId,
        key: &[u8; 32],
    ) -> Result<WrappedKey, KeyringError> {
        let hex_key = SecretString::from(hex::encode(key));
        let sealed = self.seal_value(&data_key_context(tenant, key_id), &hex_key)?;
        Ok(WrappedKey {
            kek_id: sealed.key_id,
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
        })
    }

    /// Opens what [`Keyring::wrap_data_key`] wrapped for the same tenant and id.
    pub fn unwrap_data_key(
        &self,
        tenant: &TenantId,
        key_id: DataKeyId,
        wrapped: &WrappedKey,
    ) -> Result<[u8; 32], SecretsError> {
        let context = data_key_context(tenant, key_id);
        let sealed = Sealed {
            key_id: wrapped.kek_id.clone(),
            nonce: wrapped.nonce.clone(),
            ciphertext: wrapped.ciphertext.clone(),
        };
        let hex_key = self.open_value(&context, &sealed)?;
        hex::decode(hex_key.expose_secret())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| SecretsError::Malformed {
                name: context,
                reason: "a data key is 32 bytes in hex".into(),
            })
    }
}

fn data_key_context(tenant: &TenantId, key_id: DataKeyId) -> String {
    format!("data-key:{tenant}/{key_id}")
}

/// Associated data of a value sealed by [`Keyring::seal_value`]; never equal to a
/// connector secret's, so neither opens as the other.
fn value_aad(context: &str) -> Vec<u8> {
    format!("aiq-sealed:v1:{context}").into_bytes()
}

/// A value sealed by [`Keyring::seal_value`], kept as one line of text
/// (`aiq-sealed:v1:<nonce>:<ciphertext>:<key id>`, base64 parts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: String,
    pub ciphertext: String,
}

impl Sealed {
    pub const PREFIX: &'static str = "aiq-sealed:v1:";

    pub fn encode(&self) -> String {
        format!(
            "{}{}:{}:{}",
            Self::PREFIX,
            self.nonce,
            self.ciphertext,
            self.key_id
        )
    }

    /// `None` when `text` is not an encoded [`Sealed`] (base64 has no `:`, so the key id
    /// is everything after the second one).
    pub fn decode(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(Self::PREFIX)?;
        let mut parts = rest.splitn(3, ':');
        let (nonce, ciphertext, key_id) = (parts.next()?, parts.next()?, parts.next()?);
        if key_id.is_empty() {
            return None;
        }
        Some(Self {
            key_id: key_id.to_owned(),
            nonce: nonce.to_owned(),
            ciphertext: ciphertext.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_data_key_unwraps_only_for_its_tenant_and_id() {
        let ring = Keyring::generate("k1").unwrap();
        let acme = TenantId::new("acme").unwrap();
        let id = DataKeyId::random();
        let key = [7u8; 32];
        let w = ring.wrap_data_key(&acme, id, &key).unwrap();
        assert!(!w.ciphertext.contains(&hex::encode(key)));
        assert_eq!(ring.unwrap_data_key(&acme, id, &w).unwrap(), key);
        let zeta = TenantId::new("zeta").unwrap();
        assert!(matches!(
            ring.unwrap_data_key(&zeta, id, &w),
            Err(SecretsError::Tampered { .. })
        ));
        assert!(
            ring.unwrap_data_key(&acme, DataKeyId::random(), &w)
                .is_err()
        );
    }

    fn ring() -> Keyring {
        Keyring::generate("k1").unwrap()
    }

    fn t(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }
    fn n(s: &str) -> SecretName {
        SecretName::new(s).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_for_its_own_tenant_and_name() {
        let k = ring();
        let rec = k
            .seal(&t("acme"), &n("token"), &"s3cr3t-value".into(), Utc::now())
            .unwrap();
        assert!(!rec.encode().windows(6).any(|w| w == b"s3cr3t"));
        assert_eq!(k.open(&rec).unwrap().expose_secret(), "s3cr3t-value");
        let moved = SecretRecord {
            tenant: t("globex"),
            ..rec.clone()
        };
        assert_eq!(
            k.open(&moved).unwrap_err(),
            SecretsError::Tampered {
                name: "token".into()
            }
        );
        let renamed = SecretRecord {
            name: n("other"),
            ..rec.clone()
        };
        assert!(matches!(
            k.open(&renamed),
            Err(SecretsError::Tampered { .. })
        ));
        let other_ring = ring();
        assert!(matches!(
            other_ring.open(&rec),
            Err(SecretsError::Tampered { .. })
        ));
    }

    #[test]
    fn older_keys_open_and_the_first_seals() {
        let old = Keyring::new_key_line("old").unwrap();
        let new = Keyring::new_key_line("new").unwrap();
        let before = Keyring::parse("f", &old).unwrap();
        let rec = before
            .seal(&t("acme"), &n("pw"), &"v".into(), Utc::now())
            .unwrap();
        let after = Keyring::parse("f", &format!("{new}\n# rotated\n{old}\n")).unwrap();
        assert_eq!(after.open(&rec).unwrap().expose_secret(), "v");
        assert_eq!(after.sealing_key_id(), "new");
        let only_new = Keyring::parse("f", &new).unwrap();
        assert_eq!(
            only_new.open(&rec).unwrap_err().to_string(),
            "secret \"pw\" was sealed with key \"old\", which this process does not have"
        );
    }

    #[test]
    fn key_file_errors_name_the_line_and_the_reason() {
        let e = Keyring::parse("keys.txt", "k1 abcd")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("secrets key file keys.txt, line 1: the key has 2 bytes, not 32"),
            "{e}"
        );
        let e = Keyring::parse("keys.txt", "\n# only a comment\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("secrets key file keys.txt holds no key"),
            "{e}"
        );
        let e = Keyring::parse("keys.txt", "k1 zz k2")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 1: expected `<key-id> <64 hex digits>`"),
            "{e}"
        );
    }

    #[test]
    fn a_sealed_value_opens_only_for_its_own_context_and_not_as_a_connector_secret() {
        let k = ring();
        let sealed = k
            .seal_value("webhook:acme/shop-paid", &"whsec_abc".into())
            .unwrap();
        let text = sealed.encode();
        assert!(text.starts_with(Sealed::PREFIX) && !text.contains("whsec_abc"));
        let back = Sealed::decode(&text).unwrap();
        assert_eq!(back, sealed);
        assert_eq!(
            k.open_value("webhook:acme/shop-paid", &back)
                .unwrap()
                .expose_secret(),
            "whsec_abc"
        );
        assert_eq!(
            k.open_value("webhook:globex/shop-paid", &back).unwrap_err(),
            SecretsError::Tampered {
                name: "webhook:globex/shop-paid".into()
            }
        );
        // The same bytes as a connector secret record do not open either.
        let as_record = SecretRecord {
            tenant: t("acme"),
            name: n("shop-paid"),
            key_id: back.key_id.clone(),
            nonce: back.nonce.clone(),
            ciphertext: back.ciphertext.clone(),
            updated_at: Utc::now(),
        };
        assert!(matches!(
            k.open(&as_record),
            Err(SecretsError::Tampered { .. })
        ));
        assert_eq!(Sealed::decode("whsec_abc"), None);
        assert_eq!(Sealed::decode("aiq-sealed:v1:a:b:"), None);
        assert_eq!(
            Sealed::decode("aiq-sealed:v1:a:b:key:with:colons")
                .unwrap()
                .key_id,
            "key:with:colons"
        );
    }

    proptest! {
        #[test]
        fn any_value_round_trips(value in ".{0,200}") {
            let k = ring();
            let rec = k.seal(&t("acme"), &n("x"), &value.clone().into(), Utc::now()).unwrap();
            let back = SecretRecord::decode(&rec.encode()).unwrap();
            let opened = k.open(&back).unwrap();
            prop_assert_eq!(opened.expose_secret(), value.as_str());
        }
    }
}
