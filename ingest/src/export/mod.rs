//! Exporting a tenant's data (the right to data portability): one archive holding its
//! workflow definitions (every version and lifecycle state), its runs with their steps
//! and their payloads opened, its audit trail, the names (never the values) of its API
//! keys and secrets, and its Parquet history files, with a manifest of checksums.
//!
//! A job runs in the ingest process that took the request, as a task of its own; its
//! row in `exports` says how far it got (refreshed every 500 runs), and a row nobody
//! refreshes reads `interrupted`. The archive is built in memory within
//! `MAX_ARCHIVE_BYTES` and put whole into the history store
//! (`exports/tenant=T/<id>.tar`), downloadable for a day through the API with the same
//! credentials.

pub mod archive;
pub mod store;

use std::collections::BTreeSet;
use std::sync::Arc;

use aiq_engine::Catalog;
use aiq_history_store::{HistoryFiles, ObjectPath};
use aiq_kafka::KafkaSettings;
use aiq_sql::layout::{Table, Tier, tenant_key};
use aiq_topics::{TenantId, TopicKind};
use chrono::{DateTime, NaiveDate, Utc};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use uuid::Uuid;

use crate::history::HistoryStore;
use crate::registry::store::RegistryStore;
use archive::{Archive, Jsonl};
pub use store::{ExportJob, ExportStore};

/// The largest archive an export builds; past it the job fails naming the bound.
pub const MAX_ARCHIVE_BYTES: usize = 512 << 20;
/// How long a finished archive can be downloaded.
pub const DOWNLOAD_FOR: chrono::Duration = chrono::Duration::hours(24);
/// Runs read at once.
const PARALLEL: usize = 16;
/// The oldest day searched, as for erasure: no retention keeps a row longer.
const MAX_HISTORY_DAYS: i64 = 3 * 366;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the history store: {0}")]
    History(#[from] crate::history::HistoryError),
    #[error("the registry: {0}")]
    Store(#[from] crate::registry::store::StoreError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error("the Parquet history: {0}")]
    Files(String),
    #[error("{0}")]
    Topic(String),
}

/// What an export reads and where it writes.
#[derive(Clone)]
pub struct Exporter {
    pub kafka: KafkaSettings,
    pub history: HistoryStore,
    pub registry: RegistryStore,
    pub catalog: Arc<Catalog>,
    /// The Parquet history, read for the tenant's files and written with the archive.
    pub files: HistoryFiles,
    pub jobs: ExportStore,
    /// One permit per export this process may build at once
    /// (`ingest.max_concurrent_exports`).
    pub slots: Arc<tokio::sync::Semaphore>,
}

/// The archive's object in the history store.
pub fn object_of(tenant: &str, id: Uuid) -> String {
    format!("exports/tenant={tenant}/{id}.tar")
}

impl Exporter {
    /// Builds the tenant's archive; `progress` is told the runs written so far.
    pub async fn build(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
        id: Uuid,
        progress: impl Fn(i64) -> futures::future::BoxFuture<'static, ()>,
    ) -> Result<(Vec<u8>, String, archive::Manifest, i64), ExportError> {
        let now = Utc::now();
        let mut a = Archive::new(MAX_ARCHIVE_BYTES);

        // Definitions: every version the catalog holds, and each workflow's state.
        let mut workflows = Jsonl::default();
        for v in self.catalog.all_versions(tenant) {
            workflows.push(&json!({"kind": "version", "record": v.record}));
        }
        for state in self.catalog.states_of(tenant) {
            workflows.push(&json!({"kind": "state", "state": state}));
        }
        a.add_jsonl("workflows.jsonl", &workflows)?;

        // Runs and audit events, day by day.
        let oldest = (now - chrono::Duration::days(MAX_HISTORY_DAYS)).date_naive();
        let from = (since - chrono::Duration::days(1)).date_naive().max(oldest);
        let to = (now + chrono::Duration::days(1)).date_naive();
        let reader = self.history.day_reader().await?;
        let mut runs = Jsonl::default();
        let mut audit = Jsonl::default();
        let days: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
        let mut since_progress = 0;
        for day in days {
            let ids = reader.run_ids(tenant.as_str(), day).await?;
            let details: Vec<_> = futures::stream::iter(ids)
                .map(|id| self.history.run(tenant.as_str(), id))
                .buffered(PARALLEL)
                .try_collect()
                .await?;
            for d in details.into_iter().flatten() {
                runs.push(&d);
                since_progress += 1;
            }
            if since_progress >= 500 {
                since_progress = 0;
                progress(runs.rows as i64).await;
            }
            for e in reader.audit(tenant.as_str(), day).await? {
                audit.push(&e);
            }
        }
        a.add_jsonl("runs.jsonl", &runs)?;
        a.add_jsonl("audit.jsonl", &audit)?;

        // Names only: an API key's id, role and label; a secret's name.
        let mut keys = Jsonl::default();
        for (key_id, role, label, created_at, revoked) in
            self.registry.api_keys_of(tenant.as_str()).await?
        {
            keys.push(&json!({"key_id": key_id, "role": role, "label": label,
                              "created_at": created_at, "revoked": revoked}));
        }
        a.add_jsonl("api_keys.jsonl", &keys)?;
        let prefix = format!("{tenant}/");
        let mut secrets = Jsonl::default();
        for key in crate::erasure::live_keys(&self.kafka, TopicKind::Secrets, &prefix)
            .await
            .map_err(|e| ExportError::Topic(e.to_string()))?
        {
            if let Some(name) = key.strip_prefix(&prefix) {
                secrets.push(&json!({"name": name}));
            }
        }
        a.add_jsonl("secrets.jsonl", &secrets)?;

        // The tenant's Parquet history as it is (runs, steps, audit; warm and archive).
        let files = self.files.clone();
        let tenant_s = tenant.to_string();
        let parquet = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for tier in [Tier::Warm, Tier::Archive] {
                for table in [Table::Runs, Table::Steps, Table::Audit] {
                    let folder = ObjectPath::from(tenant_key(tier, table, &tenant_s).as_str());
                    for path in files.walk(&folder).map_err(|e| e.to_string())? {
                        let name = path.to_string();
                        if name.ends_with(".parquet") {
                            let bytes = files.get(&path).map_err(|e| e.to_string())?;
                            out.push((name, bytes));
                        }
                    }
                }
            }
            Ok::<_, String>(out)
        })
        .await
        .map_err(|e| ExportError::Files(e.to_string()))?
        .map_err(ExportError::Files)?;
        let mut seen = BTreeSet::new();
        for (name, bytes) in parquet {
            if seen.insert(name.clone()) {
                a.add(&format!("parquet/{name}"), &bytes, None)?;
            }
        }
        let n_runs = runs.rows as i64;
        let (bytes, digest, manifest) = a.finish(tenant.as_str(), &id.to_string(), now)?;
        Ok((bytes, digest, manifest, n_runs))
    }

    /// Runs the job `id` to its end, recording progress and outcome in its row.
    pub async fn run(self, tenant: TenantId, since: DateTime<Utc>, id: Uuid) {
        let jobs = self.jobs.clone();
        let tick = move |runs: i64| {
            let jobs = jobs.clone();
            let fut: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
                if let Err(e) = jobs.progress(id, runs).await {
                    tracing::warn!(error = %e, "an export's progress was not recorded");
                }
            });
            fut
        };
        let outcome = match self.build(&tenant, since, id, tick).await {
            Ok((bytes, digest, manifest, runs)) => {
                let object = object_of(tenant.as_str(), id);
                let files = self.files.clone();
                let size = bytes.len() as i64;
                let put = {
                    let object = object.clone();
                    tokio::task::spawn_blocking(move || {
                        files
                            .put(&ObjectPath::from(object.as_str()), bytes.into(), None)
                            .map_err(|e| e.to_string())
                    })
                };
                match put.await.map_err(|e| e.to_string()).and_then(|r| r) {
                    Ok(()) => self
                        .jobs
                        .finish(
                            id,
                            Utc::now() + DOWNLOAD_FOR,
                            runs,
                            manifest.files.len() as i32,
                            size,
                            &object,
                            &digest,
                        )
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(format!("the archive could not be stored: {e}")),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = outcome {
            tracing::error!(%tenant, export = %id, error = %e, "export failed");
            if let Err(e) = self.jobs.fail(id, &e).await {
                tracing::error!(error = %e, "an export's failure was not recorded");
            }
        }
    }

    /// Reads a finished archive back.
    pub async fn archive(&self, job: &ExportJob) -> Result<axum::body::Bytes, ExportError> {
        let object = job
            .object
            .clone()
            .ok_or_else(|| ExportError::Files("the export has no archive".into()))?;
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || {
            files
                .get(&ObjectPath::from(object.as_str()))
                .map_err(|e| ExportError::Files(e.to_string()))
        })
        .await
        .map_err(|e| ExportError::Files(e.to_string()))?
    }
}
