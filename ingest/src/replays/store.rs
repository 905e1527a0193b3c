//! Replay jobs in Cassandra (`replays`, `replays_active`): created once with the runs
//! they take, read for progress, taken and held by a runner with a lease (lightweight
//! transactions), their progress saved only by the lease's holder, cancelled by anyone
//! allowed to.

use std::sync::Arc;

use aiq_topics::TenantId;
use chrono::{DateTime, Utc};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use uuid::Uuid;

use super::{Job, JobState, ReplayMode, Target};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("preparing the statement for {op}: {source}")]
    Prepare {
        op: &'static str,
        #[source]
        source: Box<scylla::errors::PrepareError>,
    },
    #[error("{op}: {source}")]
    Execute {
        op: &'static str,
        #[source]
        source: Box<scylla::errors::ExecutionError>,
    },
    #[error("{op}: unexpected result: {reason}")]
    Result { op: &'static str, reason: String },
}

/// The only partition of `replays_active`: jobs are few, and listed whole.
const SHARD: i32 = 0;

const COLUMNS: &str = "id, created_at, created_by, predicate, mode, platform, max_per_second, \
                       runs, state, next_index, done, skipped, failed, last_error, updated_at";

struct Statements {
    insert: PreparedStatement,
    activate: PreparedStatement,
    get: PreparedStatement,
    active: PreparedStatement,
    claim: PreparedStatement,
    save: PreparedStatement,
    finish: PreparedStatement,
    cancel: PreparedStatement,
    deactivate: PreparedStatement,
}

#[derive(Clone)]
pub struct ReplayStore {
    session: Arc<Session>,
    st: Arc<Statements>,
}

type JobRow = (
    Uuid,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<i32>,
    Option<Vec<String>>,
    Option<String>,
    Option<i32>,
    Option<i32>,
    Option<i32>,
    Option<i32>,
    Option<String>,
    Option<DateTime<Utc>>,
);

fn count(n: Option<i32>) -> u32 {
    n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

fn job(tenant: TenantId, row: JobRow) -> Job {
    let (
        id,
        created_at,
        created_by,
        predicate,
        mode,
        platform,
        max_per_second,
        runs,
        state,
        next_index,
        done,
        skipped,
        failed,
        last_error,
        updated_at,
    ) = row;
    let targets: Vec<Target> = runs
        .unwrap_or_default()
        .iter()
        .filter_map(|s| Target::decode(s))
        .collect();
    Job {
        id,
        tenant,
        created_at: created_at.unwrap_or_default(),
        created_by: created_by.unwrap_or_default(),
        predicate: predicate.unwrap_or_default(),
        mode: mode
            .as_deref()
            .and_then(ReplayMode::parse)
            .unwrap_or(ReplayMode::Redrive),
        platform: platform.unwrap_or(false),
        max_per_second: count(max_per_second).max(1),
        state: JobState::parse(state.as_deref()),
        total: targets.len(),
        done: count(done),
        skipped: count(skipped),
        failed: count(failed),
        last_error,
        updated_at,
        next_index: count(next_index) as usize,
        targets,
    }
}

fn int(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl ReplayStore {
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self, StoreError> {
        let ks = keyspace;
        let prepare = |op: &'static str, cql: String| {
            let session = Arc::clone(&session);
            async move {
                session
                    .prepare(cql)
                    .await
                    .map_err(|source| StoreError::Prepare {
                        op,
                        source: Box::new(source),
                    })
            }
        };
        let st = Statements {
            insert: prepare(
                "creating a replay",
                format!(
                    "INSERT INTO {ks}.replays (tenant, id, created_at, created_by, predicate, \
                     mode, platform, max_per_second, runs, state, next_index, done, skipped, \
                     failed, updated_at, lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, \
                     'running', 0, 0, 0, 0, ?, ?) IF NOT EXISTS"
                ),
            )
            .await?,
            activate: prepare(
                "creating a replay",
                format!("INSERT INTO {ks}.replays_active (shard, tenant, id) VALUES (?, ?, ?)"),
            )
            .await?,
            get: prepare(
                "reading a replay",
                format!("SELECT {COLUMNS} FROM {ks}.replays WHERE tenant = ? AND id = ?"),
            )
            .await?,
            active: prepare(
                "listing replays",
                format!("SELECT tenant, id FROM {ks}.replays_active WHERE shard = ?"),
            )
            .await?,
            claim: prepare(
                "taking a replay",
                format!(
                    "UPDATE {ks}.replays SET owner = ?, lease_until = ? WHERE tenant = ? \
                     AND id = ? IF state = 'running' AND lease_until < ?"
                ),
            )
            .await?,
            save: prepare(
                "saving a replay's progress",
                format!(
                    "UPDATE {ks}.replays SET next_index = ?, done = ?, skipped = ?, failed = ?, \
                     last_error = ?, updated_at = ?, lease_until = ? WHERE tenant = ? AND id = ? \
                     IF owner = ? AND state = 'running'"
                ),
            )
            .await?,
            finish: prepare(
                "finishing a replay",
                format!(
                    "UPDATE {ks}.replays SET state = 'done', next_index = ?, done = ?, \
                     skipped = ?, failed = ?, last_error = ?, updated_at = ? WHERE tenant = ? \
                     AND id = ? IF owner = ? AND state = 'running'"
                ),
            )
            .await?,
            cancel: prepare(
                "cancelling a replay",
                format!(
                    "UPDATE {ks}.replays SET state = 'cancelled', updated_at = ? WHERE tenant = ? \
                     AND id = ? IF state = 'running'"
                ),
            )
            .await?,
            deactivate: prepare(
                "finishing a replay",
                format!(
                    "DELETE FROM {ks}.replays_active WHERE shard = ? AND tenant = ? AND id = ?"
                ),
            )
            .await?,
        };
        Ok(Self {
            session,
            st: Arc::new(st),
        })
    }

    async fn exec(
        &self,
        op: &'static str,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<scylla::response::query_result::QueryResult, StoreError> {
        self.session
            .execute_unpaged(st, values)
            .await
            .map_err(|source| StoreError::Execute {
                op,
                source: Box::new(source),
            })
    }

    async fn lwt(
        &self,
        op: &'static str,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<bool, StoreError> {
        let result = self.exec(op, st, values).await?;
        crate::lwt::applied(result).map_err(|reason| StoreError::Result { op, reason })
    }

    /// Stores a new job (running, nobody's yet) and lists it for the runners.
    pub async fn create(&self, j: &Job) -> Result<(), StoreError> {
        let runs: Vec<String> = j.targets.iter().map(Target::encode).collect();
        let nobody = DateTime::<Utc>::UNIX_EPOCH;
        let values = (
            j.tenant.as_str(),
            j.id,
            j.created_at,
            j.created_by.as_str(),
            j.predicate.as_str(),
            j.mode.as_str(),
            j.platform,
            i32::try_from(j.max_per_second).unwrap_or(i32::MAX),
            runs,
            j.created_at,
            nobody,
        );
        self.lwt("creating a replay", &self.st.insert, values)
            .await?;
        self.exec(
            "creating a replay",
            &self.st.activate,
            (SHARD, j.tenant.as_str(), j.id),
        )
        .await?;
        Ok(())
    }

    pub async fn get(&self, tenant: &TenantId, id: Uuid) -> Result<Option<Job>, StoreError> {
        let op = "reading a replay";
        let bad = |reason: String| StoreError::Result { op, reason };
        let row = self
            .exec(op, &self.st.get, (tenant.as_str(), id))
            .await?
            .into_rows_result()
            .map_err(|e| bad(e.to_string()))?
            .maybe_first_row::<JobRow>()
            .map_err(|e| bad(e.to_string()))?;
        Ok(row.map(|r| job(tenant.clone(), r)))
    }

    /// The jobs not finished yet, as (tenant, id).
    pub async fn active(&self) -> Result<Vec<(TenantId, Uuid)>, StoreError> {
        let op = "listing replays";
        let bad = |reason: String| StoreError::Result { op, reason };
        let rows = self
            .exec(op, &self.st.active, (SHARD,))
            .await?
            .into_rows_result()
            .map_err(|e| bad(e.to_string()))?;
        let mut out = Vec::new();
        for row in rows
            .rows::<(String, Uuid)>()
            .map_err(|e| bad(e.to_string()))?
        {
            let (t, id) = row.map_err(|e| bad(e.to_string()))?;
            if let Ok(t) = TenantId::new(t) {
                out.push((t, id));
            }
        }
        Ok(out)
    }

    /// Takes a running job whose lease has run out (or that nobody held) until `until`.
    pub async fn claim(
        &self,
        tenant: &TenantId,
        id: Uuid,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.lwt(
            "taking a replay",
            &self.st.claim,
            (owner, until, tenant.as_str(), id, now),
        )
        .await
    }

    /// Saves progress and extends the lease; false when `owner` no longer holds the job
    /// (cancelled, or taken over).
    pub async fn save(
        &self,
        j: &Job,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let values = (
            int(j.next_index),
            j.done as i32,
            j.skipped as i32,
            j.failed as i32,
            j.last_error.as_deref(),
            Utc::now(),
            until,
            j.tenant.as_str(),
            j.id,
            owner,
        );
        self.lwt("saving a replay's progress", &self.st.save, values)
            .await
    }

    /// Marks the job done with its final counts, and unlists it.
    pub async fn finish(&self, j: &Job, owner: &str) -> Result<bool, StoreError> {
        let values = (
            int(j.next_index),
            j.done as i32,
            j.skipped as i32,
            j.failed as i32,
            j.last_error.as_deref(),
            Utc::now(),
            j.tenant.as_str(),
            j.id,
            owner,
        );
        let done = self
            .lwt("finishing a replay", &self.st.finish, values)
            .await?;
        self.unlist(&j.tenant, j.id).await?;
        Ok(done)
    }

    /// Cancels a running job; false when it was not running.
    pub async fn cancel(&self, tenant: &TenantId, id: Uuid) -> Result<bool, StoreError> {
        let cancelled = self
            .lwt(
                "cancelling a replay",
                &self.st.cancel,
                (Utc::now(), tenant.as_str(), id),
            )
            .await?;
        self.unlist(tenant, id).await?;
        Ok(cancelled)
    }

    pub async fn unlist(&self, tenant: &TenantId, id: Uuid) -> Result<(), StoreError> {
        self.exec(
            "finishing a replay",
            &self.st.deactivate,
            (SHARD, tenant.as_str(), id),
        )
        .await?;
        Ok(())
    }
}
