//! Starting runs: the trigger is answered only after Kafka holds it, and a repeated
//! request with the same `Idempotency-Key` gets the same run and writes nothing twice.

use std::sync::Arc;
use std::time::Duration;

use aiq_topics::{RunId, TenantId, TriggerEvent, TriggerSource, WorkflowId};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::catalog::Catalog;
use crate::publisher::{PublishError, Publisher};
use crate::registry::store::{Claim, RegistryStore, StoreError};

#[derive(Debug, Clone)]
pub struct StartRun {
    pub tenant: TenantId,
    pub workflow: WorkflowId,
    pub version: Option<u32>,
    pub input: Value,
    pub idempotency_key: Option<String>,
    pub source: TriggerSource,
    /// The request's W3C `traceparent`, kept as a link on the trigger (the run's own
    /// trace id is its run id).
    pub parent_traceparent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub run_id: RunId,
    pub version: u32,
    /// An earlier request with the same key was accepted; nothing new was written.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("workflow {0:?} is not registered")]
    UnknownWorkflow(String),
    #[error("{0}")]
    Stopped(String),
    #[error("tenant {0:?} is suspended: its triggers are refused until it is resumed")]
    Suspended(String),
    #[error("workflow {workflow:?} has no version {version}")]
    UnknownVersion { workflow: String, version: u32 },
    #[error("the input does not match the workflow's input schema")]
    InvalidInput(Vec<String>),
    #[error("the input is {size} bytes of JSON, over the limit of {limit} bytes")]
    InputTooLarge { size: usize, limit: usize },
    #[error("Idempotency-Key must be 1 to {max} characters")]
    BadKey { max: usize },
    #[error("Idempotency-Key {0:?} was used for a different request")]
    KeyReused(String),
    #[error("a request with Idempotency-Key {0:?} is still being processed")]
    InProgress(String),
    #[error(
        "the queue of waiting runs of tenant {tenant:?} is full: {queued} runs wait for a slot \
         (max_queued_runs = {max}); try again once runs have finished"
    )]
    QueueFull {
        tenant: String,
        queued: u64,
        max: u32,
    },
    #[error("Kafka did not take the trigger: {0}")]
    Unavailable(#[from] PublishError),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Runs {
    pub store: RegistryStore,
    pub publisher: Publisher,
    pub catalog: Arc<Catalog>,
    /// A pending claim older than this was left by a request that died.
    pub stale_after: Duration,
    /// Largest run input (JSON-encoded) that is published.
    pub max_input_bytes: usize,
    /// Tenants whose queue of waiting runs is full: their triggers are refused.
    pub queues: crate::queues::QueueGate,
    /// The tenant registry: a suspended tenant's triggers are refused.
    pub tenants: Arc<aiq_tenants::Directory>,
}

/// The size of `input` as JSON. The body it came in is bounded (`max_body_bytes`), so
/// measuring it whole costs little.
fn encoded_size(input: &Value) -> usize {
    serde_json::to_vec(input).map_or(usize::MAX, |v| v.len())
}

fn request_hash(req: &StartRun, version: u32) -> String {
    let canonical = serde_json::json!({
        "workflow": req.workflow,
        "version": version,
        "input": req.input,
    });
    Sha256::digest(canonical.to_string().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Runs {
    pub async fn start(&self, req: StartRun, now: DateTime<Utc>) -> Result<Accepted, StartError> {
        if self.tenants.is_suspended(&req.tenant) {
            return Err(StartError::Suspended(req.tenant.to_string()));
        }
        if let Some(q) = self.queues.full(&req.tenant) {
            return Err(StartError::QueueFull {
                tenant: req.tenant.to_string(),
                queued: q.queued,
                max: q.max,
            });
        }
        // First: nothing about an input Kafka would refuse is worth looking up.
        let size = encoded_size(&req.input);
        if size > self.max_input_bytes {
            return Err(StartError::InputTooLarge {
                size,
                limit: self.max_input_bytes,
            });
        }
        let found = match req.version {
            Some(v) => self
                .catalog
                .version(&req.tenant, &req.workflow, v)
                .ok_or_else(|| match self.catalog.latest(&req.tenant, &req.workflow) {
                    Some(_) => StartError::UnknownVersion {
                        workflow: req.workflow.to_string(),
                        version: v,
                    },
                    None => StartError::UnknownWorkflow(req.workflow.to_string()),
                })?,
            None => self
                .catalog
                .latest(&req.tenant, &req.workflow)
                .ok_or_else(|| StartError::UnknownWorkflow(req.workflow.to_string()))?,
        };
        if let Some(reason) = self.catalog.refusal(&req.tenant, &req.workflow) {
            return Err(StartError::Stopped(reason));
        }
        found
            .workflow
            .validate_input(&req.input)
            .map_err(StartError::InvalidInput)?;
        let version = found.record.version;

        let mut trigger = TriggerEvent::new(
            req.tenant.clone(),
            req.workflow.clone(),
            req.source,
            req.input.clone(),
        );
        trigger.version = Some(version);
        trigger.occurred_at = Some(now);

        let Some(key) = req.idempotency_key.clone() else {
            let run_id = RunId::random();
            trigger.run_id = Some(run_id);
            self.publisher
                .trigger_from(&trigger, req.parent_traceparent.as_deref())
                .await?;
            return Ok(Accepted {
                run_id,
                version,
                replayed: false,
            });
        };

        let len = key.chars().count();
        if len == 0 || len > TriggerEvent::MAX_IDEMPOTENCY_KEY {
            return Err(StartError::BadKey {
                max: TriggerEvent::MAX_IDEMPOTENCY_KEY,
            });
        }
        let run_id = RunId::from_idempotency_key(&req.tenant, &req.workflow, &key);
        let hash = request_hash(&req, version);
        let tenant = req.tenant.as_str();
        match self
            .store
            .claim_key(
                tenant,
                &key,
                req.workflow.as_str(),
                run_id.as_uuid(),
                &hash,
                now,
            )
            .await?
        {
            Claim::Claimed => {}
            Claim::Existing {
                request_hash,
                run_id: existing,
                accepted,
                claimed_at,
                ..
            } => {
                if request_hash != hash {
                    return Err(StartError::KeyReused(key));
                }
                if accepted {
                    return Ok(Accepted {
                        run_id: RunId::from_uuid(existing),
                        version,
                        replayed: true,
                    });
                }
                // Pending: another request holds it, unless that request died.
                let stale = claimed_at.is_none_or(|t| {
                    now.signed_duration_since(t).to_std().unwrap_or_default() >= self.stale_after
                });
                let Some(seen) = claimed_at.filter(|_| stale) else {
                    return Err(StartError::InProgress(key));
                };
                if !self.store.reclaim_key(tenant, &key, seen, now).await? {
                    return Err(StartError::InProgress(key));
                }
            }
        }
        trigger.run_id = Some(run_id);
        trigger.idempotency_key = Some(key.clone());
        if let Err(e) = self
            .publisher
            .trigger_from(&trigger, req.parent_traceparent.as_deref())
            .await
        {
            // Not written: free the key so that a retry can try again.
            self.store.release_key(tenant, &key).await?;
            return Err(e.into());
        }
        self.store.accept_key(tenant, &key).await?;
        Ok(Accepted {
            run_id,
            version,
            replayed: false,
        })
    }
}
