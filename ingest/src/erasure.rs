//! Erasing a tenant's data (the right to erasure), by crypto-shredding.
//!
//! Every payload of the tenant is sealed under its data keys wherever it is kept
//! (`aiq_vault`), so destroying the keys makes every copy unreadable at once, Kafka's
//! retained records and backups included. The rest is deleted where it can be: the
//! history rows in Cassandra, the Parquet folders (warm and archive), the definitions
//! and secrets on their compacted topics. In order:
//!
//! 1. the tenant is marked erased on the tenants topic: triggers and webhooks are
//!    refused, cron stops, the orchestrator drops the tenant's triggers and the sink its
//!    events, and no later change to the tenant is accepted;
//! 2. a tenant-wide cancel ends its runs in flight and queued;
//! 3. its data keys are destroyed (a tombstone each; every process forgets them);
//! 4. its history rows and Parquet folders are deleted, its definitions and secrets
//!    tombstoned;
//! 5. the certificate (what, where, when, by whom) is written to the audit trail.
//!
//! A first call answers the plan and a confirmation token; only a second call carrying
//! that token erases. The token is a digest of the tenant's record as it is now, so a
//! change to the tenant in between voids it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aiq_history_store::{HistoryFiles, ObjectPath};
use aiq_kafka::KafkaSettings;
use aiq_sql::layout::{Table, Tier, tenant_key};
use aiq_topics::{
    AuditAction, DataKeyId, RunId, SignalAction, SignalEvent, TenantId, TenantRecord, TopicKind,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::caller::Caller;
use crate::history::{ErasedRows, HistoryError, HistoryStore};
use crate::publisher::{PublishError, Publisher};
use crate::tenants::{TenantError, Tenants};

/// How long after marking the tenant erased the deletes begin: every process's
/// follower reads the mark within a second, so events already in flight reach the
/// sink before the rows are deleted, and later ones are dropped there.
const SETTLE: Duration = Duration::from_secs(2);
/// The oldest day searched for history rows: no retention class keeps a row longer.
const MAX_HISTORY_DAYS: i64 = 3 * 366;

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error(
        "the confirmation token is missing or does not match the tenant as it is now; ask again without one for a fresh token"
    )]
    Confirmation,
    #[error(
        "this deployment has no deployment key (`secrets.key_file`): payloads are not sealed, so records retained in Kafka cannot be made unreadable"
    )]
    NoVault,
    #[error("the data keys: {0}")]
    Vault(#[from] aiq_vault::VaultError),
    #[error("Kafka: {0}")]
    Publish(#[from] PublishError),
    #[error("the history store: {0}")]
    History(#[from] HistoryError),
    #[error("the Parquet history: {0}")]
    Files(String),
    #[error("reading a compacted topic: {0}")]
    Topic(String),
}

/// What an erasure will do, with the token that confirms it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErasurePlan {
    pub tenant: String,
    /// Send it back as `?confirmation=` to erase; void once the tenant changes.
    pub confirmation: String,
    /// The tenant's data keys known to this process: every record sealed under them
    /// becomes unreadable.
    pub data_keys: usize,
    pub definitions: usize,
    pub secrets: usize,
    /// The days searched for history rows (the tenant's creation, or at most three
    /// years back, to today).
    pub history_from: chrono::NaiveDate,
    pub history_to: chrono::NaiveDate,
    /// The Parquet folders deleted (relative to the history root).
    pub parquet_folders: Vec<String>,
}

/// The certificate of an erasure, kept in the audit trail.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErasureCertificate {
    pub tenant: String,
    pub erased_at: DateTime<Utc>,
    /// Who erased it (a token's subject or an API key id), and from which tenant.
    pub erased_by: String,
    pub erased_by_tenant: String,
    #[schema(value_type = Vec<String>)]
    pub data_keys_destroyed: Vec<DataKeyId>,
    pub history: ErasedRows,
    pub parquet_folders_deleted: Vec<String>,
    pub definitions_tombstoned: usize,
    pub secrets_tombstoned: usize,
    /// What remains, and why it cannot be read.
    pub retained: Vec<String>,
}

/// The parts erasure works with.
#[derive(Clone)]
pub struct Erasure {
    pub kafka: KafkaSettings,
    pub vault: Arc<aiq_vault::Vault>,
    /// The Parquet history; `None` when this deployment keeps none.
    pub files: Option<HistoryFiles>,
    /// Every tenant's secret names, followed from the secrets topic.
    pub secret_names: crate::secret_names::SecretNames,
}

/// The confirmation token of the tenant as it is now.
fn token(record: &TenantRecord) -> String {
    let text = format!(
        "erase:{}:{}:{}",
        record.id,
        record.created_at.to_rfc3339(),
        record.updated_at.to_rfc3339()
    );
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
}

fn parquet_folders(tenant: &TenantId) -> Vec<String> {
    let mut out = Vec::new();
    for tier in [Tier::Warm, Tier::Archive] {
        for table in [Table::Runs, Table::Steps, Table::Audit] {
            // The audit table is kept: no payloads, and the certificate is there.
            if table != Table::Audit {
                out.push(tenant_key(tier, table, tenant.as_str()));
            }
        }
    }
    out
}

/// The live keys of a compacted topic that start with `prefix`, read to its end.
pub(crate) async fn live_keys(
    kafka: &KafkaSettings,
    kind: TopicKind,
    prefix: &str,
) -> Result<Vec<String>, ErasureError> {
    let keys = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let feed = Arc::clone(&keys);
    let prefix_owned = prefix.to_owned();
    let topic = kafka.topics().name(kind).to_owned();
    let mut tail = aiq_kafka::tail::tail_topic(kafka, &topic, move |r| {
        let Some(key) = r.key.and_then(|k| std::str::from_utf8(k).ok()) else {
            return;
        };
        if !key.starts_with(&prefix_owned) {
            return;
        }
        let mut k = feed.lock().unwrap_or_else(|p| p.into_inner());
        match r.payload {
            Some(_) => k.insert(key.to_owned()),
            None => k.remove(key),
        };
    })
    .await
    .map_err(|e| ErasureError::Topic(e.to_string()))?;
    tokio::time::timeout(Duration::from_secs(30), tail.caught_up())
        .await
        .map_err(|_| ErasureError::Topic(format!("{topic} was not read to its end in 30 s")))?;
    tail.handle().stop();
    let keys = keys.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(keys.into_iter().collect())
}

impl Erasure {
    fn days(record: &TenantRecord, now: DateTime<Utc>) -> (chrono::NaiveDate, chrono::NaiveDate) {
        let oldest = now - chrono::Duration::days(MAX_HISTORY_DAYS);
        let from = (record.created_at - chrono::Duration::days(1)).max(oldest);
        (
            from.date_naive(),
            (now + chrono::Duration::days(1)).date_naive(),
        )
    }

    /// What erasing `id` would do, and the token to confirm it.
    pub async fn plan(
        &self,
        tenants: &Tenants,
        id: &TenantId,
    ) -> Result<ErasurePlan, ErasureError> {
        let record = self.erasable(tenants, id).await?;
        let prefix = format!("{id}/");
        let (from, to) = Self::days(&record, Utc::now());
        Ok(ErasurePlan {
            tenant: id.to_string(),
            confirmation: token(&record),
            data_keys: self.vault_keys(id),
            definitions: live_keys(&self.kafka, TopicKind::Definitions, &prefix)
                .await?
                .len(),
            secrets: live_keys(&self.kafka, TopicKind::Secrets, &prefix)
                .await?
                .len(),
            history_from: from,
            history_to: to,
            parquet_folders: parquet_folders(id),
        })
    }

    fn vault_keys(&self, id: &TenantId) -> usize {
        self.vault.key_ids(id).len()
    }

    async fn erasable(
        &self,
        tenants: &Tenants,
        id: &TenantId,
    ) -> Result<TenantRecord, ErasureError> {
        if !self.vault.is_on() {
            return Err(ErasureError::NoVault);
        }
        tenants.catch_up().await;
        let record = tenants
            .get(id)
            .await
            .ok_or_else(|| TenantError::NotFound(id.to_string()))?;
        if record.erased_at.is_some() {
            return Err(TenantError::Erased(id.to_string()).into());
        }
        Ok(record)
    }

    /// Erases the tenant's data (see the module's steps) and returns the certificate,
    /// which is also written to the audit trail under the tenant.
    pub async fn erase(
        &self,
        tenants: &Tenants,
        publisher: &Publisher,
        history: &HistoryStore,
        caller: &Caller,
        id: &TenantId,
        confirmation: Option<&str>,
    ) -> Result<ErasureCertificate, ErasureError> {
        let record = self.erasable(tenants, id).await?;
        if confirmation != Some(token(&record).as_str()) {
            return Err(ErasureError::Confirmation);
        }
        let now = Utc::now();
        let (from, to) = Self::days(&record, now);
        tenants.mark_erased(id, caller, now, false).await?;
        let cancel = SignalEvent {
            tenant: id.clone(),
            run: RunId::random(),
            action: SignalAction::CancelTenant {
                reason: format!("tenant erased by {}", caller.subject),
            },
        };
        publisher
            .send(TopicKind::Signals, id.as_str(), &cancel.encode())
            .await?;
        let vault = Arc::clone(&self.vault);
        let tenant = id.clone();
        let destroyed = tokio::task::spawn_blocking(move || vault.destroy_blocking(&tenant))
            .await
            .map_err(|e| ErasureError::Topic(format!("the key destroyer stopped: {e}")))??;
        tokio::time::sleep(SETTLE).await;

        let prefix = format!("{id}/");
        let definitions = live_keys(&self.kafka, TopicKind::Definitions, &prefix).await?;
        for key in &definitions {
            publisher.tombstone(TopicKind::Definitions, key).await?;
        }
        let secrets = live_keys(&self.kafka, TopicKind::Secrets, &prefix).await?;
        for key in &secrets {
            publisher.tombstone(TopicKind::Secrets, key).await?;
        }
        let rows = history.erase_tenant(id.as_str(), from, to).await?;
        let folders = match &self.files {
            Some(files) => {
                let files = files.clone();
                let folders = parquet_folders(id);
                let deleted = folders.clone();
                tokio::task::spawn_blocking(move || {
                    for f in &folders {
                        files
                            .delete_folder(&ObjectPath::from(f.as_str()))
                            .map_err(|e| ErasureError::Files(e.to_string()))?;
                    }
                    Ok::<_, ErasureError>(())
                })
                .await
                .map_err(|e| ErasureError::Files(e.to_string()))??;
                deleted
            }
            None => Vec::new(),
        };
        let certificate = ErasureCertificate {
            tenant: id.to_string(),
            erased_at: now,
            erased_by: caller.subject.clone(),
            erased_by_tenant: caller.tenant.to_string(),
            data_keys_destroyed: destroyed,
            history: rows,
            parquet_folders_deleted: folders,
            definitions_tombstoned: definitions.len(),
            secrets_tombstoned: secrets.len(),
            retained: vec![
                "records in Kafka topics until their retention ends: payloads sealed under the destroyed keys".into(),
                "Cassandra tombstones and older SSTables until compaction: payloads sealed under the destroyed keys".into(),
                "the audit trail (no payloads): kept, with this certificate".into(),
                "idempotency keys (a hash of the input) until their one-day TTL".into(),
            ],
        };
        let as_tenant = Caller {
            tenant: id.clone(),
            own_tenant: Some(caller.tenant.clone()).filter(|t| t != id),
            ..caller.clone()
        };
        crate::audit::record(
            publisher,
            &as_tenant,
            AuditAction::TenantErased,
            id.as_str(),
            serde_json::to_value(&certificate).unwrap_or_default(),
        )
        .await;
        tenants.mark_erased(id, caller, now, true).await?;
        tracing::warn!(tenant = %id, by = %caller.subject, "tenant data erased");
        Ok(certificate)
    }
}
