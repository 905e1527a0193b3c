//! Webhook signing secrets: sealed at rest with the deployment's keyring (like connector
//! secrets, bound to the tenant and hook), and cached in memory so that deliveries do not
//! read the store each time.
//!
//! The `webhook_secrets` row holds `aiq-sealed:v1:…` ([`aiq_secrets::Sealed`]). A row
//! written before secrets were sealed holds the plain `whsec_…` value; it is still read
//! (no keyring needed) until the secret is rotated, which seals it.
//!
//! The cache holds a hook's secret, or its absence, for [`FRESH_FOR`]. A secret rotated
//! through another process is picked up when that runs out, or at the first delivery
//! that fails against the cached one — at most one store read per hook every
//! [`REREAD_AFTER`], so bad signatures cannot drive reads either. Callers look up only
//! hooks that a registered workflow declares (the in-memory catalog), which bounds the
//! cache by the registered workflows; [`MAX_ENTRIES`] bounds it regardless.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiq_secrets::{ExposeSecret, Keyring, KeyringError, Sealed, SecretString, SecretsError};
use chrono::{DateTime, Utc};

use crate::registry::store::{RegistryStore, StoreError};

/// How long a cached secret (or its absence) is used without reading the store.
pub const FRESH_FOR: Duration = Duration::from_secs(60);
/// Least time between two store reads of one hook after failed deliveries.
pub const REREAD_AFTER: Duration = Duration::from_secs(2);
/// Most hooks cached; beyond, the cache starts over.
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum HookSecretError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "this deployment has no secrets key (secrets.key_file), so it cannot seal or open \
         webhook secrets"
    )]
    NoKeyring,
    #[error("sealing the webhook secret: {0}")]
    Seal(#[from] KeyringError),
    #[error("the stored webhook secret does not open: {0}")]
    Open(#[from] SecretsError),
}

struct Entry {
    secret: Option<SecretString>,
    read_at: Instant,
}

type Key = (String, String);

pub struct WebhookSecrets {
    store: RegistryStore,
    keyring: Option<Arc<Keyring>>,
    cache: Mutex<HashMap<Key, Entry>>,
    store_reads: AtomicU64,
}

/// What the seal is bound to: this tenant's hook, and nothing else.
fn context(tenant: &str, hook: &str) -> String {
    format!("webhook:{tenant}/{hook}")
}

impl WebhookSecrets {
    pub fn new(store: RegistryStore, keyring: Option<Arc<Keyring>>) -> Self {
        Self {
            store,
            keyring,
            cache: Mutex::new(HashMap::new()),
            store_reads: AtomicU64::new(0),
        }
    }

    fn keyring(&self) -> Result<&Keyring, HookSecretError> {
        self.keyring.as_deref().ok_or(HookSecretError::NoKeyring)
    }

    /// How often this process read a webhook secret from the store (tests, metrics).
    pub fn store_reads(&self) -> u64 {
        self.store_reads.load(Ordering::Relaxed)
    }

    fn cached(&self, key: &Key, max_age: Duration) -> Option<Option<SecretString>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let e = cache.get(key)?;
        (e.read_at.elapsed() < max_age).then(|| e.secret.clone())
    }

    fn remember(&self, key: Key, secret: Option<SecretString>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_ENTRIES && !cache.contains_key(&key) {
            cache.clear();
        }
        cache.insert(
            key,
            Entry {
                secret,
                read_at: Instant::now(),
            },
        );
    }

    /// Seals `secret` and stores it as the hook's; this process uses it at once.
    pub async fn put(
        &self,
        tenant: &str,
        hook: &str,
        secret: SecretString,
        now: DateTime<Utc>,
    ) -> Result<(), HookSecretError> {
        let sealed = self
            .keyring()?
            .seal_value(&context(tenant, hook), &secret)?;
        self.store
            .put_webhook_secret(tenant, hook, &sealed.encode(), now)
            .await?;
        self.remember((tenant.to_owned(), hook.to_owned()), Some(secret));
        Ok(())
    }

    /// The hook's secret (None: it has none), from the cache while fresh.
    pub async fn get(
        &self,
        tenant: &str,
        hook: &str,
    ) -> Result<Option<SecretString>, HookSecretError> {
        let key = (tenant.to_owned(), hook.to_owned());
        match self.cached(&key, FRESH_FOR) {
            Some(found) => Ok(found),
            None => self.read(key).await,
        }
    }

    /// After a delivery failed against the secret [`WebhookSecrets::get`] gave: the
    /// stored secret if it was rotated since, read at most once per [`REREAD_AFTER`];
    /// None when there is nothing newer to try.
    pub async fn reread(
        &self,
        tenant: &str,
        hook: &str,
        tried: &SecretString,
    ) -> Result<Option<SecretString>, HookSecretError> {
        let key = (tenant.to_owned(), hook.to_owned());
        if self.cached(&key, REREAD_AFTER).is_some() {
            return Ok(None);
        }
        Ok(self
            .read(key)
            .await?
            .filter(|s| s.expose_secret() != tried.expose_secret()))
    }

    async fn read(&self, key: Key) -> Result<Option<SecretString>, HookSecretError> {
        self.store_reads.fetch_add(1, Ordering::Relaxed);
        let stored = self.store.webhook_secret(&key.0, &key.1).await?;
        let secret = match stored {
            None => None,
            Some(text) => Some(self.open(&key.0, &key.1, text)?),
        };
        self.remember(key, secret.clone());
        Ok(secret)
    }

    /// A stored value: sealed, or a plain `whsec_…` written before sealing.
    fn open(
        &self,
        tenant: &str,
        hook: &str,
        text: String,
    ) -> Result<SecretString, HookSecretError> {
        match Sealed::decode(&text) {
            Some(sealed) => Ok(self
                .keyring()?
                .open_value(&context(tenant, hook), &sealed)?),
            None if text.starts_with(Sealed::PREFIX) => Err(SecretsError::Malformed {
                name: context(tenant, hook),
                reason: "not `aiq-sealed:v1:<nonce>:<ciphertext>:<key id>`".into(),
            }
            .into()),
            None => Ok(SecretString::from(text)),
        }
    }
}
