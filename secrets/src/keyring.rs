//! The deployment's sealing keys. The first key of the key file seals; every key listed
//! opens, so keys rotate by prepending a new one and re-sealing at leisure.

use std::path::Path;

use aiq_topics::TenantId;
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

    pub fn seal(
        &self,
        tenant: &TenantId,
        name: &SecretName,
        value: &SecretString,
        now: DateTime<Utc>,
    ) -> Result<SecretRecord, KeyringError> {
        let key = &self.keys[0];
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| KeyringError::Random(e.to_string()))?;
        let aad = aad(tenant, name);
        let ciphertext = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.expose_secret().as_bytes(),
                    aad: &aad,
                },
            )
            // Encryption fails only for messages beyond 256 GiB.
            .map_err(|_| KeyringError::Random("encryption failed".into()))?;
        Ok(SecretRecord {
            tenant: tenant.clone(),
            name: name.clone(),
            key_id: key.id.clone(),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ciphertext),
            updated_at: now,
        })
    }

    pub fn open(&self, record: &SecretRecord) -> Result<SecretString, SecretsError> {
        let name = record.name.to_string();
        let key = self
            .keys
            .iter()
            .find(|k| k.id == record.key_id)
            .ok_or_else(|| SecretsError::UnknownKey {
                name: name.clone(),
                key_id: record.key_id.clone(),
            })?;
        let malformed = |reason: String| SecretsError::Malformed {
            name: name.clone(),
            reason,
        };
        let nonce = B64
            .decode(&record.nonce)
            .map_err(|e| malformed(format!("nonce: {e}")))?;
        if nonce.len() != 12 {
            return Err(malformed(format!(
                "nonce has {} bytes, not 12",
                nonce.len()
            )));
        }
        let ciphertext = B64
            .decode(&record.ciphertext)
            .map_err(|e| malformed(format!("ciphertext: {e}")))?;
        let aad = aad(&record.tenant, &record.name);
        let plain = key
            .cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretsError::Tampered { name: name.clone() })?;
        let text = String::from_utf8(plain).map_err(|_| malformed("not UTF-8".into()))?;
        Ok(SecretString::from(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
