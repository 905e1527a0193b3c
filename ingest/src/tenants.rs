//! The tenant registry's writes and the gate every credential passes.
//!
//! A tenant is a record on the compacted tenants topic (`aiq_tenants`): created once
//! (a lightweight transaction on its id keeps two concurrent creations from both
//! succeeding), then changed by publishing its whole new record. Every process follows
//! the topic, so a change is in force everywhere within the time a record takes to be
//! read (milliseconds), and here before the call that made it answers: a write waits
//! until this process's follower has read it.
//!
//! Edits are read-modify-write of one record, serialized within a process; two
//! processes editing the same tenant in the same few milliseconds keep the later record
//! whole (last writer wins), never a mix.

use std::sync::Arc;
use std::time::Duration;

use aiq_auth::{ApiKey, Role};
use aiq_kafka::TailSync;
use aiq_tenants::Directory;
use aiq_topics::{
    AuditAction, IdentityProvider, Plan, RunId, SignalAction, SignalEvent, TenantId, TenantRecord,
    TenantState, TopicKind,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::caller::Caller;
use crate::publisher::{PublishError, Publisher};
use crate::registry::store::{Claim, RegistryStore, StoreError};

/// How long a write or an unknown tenant waits for the follower to read the topic.
const CATCH_UP: Duration = Duration::from_secs(2);
/// A creation claim older than this belongs to a request that died before publishing.
const STALE_CLAIM: Duration = Duration::from_secs(30);
/// The idempotency-key name under which a tenant id's creation is claimed.
const CREATE_KEY: &str = "aiq.tenant-create";

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("tenant {0:?} already exists")]
    Exists(String),
    #[error("tenant {0:?} is being created by another request; try again shortly")]
    InProgress(String),
    #[error("no tenant {0:?}")]
    NotFound(String),
    #[error("tenant {0:?} was erased: its data is gone and it takes no more changes")]
    Erased(String),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("Kafka did not take the tenant record: {0}")]
    Unavailable(#[from] PublishError),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

/// A new tenant, as `POST /v1/tenants` asks for it.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub id: TenantId,
    pub display_name: String,
    pub plan: Plan,
}

/// A created tenant and its first `tenant_admin` key (the plaintext, shown once).
#[derive(Debug, Clone)]
pub struct Onboarded {
    pub record: TenantRecord,
    pub key_id: String,
    pub key: String,
}

/// A change: every field set replaces the stored one.
#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    pub display_name: Option<String>,
    pub plan: Plan,
    /// `Some(None)` removes the tenant's own provider.
    pub identity: Option<Option<IdentityProvider>>,
}

#[derive(Clone)]
pub struct Tenants {
    pub directory: Arc<Directory>,
    /// Reads the topic to its present end; `None` in a process without a follower
    /// (then the directory is only what was applied to it).
    pub sync: Option<TailSync>,
    pub publisher: Publisher,
    pub store: RegistryStore,
    /// `ingest.open_tenants`: any tenant a valid credential names is served (development).
    pub open: bool,
    /// The configured providers' issuers, which no tenant may register as its own.
    pub reserved_issuers: Vec<String>,
    writes: Arc<tokio::sync::Mutex<()>>,
    catch_up: Arc<tokio::sync::Mutex<()>>,
}

fn check_name(name: &str) -> Result<(), TenantError> {
    let chars = name.chars().count();
    if name.trim().is_empty() || chars > aiq_topics::tenant::MAX_DISPLAY_NAME_CHARS {
        return Err(TenantError::Invalid {
            field: "display_name".into(),
            reason: format!(
                "must be 1 to {} characters, not blank",
                aiq_topics::tenant::MAX_DISPLAY_NAME_CHARS
            ),
        });
    }
    Ok(())
}

fn check_plan(plan: &Plan) -> Result<(), TenantError> {
    plan.check()
        .map_err(|(field, reason)| TenantError::Invalid { field, reason })
}

impl Tenants {
    pub fn new(
        directory: Arc<Directory>,
        sync: Option<TailSync>,
        publisher: Publisher,
        store: RegistryStore,
        open: bool,
    ) -> Self {
        Self {
            directory,
            sync,
            publisher,
            store,
            open,
            reserved_issuers: Vec::new(),
            writes: Arc::default(),
            catch_up: Arc::default(),
        }
    }

    /// Reads the topic to its present end (one read at a time per process: callers
    /// that arrive meanwhile wait for it and share its result).
    pub async fn catch_up(&self) -> bool {
        let seen = self.directory.changes();
        let _one = self.catch_up.lock().await;
        if self.directory.changes() != seen {
            return true;
        }
        self.read_to_end().await
    }

    /// Reads the topic up to where it ends now, whatever other reads did meanwhile.
    async fn read_to_end(&self) -> bool {
        let Some(sync) = self.sync.clone() else {
            return false;
        };
        tokio::task::spawn_blocking(move || sync.catch_up_blocking(CATCH_UP))
            .await
            .unwrap_or(false)
    }

    /// Whether `caller` may be served: its tenant is registered (read up to now before
    /// refusing), or tenants are open, or it is a platform admin (who creates them).
    pub async fn admits(&self, caller: &Caller) -> bool {
        if self.open || caller.role == Role::PlatformAdmin {
            return true;
        }
        if self.directory.contains(&caller.tenant) {
            return true;
        }
        self.catch_up().await;
        self.directory.contains(&caller.tenant)
    }

    pub async fn get(&self, id: &TenantId) -> Option<TenantRecord> {
        if let Some(r) = self.directory.get(id) {
            return Some(r);
        }
        self.catch_up().await;
        self.directory.get(id)
    }

    /// Creates the tenant and its first `tenant_admin` API key. Of two requests for one
    /// id exactly one succeeds; a request that died between its claim and its record
    /// is taken over after 30 s. The key is stored before the record is published, so
    /// a tenant never exists without one (a key left by a failed attempt names a
    /// tenant that does not exist, and is refused).
    pub async fn create(
        &self,
        req: NewTenant,
        caller: &Caller,
        now: DateTime<Utc>,
    ) -> Result<Onboarded, TenantError> {
        check_name(&req.display_name)?;
        check_plan(&req.plan)?;
        let id = req.id.to_string();
        if self.get(&req.id).await.is_some() {
            return Err(TenantError::Exists(id));
        }
        let claim = self
            .store
            .claim_key(&id, CREATE_KEY, "", Uuid::new_v4(), "", now)
            .await?;
        if let Claim::Existing {
            accepted,
            claimed_at,
            ..
        } = claim
        {
            let stale = claimed_at.is_some_and(|at| {
                now.signed_duration_since(at).to_std().unwrap_or_default() > STALE_CLAIM
            });
            let taken = match (accepted, claimed_at) {
                // Accepted, yet not on the topic: its record was compacted away by a
                // delete that does not exist yet, or the follower lags; either way
                // the id is taken.
                (true, _) => false,
                (false, Some(seen)) if stale => {
                    self.store.reclaim_key(&id, CREATE_KEY, seen, now).await?
                }
                _ => false,
            };
            if !taken {
                return Err(if accepted {
                    TenantError::Exists(id)
                } else {
                    TenantError::InProgress(id)
                });
            }
        }
        let created = u64::try_from(now.timestamp()).unwrap_or_default();
        let stored = match ApiKey::generate(req.id.clone(), Role::TenantAdmin, "first key", created)
        {
            Ok((key, key_record)) => crate::api_keys::store(&self.store, &key_record)
                .await
                .map(|()| (key, key_record.key_id))
                .map_err(TenantError::Store),
            Err(e) => Err(TenantError::Internal(e.to_string())),
        };
        let (key, key_id) = match stored {
            Ok(k) => k,
            Err(e) => {
                self.release(&id).await;
                return Err(e);
            }
        };
        let record = TenantRecord {
            id: req.id.clone(),
            display_name: req.display_name,
            plan: req.plan,
            state: TenantState::Active,
            suspended_at: None,
            erased_at: None,
            created_at: now,
            updated_at: now,
            updated_by: caller.subject.clone(),
            identity: None,
        };
        if let Err(e) = self.publish(&record).await {
            self.release(&id).await;
            return Err(e);
        }
        self.store.accept_key(&id, CREATE_KEY).await?;
        Ok(Onboarded {
            record,
            key_id,
            key,
        })
    }

    /// Frees a creation claim whose record was not written, so a retry may claim the
    /// id again.
    async fn release(&self, id: &str) {
        if let Err(e) = self.store.release_key(id, CREATE_KEY).await {
            tracing::warn!(tenant = %id, error = %e, "releasing a tenant claim");
        }
    }

    /// Applies `change` to the tenant's record and publishes it.
    async fn edit(
        &self,
        id: &TenantId,
        caller: &Caller,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut TenantRecord) -> Result<(), TenantError>,
    ) -> Result<(TenantRecord, TenantRecord), TenantError> {
        self.edit_as(id, caller, now, false, change).await
    }

    async fn edit_as(
        &self,
        id: &TenantId,
        caller: &Caller,
        now: DateTime<Utc>,
        erasing: bool,
        change: impl FnOnce(&mut TenantRecord) -> Result<(), TenantError>,
    ) -> Result<(TenantRecord, TenantRecord), TenantError> {
        let _one = self.writes.lock().await;
        self.read_to_end().await;
        let before = self
            .directory
            .get(id)
            .ok_or_else(|| TenantError::NotFound(id.to_string()))?;
        // Only the erasure itself may touch an erased tenant, and only to finish.
        if before.is_erased() && (before.erased_at.is_some() || !erasing) {
            return Err(TenantError::Erased(id.to_string()));
        }
        let mut after = before.clone();
        change(&mut after)?;
        after.updated_at = now;
        after.updated_by = caller.subject.clone();
        self.publish(&after).await?;
        Ok((before, after))
    }

    pub async fn update(
        &self,
        id: &TenantId,
        patch: TenantPatch,
        caller: &Caller,
        now: DateTime<Utc>,
    ) -> Result<TenantRecord, TenantError> {
        if let Some(name) = &patch.display_name {
            check_name(name)?;
        }
        check_plan(&patch.plan)?;
        if let Some(Some(idp)) = &patch.identity {
            self.check_identity(id, idp)?;
        }
        let (_, after) = self
            .edit(id, caller, now, |r| {
                if let Some(name) = patch.display_name {
                    r.display_name = name;
                }
                r.plan.merge(&patch.plan);
                if let Some(identity) = patch.identity {
                    r.identity = identity;
                }
                Ok(())
            })
            .await?;
        Ok(after)
    }

    /// A tenant's own provider: well formed, and an issuer nobody else trusts already
    /// (the deployment's providers, another tenant's).
    fn check_identity(&self, id: &TenantId, idp: &IdentityProvider) -> Result<(), TenantError> {
        idp.check()
            .map_err(|(field, reason)| TenantError::Invalid { field, reason })?;
        let taken = || TenantError::Invalid {
            field: "identity.issuer".into(),
            reason: format!(
                "issuer {:?} is already trusted for another tenant or the platform",
                idp.issuer
            ),
        };
        if self.reserved_issuers.contains(&idp.issuer) {
            return Err(taken());
        }
        let elsewhere =
            self.directory.list().into_iter().any(|t| {
                &t.id != id && t.identity.as_ref().is_some_and(|o| o.issuer == idp.issuer)
            });
        if elsewhere {
            return Err(taken());
        }
        Ok(())
    }

    /// Suspends the tenant (again, if it is: the call is idempotent). With
    /// `cancel_running`, every run of the tenant in flight or queued is cancelled by a
    /// signal in its partition, published after the suspension so that no trigger the
    /// suspension refuses slips in behind the cancel.
    pub async fn suspend(
        &self,
        id: &TenantId,
        cancel_running: bool,
        caller: &Caller,
        now: DateTime<Utc>,
    ) -> Result<TenantRecord, TenantError> {
        let (_, after) = self
            .edit(id, caller, now, |r| {
                if r.state != TenantState::Suspended {
                    r.state = TenantState::Suspended;
                    r.suspended_at = Some(now);
                }
                Ok(())
            })
            .await?;
        if cancel_running {
            let event = SignalEvent {
                tenant: id.clone(),
                run: RunId::random(),
                action: SignalAction::CancelTenant {
                    reason: format!("tenant suspended by {}", caller.subject),
                },
            };
            self.publisher
                .send(TopicKind::Signals, id.as_str(), &event.encode())
                .await?;
        }
        Ok(after)
    }

    /// Marks the tenant erased: refused like a suspended tenant, its cron stopped, no
    /// change accepted but the erasure's own. `finished` records that the erasure is
    /// complete; until then a confirmed erasure may run again to finish it.
    pub async fn mark_erased(
        &self,
        id: &TenantId,
        caller: &Caller,
        now: DateTime<Utc>,
        finished: bool,
    ) -> Result<TenantRecord, TenantError> {
        let (_, after) = self
            .edit_as(id, caller, now, true, |r| {
                r.state = TenantState::Erased;
                r.suspended_at.get_or_insert(now);
                r.identity = None;
                if finished {
                    r.erased_at = Some(now);
                }
                Ok(())
            })
            .await?;
        Ok(after)
    }

    pub async fn resume(
        &self,
        id: &TenantId,
        caller: &Caller,
        now: DateTime<Utc>,
    ) -> Result<TenantRecord, TenantError> {
        let (_, after) = self
            .edit(id, caller, now, |r| {
                r.state = TenantState::Active;
                r.suspended_at = None;
                Ok(())
            })
            .await?;
        Ok(after)
    }

    /// Records `action` under the tenant it changed (so its own admins see it), naming
    /// the platform admin's tenant in the detail.
    pub async fn audit(&self, caller: &Caller, tenant: &TenantRecord, action: AuditAction) {
        let as_tenant = Caller {
            tenant: tenant.id.clone(),
            own_tenant: Some(caller.tenant.clone()).filter(|t| *t != tenant.id),
            ..caller.clone()
        };
        crate::audit::record(
            &self.publisher,
            &as_tenant,
            action,
            tenant.id.as_str(),
            serde_json::json!({
                "by_tenant": caller.tenant.as_str(),
                "state": tenant.state.as_str(),
                "plan": tenant.plan,
                "display_name": tenant.display_name,
            }),
        )
        .await;
    }

    /// Publishes the record and waits until this process's follower has read it, so
    /// that the answer and the next request here see the change.
    async fn publish(&self, record: &TenantRecord) -> Result<(), TenantError> {
        self.publisher
            .send(TopicKind::Tenants, record.id.as_str(), &record.encode())
            .await?;
        if self.sync.is_some() {
            if !self.read_to_end().await {
                tracing::warn!(tenant = %record.id, "the tenants follower did not catch up in time");
            }
        } else {
            // No follower in this process: keep the directory current by hand.
            self.directory
                .apply(Some(record.id.as_str().as_bytes()), Some(&record.encode()))
                .map_err(TenantError::Internal)?;
        }
        Ok(())
    }
}
