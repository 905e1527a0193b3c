//! Tenant data keys, for crypto-shredding.
//!
//! Each tenant's payloads (trigger inputs, task arguments and results, run and step
//! outputs, signal payloads, the orchestrator's run state) are sealed under the tenant's
//! data key by the stage that produces them, and stay sealed in every Kafka record,
//! Cassandra row and Parquet file; the stage that needs one opens it. Metadata (ids,
//! statuses, times, sizes, error classes) stays clear, so routing, quotas and SQL
//! reports work as before. Erasing a tenant destroys its keys (a tombstone each on the
//! compacted data-keys topic, evicted from every process that follows it): every copy of
//! its data, wherever it is retained, becomes unreadable at once.
//!
//! Keys are made on demand: the first process to seal for a tenant reads the topic to
//! its end, and if no key is there, makes one, wraps it under the deployment key
//! ([`aiq_secrets::Keyring`]) and publishes it (acknowledged) before sealing anything
//! with it. Two processes doing so at once each publish one; both open, and everyone
//! seals with the older. A process meeting a key id it does not know reads the topic to
//! its end once before calling the value unreadable.
//!
//! Without a deployment key (`secrets.key_file` empty) the vault is off: nothing is
//! sealed, and sealed values met are unreadable.

mod keys;

use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use aiq_kafka::tail::tail_topic_named;
use aiq_kafka::{KafkaError, KafkaSettings, Tail, TailSync};
use aiq_secrets::Keyring;
use aiq_topics::data_key::parse_record_key;
use aiq_topics::{DataKeyId, DataKeyRecord, TenantId, TopicKind};
use chrono::Utc;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

pub use keys::{KeyTable, SEALED_FIELD, TEXT_PREFIX, is_sealed, is_sealed_bytes, sealed_text};

/// The follower's stage name.
pub const STAGE: &str = "data-keys";

/// How long a process waits to read the data-keys topic to its end.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long publishing a new key or a tombstone may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("tenant {tenant} has no data key here yet")]
    NoKey { tenant: TenantId },
    #[error(
        "tenant {tenant}'s data key {key_id} is not known: it was destroyed (the tenant's data was erased) or never published"
    )]
    UnknownKey { tenant: TenantId, key_id: DataKeyId },
    #[error(
        "a sealed `{field}` of tenant {tenant} does not open: it was altered, or moved from another tenant or field"
    )]
    Tampered { tenant: TenantId, field: String },
    #[error("a sealed `{field}` of tenant {tenant} is malformed: {reason}")]
    Malformed {
        tenant: TenantId,
        field: String,
        reason: String,
    },
    #[error("tenant {tenant}'s data was erased: nothing more is sealed for it")]
    Erased { tenant: TenantId },
    #[error("the data-keys topic could not be read to its end within {0:?}")]
    Unavailable(Duration),
    #[error("publishing a data key failed: {0}")]
    Publish(String),
    #[error("the random number generator failed: {0}")]
    Random(String),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("a data key record does not open: {0}")]
    Unwrap(#[from] aiq_secrets::SecretsError),
    #[error("the deployment key failed: {0}")]
    Keyring(#[from] aiq_secrets::KeyringError),
}

impl VaultError {
    /// Whether retrying may help (the topic or the broker was not reachable).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            VaultError::Unavailable(_) | VaultError::Publish(_) | VaultError::Kafka(_)
        )
    }
}

struct On {
    keyring: Arc<Keyring>,
    table: RwLock<KeyTable>,
    producer: FutureProducer,
    topic: String,
    sync: OnceLock<TailSync>,
    /// One key creation or destruction at a time in this process.
    making: Mutex<()>,
    /// Each live key as wrapped on the topic, for re-wrapping under a new deployment
    /// key.
    wrapped: Mutex<std::collections::BTreeMap<String, DataKeyRecord>>,
}

/// A process's view of the data keys. Cheap to share (`Arc`).
pub struct Vault {
    on: Option<On>,
}

/// Off: seals nothing.
impl Default for Vault {
    fn default() -> Self {
        Self { on: None }
    }
}

impl Vault {
    /// A vault that seals nothing (no deployment key).
    pub fn off() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A vault with keys in memory only, for unit tests of the stages.
    pub fn in_memory(table: KeyTable) -> Arc<Self> {
        let keyring = match Keyring::generate("memory") {
            Ok(k) => Arc::new(k),
            Err(_) => return Self::off(),
        };
        let producer = match rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .create()
        {
            Ok(p) => p,
            Err(_) => return Self::off(),
        };
        Arc::new(Self {
            on: Some(On {
                keyring,
                table: RwLock::new(table),
                producer,
                topic: String::new(),
                sync: OnceLock::new(),
                making: Mutex::new(()),
                wrapped: Mutex::default(),
            }),
        })
    }

    pub fn is_on(&self) -> bool {
        self.on.is_some()
    }

    fn read<R>(&self, f: impl FnOnce(&KeyTable) -> R) -> Option<R> {
        self.on
            .as_ref()
            .map(|on| f(&on.table.read().unwrap_or_else(|p| p.into_inner())))
    }

    fn write<R>(on: &On, f: impl FnOnce(&mut KeyTable) -> R) -> R {
        f(&mut on.table.write().unwrap_or_else(|p| p.into_inner()))
    }

    /// Applies one record of the data-keys topic (a tombstone destroys the key).
    fn apply(&self, key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<(), VaultError> {
        let Some(on) = &self.on else { return Ok(()) };
        let Some((tenant, id)) = key.and_then(parse_record_key) else {
            return Err(VaultError::Publish(
                "a data key record without a valid key".into(),
            ));
        };
        let record_key = aiq_topics::data_key::record_key(&tenant, id);
        match payload {
            None => {
                Self::write(on, |t| t.remove(&tenant, id));
                Self::wrapped(on).remove(&record_key);
            }
            Some(bytes) => {
                let r = DataKeyRecord::decode(bytes)
                    .map_err(|e| VaultError::Publish(format!("a data key record: {e}")))?;
                if r.tenant != tenant || r.key_id != id {
                    return Err(VaultError::Publish(format!(
                        "record key {tenant}/{id} names another key"
                    )));
                }
                let raw = on.keyring.unwrap_data_key(&tenant, id, &r.wrapped)?;
                Self::write(on, |t| t.insert(&tenant, id, r.created_at, &raw));
                Self::wrapped(on).insert(record_key, r);
            }
        }
        Ok(())
    }

    fn wrapped(
        on: &On,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, DataKeyRecord>> {
        on.wrapped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-wraps every data key that is not wrapped under the deployment's sealing key
    /// (the first of the key file): the same key, id and creation time, published again
    /// wrapped under the new key. Nothing sealed is rewritten; once this has run, the
    /// older deployment key can leave the key file. Returns how many were re-wrapped.
    pub fn rewrap_blocking(&self) -> Result<usize, VaultError> {
        let Some(on) = &self.on else { return Ok(0) };
        let _one = on.making.lock().unwrap_or_else(|p| p.into_inner());
        self.catch_up()?;
        let current = on.keyring.sealing_key_id().to_owned();
        let stale: Vec<DataKeyRecord> = Self::wrapped(on)
            .values()
            .filter(|r| r.wrapped.kek_id != current)
            .cloned()
            .collect();
        for r in &stale {
            let raw = on
                .keyring
                .unwrap_data_key(&r.tenant, r.key_id, &r.wrapped)?;
            let again = DataKeyRecord {
                wrapped: on.keyring.wrap_data_key(&r.tenant, r.key_id, &raw)?,
                ..r.clone()
            };
            self.publish(on, &again.key(), Some(&again.encode()))?;
            Self::wrapped(on).insert(again.key(), again);
        }
        Ok(stale.len())
    }

    /// Reads the data-keys topic to its present end.
    fn catch_up(&self) -> Result<(), VaultError> {
        let Some(on) = &self.on else { return Ok(()) };
        match on.sync.get() {
            Some(s) if !s.catch_up_blocking(SYNC_TIMEOUT) => {
                Err(VaultError::Unavailable(SYNC_TIMEOUT))
            }
            _ => Ok(()),
        }
    }

    /// Makes sure the tenant has a data key, making and publishing one if nobody has.
    /// Blocks (a topic read, perhaps a publish) only the first time for a tenant.
    pub fn ensure_blocking(&self, tenant: &TenantId) -> Result<(), VaultError> {
        let Some(on) = &self.on else { return Ok(()) };
        if self.read(|t| t.has_key(tenant)) == Some(true) {
            return Ok(());
        }
        let _one = on.making.lock().unwrap_or_else(|p| p.into_inner());
        if self.read(|t| t.has_key(tenant)) == Some(true) {
            return Ok(());
        }
        self.catch_up()?;
        if self.read(|t| t.has_key(tenant)) == Some(true) {
            return Ok(());
        }
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| VaultError::Random(e.to_string()))?;
        let id = DataKeyId::random();
        let record = DataKeyRecord {
            tenant: tenant.clone(),
            key_id: id,
            wrapped: on.keyring.wrap_data_key(tenant, id, &raw)?,
            created_at: Utc::now(),
        };
        self.publish(on, &record.key(), Some(&record.encode()))?;
        Self::write(on, |t| t.insert(tenant, id, record.created_at, &raw));
        Self::wrapped(on).insert(record.key(), record.clone());
        tracing::info!(%tenant, key_id = %id, "made a data key");
        Ok(())
    }

    /// [`Vault::ensure_blocking`] off the async runtime's threads.
    pub async fn ensure(self: &Arc<Self>, tenant: &TenantId) -> Result<(), VaultError> {
        if !self.is_on() || self.read(|t| t.has_key(tenant)) == Some(true) {
            return Ok(());
        }
        let me = Arc::clone(self);
        let tenant = tenant.clone();
        tokio::task::spawn_blocking(move || me.ensure_blocking(&tenant))
            .await
            .map_err(|e| VaultError::Publish(format!("the key maker stopped: {e}")))?
    }

    fn publish(&self, on: &On, key: &str, payload: Option<&[u8]>) -> Result<(), VaultError> {
        let mut record = FutureRecord::<str, [u8]>::to(&on.topic)
            .key(key)
            .partition(0);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        let delivery = on
            .producer
            .send_result(record)
            .map_err(|(e, _)| VaultError::Publish(e.to_string()))?;
        match futures::executor::block_on(delivery) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(VaultError::Publish(e.to_string())),
            Err(_) => Err(VaultError::Publish("the producer went away".into())),
        }
    }

    /// Destroys every data key of the tenant: a tombstone each, acknowledged, then
    /// forgotten here (every other process forgets them as its follower reads the
    /// tombstones). Returns the ids destroyed.
    pub fn destroy_blocking(&self, tenant: &TenantId) -> Result<Vec<DataKeyId>, VaultError> {
        let Some(on) = &self.on else {
            return Ok(Vec::new());
        };
        let _one = on.making.lock().unwrap_or_else(|p| p.into_inner());
        self.catch_up()?;
        let ids = self.read(|t| t.key_ids(tenant)).unwrap_or_default();
        for id in &ids {
            let key = aiq_topics::data_key::record_key(tenant, *id);
            self.publish(on, &key, None)?;
            Self::write(on, |t| t.remove(tenant, *id));
            Self::wrapped(on).remove(&key);
        }
        tracing::warn!(%tenant, keys = ids.len(), "destroyed the tenant's data keys");
        Ok(ids)
    }

    /// The tenant's keys this process holds.
    pub fn key_ids(&self, tenant: &TenantId) -> Vec<DataKeyId> {
        self.read(|t| t.key_ids(tenant)).unwrap_or_default()
    }

    /// Whether this process holds a key of the tenant.
    pub fn has_key(&self, tenant: &TenantId) -> bool {
        self.read(|t| t.has_key(tenant)).unwrap_or(false)
    }

    /// `value` sealed for the tenant's `field`; unchanged when the vault is off. The
    /// tenant must have a key ([`Vault::ensure_blocking`]).
    pub fn seal(&self, tenant: &TenantId, field: &str, value: &Value) -> Result<Value, VaultError> {
        match &self.on {
            None => Ok(value.clone()),
            Some(on) => {
                let t = on.table.read().unwrap_or_else(|p| p.into_inner());
                if t.is_destroyed(tenant) {
                    return Err(VaultError::Erased {
                        tenant: tenant.clone(),
                    });
                }
                t.seal_value(tenant, field, value)
            }
        }
    }

    /// Seals `value` in place (see [`Vault::seal`]).
    pub fn seal_in_place(
        &self,
        tenant: &TenantId,
        field: &str,
        value: &mut Value,
    ) -> Result<(), VaultError> {
        if self.is_on() {
            *value = self.seal(tenant, field, value)?;
        }
        Ok(())
    }

    /// Opens every sealed value in `value` in place. A key id not known here is looked
    /// for once by reading the topic to its end (blocking, at most 10 s).
    pub fn open_tree(&self, tenant: &TenantId, value: &mut Value) -> Result<usize, VaultError> {
        self.open_tree_with(tenant, value, true)
    }

    fn open_tree_with(
        &self,
        tenant: &TenantId,
        value: &mut Value,
        may_sync: bool,
    ) -> Result<usize, VaultError> {
        let Some(on) = &self.on else {
            return Ok(0);
        };
        let first = on
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .open_tree(tenant, value);
        match first {
            Err(VaultError::UnknownKey { .. })
                if may_sync && !self.read(|t| t.is_destroyed(tenant)).unwrap_or(false) =>
            {
                self.catch_up()?;
                self.read(|t| t.open_tree(tenant, value)).unwrap_or(Ok(0))
            }
            other => other,
        }
    }

    /// Opens one field's value if it is sealed (bound to `field`), off the async
    /// runtime's threads only when a key must be looked for.
    pub async fn open_field(
        self: &Arc<Self>,
        tenant: &TenantId,
        field: &str,
        value: Value,
    ) -> Result<Value, VaultError> {
        if !self.is_on() || !is_sealed(&value) {
            return Ok(value);
        }
        let mut wrapper = Value::Object(serde_json::Map::from_iter([(field.to_owned(), value)]));
        match self.open_tree_with(tenant, &mut wrapper, false) {
            Err(VaultError::UnknownKey { .. })
                if !self.read(|t| t.is_destroyed(tenant)).unwrap_or(false) =>
            {
                let me = Arc::clone(self);
                let tenant = tenant.clone();
                wrapper = tokio::task::spawn_blocking(move || {
                    me.open_tree(&tenant, &mut wrapper).map(|_| wrapper)
                })
                .await
                .map_err(|e| VaultError::Publish(format!("the key reader stopped: {e}")))??;
            }
            other => {
                other?;
            }
        }
        Ok(match wrapper {
            Value::Object(mut m) => m.remove(field).unwrap_or(Value::Null),
            other => other,
        })
    }

    /// `text` sealed for the tenant's `field` as a string; unchanged when the vault is
    /// off. The tenant must have a key ([`Vault::ensure_blocking`]).
    pub fn seal_text(
        &self,
        tenant: &TenantId,
        field: &str,
        text: &str,
    ) -> Result<String, VaultError> {
        match &self.on {
            None => Ok(text.to_owned()),
            Some(on) => {
                let t = on.table.read().unwrap_or_else(|p| p.into_inner());
                if t.is_destroyed(tenant) {
                    return Err(VaultError::Erased {
                        tenant: tenant.clone(),
                    });
                }
                t.seal_text(tenant, field, text)
            }
        }
    }

    /// Seals one field's value for the tenant, making its key first if it has none.
    pub async fn seal_field(
        self: &Arc<Self>,
        tenant: &TenantId,
        field: &str,
        value: &Value,
    ) -> Result<Value, VaultError> {
        if !self.is_on() {
            return Ok(value.clone());
        }
        self.ensure(tenant).await?;
        self.seal(tenant, field, value)
    }

    /// A whole record sealed for the tenant; unchanged when the vault is off.
    pub fn seal_bytes(
        &self,
        tenant: &TenantId,
        purpose: &str,
        plain: Vec<u8>,
    ) -> Result<Vec<u8>, VaultError> {
        match &self.on {
            None => Ok(plain),
            Some(on) => on
                .table
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .seal_bytes(tenant, purpose, &plain),
        }
    }

    /// Opens a record sealed whole; clear bytes come back as they are.
    pub fn open_bytes(
        &self,
        tenant: &TenantId,
        purpose: &str,
        bytes: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        if !is_sealed_bytes(bytes) {
            return Ok(bytes.to_vec());
        }
        let Some(on) = &self.on else {
            return Err(VaultError::Malformed {
                tenant: tenant.clone(),
                field: purpose.to_owned(),
                reason: "sealed, and this process has no deployment key".into(),
            });
        };
        let first = on
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .open_bytes(tenant, purpose, bytes)
            .map(|c| c.into_owned());
        match first {
            Err(VaultError::UnknownKey { .. })
                if !self.read(|t| t.is_destroyed(tenant)).unwrap_or(false) =>
            {
                self.catch_up()?;
                self.read(|t| t.open_bytes(tenant, purpose, bytes).map(|c| c.into_owned()))
                    .unwrap_or_else(|| Ok(bytes.to_vec()))
            }
            other => other,
        }
    }
}

/// A followed vault: the keys, and the tail that keeps them current (its stage is
/// "data-keys"); `None` when the vault is off.
pub struct Followed {
    pub vault: Arc<Vault>,
    pub tail: Option<Tail>,
}

/// Starts following `kafka`'s data-keys topic. With no `keyring` the vault is off and
/// nothing is followed. Resolves once the follower runs; callers that must know every
/// key wait on `tail.caught_up()`.
pub async fn spawn(
    kafka: &KafkaSettings,
    keyring: Option<Arc<Keyring>>,
) -> Result<Followed, VaultError> {
    let Some(keyring) = keyring else {
        return Ok(Followed {
            vault: Vault::off(),
            tail: None,
        });
    };
    let topic = kafka.topics().name(TopicKind::DataKeys).to_owned();
    let producer: FutureProducer = kafka
        .producer_config()
        .set(
            "message.timeout.ms",
            PUBLISH_TIMEOUT.as_millis().to_string(),
        )
        .create()
        .map_err(|source| KafkaError::Client {
            what: "data-keys producer",
            brokers: kafka.brokers.clone(),
            source,
        })?;
    let vault = Arc::new(Vault {
        on: Some(On {
            keyring,
            table: RwLock::new(KeyTable::default()),
            producer,
            topic: topic.clone(),
            sync: OnceLock::new(),
            making: Mutex::new(()),
            wrapped: Mutex::default(),
        }),
    });
    let feed = Arc::clone(&vault);
    let tail = tail_topic_named(STAGE, kafka, &topic, move |r| {
        // One bad record must not hide the keys after it.
        if let Err(e) = feed.apply(r.key, r.payload) {
            tracing::error!(partition = r.partition, offset = r.offset, error = %e, "skipping a data key record");
        }
    })
    .await?;
    if let Some(on) = &vault.on {
        let _ = on.sync.set(tail.sync());
    }
    Ok(Followed {
        vault,
        tail: Some(tail),
    })
}
