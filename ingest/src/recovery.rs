//! Starting a failed run again: redrive (the same run resumes at its failed step, see
//! the engine's `Input::Redrive`) and rerun (a new run of the same workflow with the
//! same input). Both read the run from the history the sink wrote, and both are exactly
//! once under a retried request: a redrive names the failure it resumes (its end time),
//! which the orchestrator resumes once, and an `Idempotency-Key` makes a repeat of
//! either answer what the first got and write nothing.

use aiq_topics::{
    RunId, RunStatus, SignalAction, SignalEvent, TenantId, TopicKind, TriggerEvent, TriggerSource,
    WorkflowId,
};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::history::{HistoryError, HistoryStore};
use crate::publisher::{PublishError, Publisher};
use crate::registry::store::{Claim, RegistryStore, StoreError};
use crate::runs::{Accepted, StartError, StartRun};

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("run {0} was not found")]
    NotFound(RunId),
    #[error(
        "run {run} is {status}; only a failed or timed_out run is redriven (a run the \
         history still shows running may have ended a moment ago: try again shortly)"
    )]
    NotRedrivable { run: RunId, status: String },
    #[error("run {0} has no workflow in the history; it cannot be rerun")]
    NoWorkflow(RunId),
    #[error("run {0}'s payloads were erased; it can be neither redriven nor rerun")]
    Erased(RunId),
    #[error("Idempotency-Key {0:?} was used for a different request")]
    KeyReused(String),
    #[error("a request with Idempotency-Key {0:?} is still being processed")]
    InProgress(String),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a redrive request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redriven {
    pub run: RunId,
    pub workflow: String,
    /// The end of the failure it resumes.
    pub failed_at: DateTime<Utc>,
    /// An earlier request with the same key did it; nothing new was written.
    pub replayed: bool,
}

/// Which version a rerun starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RerunVersion {
    /// The version the original ran.
    Same,
    Latest,
    Exactly(u32),
}

/// What redrive and rerun need of the stage.
pub struct Recovery<'a> {
    pub history: &'a HistoryStore,
    pub publisher: &'a Publisher,
    pub store: &'a RegistryStore,
    pub runs: &'a crate::runs::Runs,
}

fn digest(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Recovery<'_> {
    /// Asks the orchestrator to resume the tenant's failed run `run` at its failed step.
    pub async fn redrive(
        &self,
        tenant: &TenantId,
        run: RunId,
        key: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Redriven, RecoveryError> {
        let detail = self
            .history
            .run_row(tenant.as_str(), run.as_uuid())
            .await?
            .ok_or(RecoveryError::NotFound(run))?;
        if detail.payloads_erased_at.is_some() {
            return Err(RecoveryError::Erased(run));
        }
        let status = detail.status.clone().unwrap_or_default();
        let redrivable = [RunStatus::Failed.as_str(), RunStatus::TimedOut.as_str()];
        let failed_at = match detail.finished_at {
            Some(at) if redrivable.contains(&status.as_str()) => at,
            _ => return Err(RecoveryError::NotRedrivable { run, status }),
        };
        let workflow = detail.workflow.unwrap_or_default();
        let mut redriven = Redriven {
            run,
            workflow: workflow.clone(),
            failed_at,
            replayed: false,
        };
        if let Some(key) = key {
            let len = key.chars().count();
            if len == 0 || len > TriggerEvent::MAX_IDEMPOTENCY_KEY {
                return Err(StartError::BadKey {
                    max: TriggerEvent::MAX_IDEMPOTENCY_KEY,
                }
                .into());
            }
            let hash = digest(&format!("redrive:{run}"));
            let claimed = self
                .store
                .claim_key(tenant.as_str(), key, "(redrive)", run.as_uuid(), &hash, now)
                .await?;
            match claimed {
                Claim::Claimed => {}
                Claim::Existing { request_hash, .. } if request_hash != hash => {
                    return Err(RecoveryError::KeyReused(key.to_owned()));
                }
                Claim::Existing { accepted: true, .. } => {
                    redriven.replayed = true;
                    return Ok(redriven);
                }
                Claim::Existing { claimed_at, .. } => {
                    // Pending: another request holds it, unless that request died.
                    let stale = claimed_at.filter(|t| {
                        now.signed_duration_since(*t).to_std().unwrap_or_default()
                            >= self.runs.stale_after
                    });
                    let retaken = match stale {
                        Some(seen) => {
                            self.store
                                .reclaim_key(tenant.as_str(), key, seen, now)
                                .await?
                        }
                        None => false,
                    };
                    if !retaken {
                        return Err(RecoveryError::InProgress(key.to_owned()));
                    }
                }
            }
        }
        let signal = SignalEvent {
            tenant: tenant.clone(),
            run,
            action: SignalAction::Redrive { failed_at },
        };
        let sent = self
            .publisher
            .send(TopicKind::Signals, tenant.as_str(), &signal.encode())
            .await;
        match (sent, key) {
            (Err(e), Some(key)) => {
                self.store.release_key(tenant.as_str(), key).await?;
                Err(e.into())
            }
            (Err(e), None) => Err(e.into()),
            (Ok(_), Some(key)) => {
                self.store.accept_key(tenant.as_str(), key).await?;
                Ok(redriven)
            }
            (Ok(_), None) => Ok(redriven),
        }
    }

    /// Starts a new run of the tenant's run `run`'s workflow with its input.
    pub async fn rerun(
        &self,
        tenant: &TenantId,
        run: RunId,
        version: RerunVersion,
        key: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<(Accepted, WorkflowId), RecoveryError> {
        let detail = self
            .history
            .run_row(tenant.as_str(), run.as_uuid())
            .await?
            .ok_or(RecoveryError::NotFound(run))?;
        if detail.payloads_erased_at.is_some() {
            return Err(RecoveryError::Erased(run));
        }
        let workflow = detail
            .workflow
            .as_deref()
            .and_then(|w| WorkflowId::new(w).ok())
            .ok_or(RecoveryError::NoWorkflow(run))?;
        let version = match version {
            RerunVersion::Same => detail.version.and_then(|v| u32::try_from(v).ok()),
            RerunVersion::Latest => None,
            RerunVersion::Exactly(v) => Some(v),
        };
        let accepted = self
            .runs
            .start(
                StartRun {
                    tenant: tenant.clone(),
                    workflow: workflow.clone(),
                    version,
                    input: detail.input,
                    idempotency_key: key,
                    source: TriggerSource::Manual,
                    parent_traceparent: None,
                },
                now,
            )
            .await?;
        Ok((accepted, workflow))
    }
}
