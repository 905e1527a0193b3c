//! The `exports` table: one row per export job.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use serde::Serialize;
use uuid::Uuid;

use crate::registry::store::StoreError;

/// A `running` row not refreshed for this long was left by a process that died.
pub const STALE_AFTER: chrono::Duration = chrono::Duration::seconds(60);

const COLS: &str = "id, tenant, requested_by, created_at, updated_at, finished_at, expires_at, \
                    state, runs, files, bytes, object, manifest_sha256, error";

type Row = (
    Uuid,
    String,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    String,
    Option<i64>,
    Option<i32>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// An export job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ExportJob {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub tenant: String,
    pub requested_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The archive can be downloaded until then.
    pub expires_at: Option<DateTime<Utc>>,
    /// `running`, `succeeded`, `failed`, `interrupted` (its process died: ask again) or
    /// `expired` (the archive is gone).
    pub state: String,
    /// Runs written so far.
    pub runs: i64,
    pub files: i32,
    pub bytes: i64,
    #[serde(skip)]
    pub object: Option<String>,
    /// SHA-256 of `manifest.json`, which holds every other file's digest.
    pub manifest_sha256: Option<String>,
    pub error: Option<String>,
}

impl ExportJob {
    /// The state as of `now`: a running job nobody refreshes is interrupted, a finished
    /// archive past its time is expired.
    pub fn state_at(&self, now: DateTime<Utc>) -> &str {
        match self.state.as_str() {
            "running" if now - self.updated_at > STALE_AFTER => "interrupted",
            "succeeded" if self.expires_at.is_some_and(|e| now >= e) => "expired",
            s => s,
        }
    }
}

#[derive(Clone)]
pub struct ExportStore {
    session: Arc<Session>,
    insert: PreparedStatement,
    progress: PreparedStatement,
    finish: PreparedStatement,
    fail: PreparedStatement,
    get: PreparedStatement,
}

impl ExportStore {
    pub async fn new(session: Arc<Session>, ks: &str) -> Result<Self, StoreError> {
        let prep = |statement: &'static str, cql: String| {
            let session = Arc::clone(&session);
            async move {
                session
                    .prepare(cql)
                    .await
                    .map_err(|source| StoreError::Prepare {
                        statement,
                        source: Box::new(source),
                    })
            }
        };
        Ok(Self {
            insert: prep(
                "export insert",
                format!(
                    "INSERT INTO {ks}.exports (id, tenant, requested_by, created_at, updated_at, state, runs) \
                     VALUES (?, ?, ?, ?, ?, 'running', 0)"
                ),
            )
            .await?,
            progress: prep(
                "export progress",
                format!("UPDATE {ks}.exports SET updated_at = ?, runs = ? WHERE id = ?"),
            )
            .await?,
            finish: prep(
                "export finish",
                format!(
                    "UPDATE {ks}.exports SET state = 'succeeded', updated_at = ?, finished_at = ?, \
                     expires_at = ?, runs = ?, files = ?, bytes = ?, object = ?, manifest_sha256 = ? \
                     WHERE id = ?"
                ),
            )
            .await?,
            fail: prep(
                "export fail",
                format!(
                    "UPDATE {ks}.exports SET state = 'failed', updated_at = ?, finished_at = ?, error = ? \
                     WHERE id = ?"
                ),
            )
            .await?,
            get: prep(
                "export get",
                format!("SELECT {COLS} FROM {ks}.exports WHERE id = ?"),
            )
            .await?,
            session,
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

    pub async fn insert(
        &self,
        id: Uuid,
        tenant: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.exec(
            "starting an export",
            &self.insert,
            (id, tenant, by, now, now),
        )
        .await
        .map(|_| ())
    }

    pub async fn progress(&self, id: Uuid, runs: i64) -> Result<(), StoreError> {
        self.exec(
            "an export's progress",
            &self.progress,
            (Utc::now(), runs, id),
        )
        .await
        .map(|_| ())
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn finish(
        &self,
        id: Uuid,
        expires_at: DateTime<Utc>,
        runs: i64,
        files: i32,
        bytes: i64,
        object: &str,
        manifest_sha256: &str,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        self.exec(
            "finishing an export",
            &self.finish,
            (
                now,
                now,
                expires_at,
                runs,
                files,
                bytes,
                object,
                manifest_sha256,
                id,
            ),
        )
        .await
        .map(|_| ())
    }

    pub async fn fail(&self, id: Uuid, error: &str) -> Result<(), StoreError> {
        let now = Utc::now();
        self.exec("failing an export", &self.fail, (now, now, error, id))
            .await
            .map(|_| ())
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<ExportJob>, StoreError> {
        let op = "reading an export";
        let bad = |reason: String| StoreError::Result { op, reason };
        let row = self
            .exec(op, &self.get, (id,))
            .await?
            .into_rows_result()
            .map_err(|e| bad(e.to_string()))?
            .maybe_first_row::<Row>()
            .map_err(|e| bad(e.to_string()))?;
        Ok(row.map(|r| ExportJob {
            id: r.0,
            tenant: r.1,
            requested_by: r.2,
            created_at: r.3,
            updated_at: r.4,
            finished_at: r.5,
            expires_at: r.6,
            state: r.7,
            runs: r.8.unwrap_or(0),
            files: r.9.unwrap_or(0),
            bytes: r.10.unwrap_or(0),
            object: r.11,
            manifest_sha256: r.12,
            error: r.13,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: &str, updated_ago_s: i64, expires_in_s: Option<i64>) -> ExportJob {
        let now = Utc::now();
        ExportJob {
            id: Uuid::new_v4(),
            tenant: "acme".into(),
            requested_by: None,
            created_at: now,
            updated_at: now - chrono::Duration::seconds(updated_ago_s),
            finished_at: None,
            expires_at: expires_in_s.map(|s| now + chrono::Duration::seconds(s)),
            state: state.into(),
            runs: 0,
            files: 0,
            bytes: 0,
            object: None,
            manifest_sha256: None,
            error: None,
        }
    }

    #[test]
    fn a_job_nobody_refreshes_is_interrupted_and_an_old_archive_expired() {
        let now = Utc::now();
        assert_eq!(job("running", 5, None).state_at(now), "running");
        assert_eq!(job("running", 61, None).state_at(now), "interrupted");
        assert_eq!(job("succeeded", 90, Some(10)).state_at(now), "succeeded");
        assert_eq!(job("succeeded", 90, Some(-1)).state_at(now), "expired");
        assert_eq!(job("failed", 90, None).state_at(now), "failed");
    }
}
