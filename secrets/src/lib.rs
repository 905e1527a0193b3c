//! Tenant secrets: connector credentials stored sealed, opened only in a worker at the
//! moment a step needs them.
//!
//! Ingest seals a value with the deployment's current key and writes the sealed record to
//! the compacted secrets topic; workers read that topic into memory and open a value per
//! call. The plaintext never reaches Kafka, an event or a log line. The tenant and the
//! secret's name are bound into the seal as associated data, so a sealed value copied
//! under another tenant or name fails to open instead of leaking across tenants.

mod keyring;
mod record;

pub use keyring::{KEY_FILE_HELP, Keyring, KeyringError, Sealed};
pub use record::{SecretName, SecretNameError, SecretRecord};
pub use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error("secret {name:?} was sealed with key {key_id:?}, which this process does not have")]
    UnknownKey { name: String, key_id: String },
    #[error("secret {name:?} does not open: it was altered, or sealed for another tenant or name")]
    Tampered { name: String },
    #[error("secret {name:?} is stored malformed: {reason}")]
    Malformed { name: String, reason: String },
}

/// The `[secrets]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSettings {
    /// The key file (see [`KEY_FILE_HELP`]); empty: no secrets can be set or opened.
    pub key_file: String,
}

impl SecretsSettings {
    pub fn keyring(&self) -> Result<Option<Keyring>, KeyringError> {
        if self.key_file.is_empty() {
            return Ok(None);
        }
        Keyring::load(std::path::Path::new(&self.key_file)).map(Some)
    }
}
