//! Registering workflow versions: validate, allocate the next number, store, publish.

use std::sync::Arc;

use aiq_engine::ValidationError;
use aiq_topics::{DefinitionRecord, TenantId, TopicKind};
use chrono::{DateTime, Utc};

use crate::catalog::{Catalog, Version};
use crate::publisher::{PublishError, Publisher};
use crate::registry::store::{RegistryStore, StoreError, StoredVersion};

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("the workflow has {} error(s)", .0.len())]
    Invalid(Vec<ValidationError>),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("the version is stored but could not be published; repeat the request: {0}")]
    Publish(#[from] PublishError),
    #[error("stored version {version} of {workflow} does not decode: {reason}")]
    Corrupt {
        workflow: String,
        version: i32,
        reason: String,
    },
    #[error("too many concurrent registrations of {0}; repeat the request")]
    Contended(String),
}

#[derive(Debug, Clone)]
pub enum Registered {
    Created(Arc<Version>),
    /// The newest version already has this content.
    Unchanged(Arc<Version>),
}

#[derive(Clone)]
pub struct Registry {
    pub store: RegistryStore,
    pub publisher: Publisher,
    pub catalog: Arc<Catalog>,
}

fn record_of(v: &StoredVersion) -> Result<DefinitionRecord, RegisterError> {
    let corrupt = |reason: String| RegisterError::Corrupt {
        workflow: v.workflow.clone(),
        version: v.version,
        reason,
    };
    Ok(DefinitionRecord {
        tenant: v
            .tenant
            .parse()
            .map_err(|e: aiq_topics::IdError| corrupt(e.to_string()))?,
        workflow: v
            .workflow
            .parse()
            .map_err(|e: aiq_topics::IdError| corrupt(e.to_string()))?,
        version: u32::try_from(v.version).map_err(|e| corrupt(e.to_string()))?,
        content_hash: v.content_hash.clone(),
        created_at: v.created_at,
        definition: serde_json::from_str(&v.definition).map_err(|e| corrupt(e.to_string()))?,
    })
}

impl Registry {
    /// Registers `text` (JSON or YAML, by `file_name`'s extension or content) for the
    /// tenant. Repeating a registration is harmless: the same content gives `Unchanged`,
    /// and a version stored but not yet published is published then.
    pub async fn register(
        &self,
        tenant: &TenantId,
        file_name: &str,
        text: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Registered, RegisterError> {
        let wf = aiq_engine::validate_source(file_name, text).map_err(RegisterError::Invalid)?;
        let id = wf.definition().id.to_string();
        let definition = serde_json::to_string(wf.definition()).unwrap_or_default();
        for _ in 0..5 {
            let latest = self.store.latest(tenant.as_str(), &id).await?;
            if let Some(l) = &latest
                && l.content_hash == wf.content_hash()
            {
                let record = record_of(l)?;
                self.publish(&record).await?;
                return Ok(Registered::Unchanged(self.catalog_version(record)?));
            }
            let stored = StoredVersion {
                tenant: tenant.to_string(),
                workflow: id.clone(),
                version: latest.map_or(1, |l| l.version + 1),
                content_hash: wf.content_hash().to_owned(),
                definition: definition.clone(),
                created_at: now,
                created_by: actor.to_owned(),
            };
            if self
                .store
                .insert_version(&stored, wf.definition().name.as_deref())
                .await?
            {
                let record = record_of(&stored)?;
                self.publish(&record).await?;
                return Ok(Registered::Created(self.catalog_version(record)?));
            }
            // Another registration took this number; look again.
        }
        Err(RegisterError::Contended(id))
    }

    async fn publish(&self, record: &DefinitionRecord) -> Result<(), RegisterError> {
        if self
            .catalog
            .version(&record.tenant, &record.workflow, record.version)
            .is_some()
        {
            return Ok(());
        }
        self.publisher
            .send(TopicKind::Definitions, &record.key(), &record.encode())
            .await?;
        Ok(())
    }

    fn catalog_version(&self, record: DefinitionRecord) -> Result<Arc<Version>, RegisterError> {
        let (tenant, workflow, version) = (
            record.tenant.clone(),
            record.workflow.clone(),
            record.version,
        );
        self.catalog
            .apply(record)
            .map_err(|e| RegisterError::Corrupt {
                workflow: workflow.to_string(),
                version: version as i32,
                reason: e.to_string(),
            })?;
        self.catalog
            .version(&tenant, &workflow, version)
            .ok_or_else(|| RegisterError::Corrupt {
                workflow: workflow.to_string(),
                version: version as i32,
                reason: "not in the catalog after applying it".into(),
            })
    }
}
