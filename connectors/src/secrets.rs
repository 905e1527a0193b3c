//! Where a worker finds a tenant's secrets: the compacted secrets topic, read into
//! memory sealed, opened per call.
//!
//! [`SecretStore::follow`] starts the follower of that topic as the stage "secrets"; the
//! [`Tail`] it returns keeps it running (its [`Tail::handle`] is what a process waits on
//! and stops with its other stages).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aiq_kafka::{KafkaSettings, Tail, TailSync};
use aiq_secrets::{Keyring, SecretName, SecretRecord, SecretString, SecretsError};
use aiq_topics::{TenantId, TopicKind};

pub type SecretFuture<'a> =
    Pin<Box<dyn Future<Output = Result<SecretString, SecretLookupError>> + Send + 'a>>;

pub trait SecretSource: Send + Sync {
    fn get<'a>(&'a self, tenant: &'a TenantId, name: &'a SecretName) -> SecretFuture<'a>;
}

#[derive(Debug, thiserror::Error)]
pub enum SecretLookupError {
    #[error("secret {name:?} is not set for this tenant (PUT /v1/secrets/{name} sets it)")]
    Missing { name: String },
    #[error(
        "this worker has no secrets key, so it cannot open secret {name:?} \
         (set secrets.key_file)"
    )]
    NoKeyring { name: String },
    #[error(transparent)]
    Open(#[from] SecretsError),
}

/// Sealed records by tenant and name, kept current by a tail of the secrets topic.
pub struct SecretStore {
    keyring: Option<Arc<Keyring>>,
    records: Arc<RwLock<HashMap<(TenantId, SecretName), SecretRecord>>>,
    sync: Option<TailSync>,
}

impl SecretStore {
    /// A store with fixed contents, for tests and tools.
    pub fn fixed(keyring: Option<Arc<Keyring>>, records: Vec<SecretRecord>) -> Self {
        let map = records
            .into_iter()
            .map(|r| ((r.tenant.clone(), r.name.clone()), r))
            .collect();
        Self {
            keyring,
            records: Arc::new(RwLock::new(map)),
            sync: None,
        }
    }

    /// Follows the secrets topic as the stage "secrets"; resolves once the topic has been
    /// read to its end. Dropping the `Tail` (and every handle taken from it) stops it.
    pub async fn follow(
        kafka: &KafkaSettings,
        keyring: Option<Arc<Keyring>>,
    ) -> Result<(Self, Tail), aiq_kafka::KafkaError> {
        let records: Arc<RwLock<HashMap<(TenantId, SecretName), SecretRecord>>> = Arc::default();
        let into = records.clone();
        let topic = kafka.topics().name(TopicKind::Secrets).to_owned();
        let mut tail = aiq_kafka::tail::tail_topic_named("secrets", kafka, &topic, move |r| {
            let Some(key) = r.key.and_then(|k| std::str::from_utf8(k).ok()) else {
                return;
            };
            let Some((tenant, name)) = key.split_once('/') else {
                return;
            };
            let (Ok(tenant), Ok(name)) = (TenantId::new(tenant), SecretName::new(name)) else {
                return;
            };
            let mut map = into.write().unwrap_or_else(|p| p.into_inner());
            match r.payload.map(SecretRecord::decode) {
                Some(Ok(rec)) if rec.tenant == tenant && rec.name == name => {
                    map.insert((tenant, name), rec);
                }
                // A tombstone deletes; a record whose body disagrees with its key is
                // ignored rather than trusted.
                None => {
                    map.remove(&(tenant, name));
                }
                Some(_) => {
                    tracing::warn!(key, "ignoring a malformed secrets record");
                }
            }
        })
        .await?;
        tail.caught_up().await;
        let sync = Some(tail.sync());
        Ok((
            Self {
                keyring,
                records,
                sync,
            },
            tail,
        ))
    }

    fn lookup(&self, tenant: &TenantId, name: &SecretName) -> Option<SecretRecord> {
        self.records
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(tenant.clone(), name.clone()))
            .cloned()
    }
}

impl SecretSource for SecretStore {
    fn get<'a>(&'a self, tenant: &'a TenantId, name: &'a SecretName) -> SecretFuture<'a> {
        Box::pin(async move {
            let mut rec = self.lookup(tenant, name);
            if rec.is_none() {
                // Set a moment ago? Read the topic to its present end before saying no.
                if let Some(sync) = self.sync.clone() {
                    let _ = tokio::task::spawn_blocking(move || {
                        sync.catch_up_blocking(Duration::from_secs(5))
                    })
                    .await;
                    rec = self.lookup(tenant, name);
                }
            }
            let rec = rec.ok_or_else(|| SecretLookupError::Missing {
                name: name.to_string(),
            })?;
            let keyring = self
                .keyring
                .as_ref()
                .ok_or_else(|| SecretLookupError::NoKeyring {
                    name: name.to_string(),
                })?;
            Ok(keyring.open(&rec)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiq_secrets::ExposeSecret;

    #[tokio::test]
    async fn a_tenant_sees_only_its_own_secrets() {
        let ring = Arc::new(Keyring::generate("k").unwrap());
        let acme = TenantId::new("acme").unwrap();
        let globex = TenantId::new("globex").unwrap();
        let name = SecretName::new("token").unwrap();
        let rec = ring
            .seal(&acme, &name, &"acme-token".into(), chrono::Utc::now())
            .unwrap();
        let store = SecretStore::fixed(Some(ring), vec![rec]);
        assert_eq!(
            store.get(&acme, &name).await.unwrap().expose_secret(),
            "acme-token"
        );
        assert_eq!(
            store.get(&globex, &name).await.unwrap_err().to_string(),
            "secret \"token\" is not set for this tenant (PUT /v1/secrets/token sets it)"
        );
    }
}
