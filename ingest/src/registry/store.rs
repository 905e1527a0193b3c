//! What ingest keeps in the CQL store: workflow versions, idempotency keys, API keys and
//! webhook secrets. Every statement is prepared once.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("preparing `{statement}`: {source}")]
    Prepare {
        statement: &'static str,
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

/// One stored workflow version.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVersion {
    pub tenant: String,
    pub workflow: String,
    pub version: i32,
    pub content_hash: String,
    pub definition: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// A row of the tenant's workflow list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowSummary {
    pub workflow: String,
    pub latest_version: i32,
    pub name: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// The outcome of claiming an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the key; it must `accept` or `release` it.
    Claimed,
    /// An earlier request holds it.
    Existing {
        workflow: String,
        run_id: Uuid,
        request_hash: String,
        accepted: bool,
        claimed_at: Option<DateTime<Utc>>,
    },
}

struct Statements {
    version_insert: PreparedStatement,
    version_get: PreparedStatement,
    version_latest: PreparedStatement,
    workflow_upsert: PreparedStatement,
    workflow_list: PreparedStatement,
    key_claim: PreparedStatement,
    key_reclaim: PreparedStatement,
    key_accept: PreparedStatement,
    key_release: PreparedStatement,
    api_key_get: PreparedStatement,
    api_key_put: PreparedStatement,
    api_key_index_put: PreparedStatement,
    api_key_list: PreparedStatement,
    hook_get: PreparedStatement,
    hook_put: PreparedStatement,
}

#[derive(Clone)]
pub struct RegistryStore {
    session: Arc<Session>,
    st: Arc<Statements>,
}

const VERSION_COLS: &str =
    "tenant, workflow, version, content_hash, definition, created_at, created_by";

type VersionRow = (String, String, i32, String, String, DateTime<Utc>, String);

fn version_from(row: VersionRow) -> StoredVersion {
    let (tenant, workflow, version, content_hash, definition, created_at, created_by) = row;
    StoredVersion {
        tenant,
        workflow,
        version,
        content_hash,
        definition,
        created_at,
        created_by,
    }
}

/// An LWT result: `[applied]` first, then, when not applied, the existing row's columns.
/// Columns are looked up by name because ScyllaDB and Cassandra need not order them alike.
struct LwtRow {
    names: Vec<String>,
    row: Row,
}

impl LwtRow {
    fn column(&self, name: &str) -> Option<&CqlValue> {
        let i = self.names.iter().position(|n| n == name)?;
        self.row.columns.get(i)?.as_ref()
    }

    fn text(&self, name: &str) -> Option<String> {
        match self.column(name)? {
            CqlValue::Text(s) | CqlValue::Ascii(s) => Some(s.clone()),
            _ => None,
        }
    }
}

fn lwt_row(
    op: &'static str,
    result: scylla::response::query_result::QueryResult,
) -> Result<LwtRow, StoreError> {
    let bad = |reason: String| StoreError::Result { op, reason };
    let rows = result.into_rows_result().map_err(|e| bad(e.to_string()))?;
    let names = rows
        .column_specs()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let row = rows.first_row::<Row>().map_err(|e| bad(e.to_string()))?;
    Ok(LwtRow { names, row })
}

fn applied(op: &'static str, row: &LwtRow) -> Result<bool, StoreError> {
    match row.column("[applied]") {
        Some(CqlValue::Boolean(b)) => Ok(*b),
        other => Err(StoreError::Result {
            op,
            reason: format!("no [applied] column: {other:?}"),
        }),
    }
}

impl RegistryStore {
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self, StoreError> {
        let ks = keyspace;
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
        let st = Statements {
            version_insert: prep(
                "version insert",
                format!("INSERT INTO {ks}.workflow_versions ({VERSION_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"),
            )
            .await?,
            version_get: prep(
                "version get",
                format!("SELECT {VERSION_COLS} FROM {ks}.workflow_versions WHERE tenant = ? AND workflow = ? AND version = ?"),
            )
            .await?,
            version_latest: prep(
                "version latest",
                format!("SELECT {VERSION_COLS} FROM {ks}.workflow_versions WHERE tenant = ? AND workflow = ? LIMIT 1"),
            )
            .await?,
            workflow_upsert: prep(
                "workflow upsert",
                format!("INSERT INTO {ks}.workflows (tenant, workflow, latest_version, name, updated_at) VALUES (?, ?, ?, ?, ?)"),
            )
            .await?,
            workflow_list: prep(
                "workflow list",
                format!("SELECT workflow, latest_version, name, updated_at FROM {ks}.workflows WHERE tenant = ?"),
            )
            .await?,
            key_claim: prep(
                "idempotency claim",
                format!("INSERT INTO {ks}.idempotency_keys (tenant, idempotency_key, workflow, run_id, request_hash, state, claimed_at) VALUES (?, ?, ?, ?, ?, 'pending', ?) IF NOT EXISTS"),
            )
            .await?,
            key_reclaim: prep(
                "idempotency reclaim",
                format!("UPDATE {ks}.idempotency_keys SET claimed_at = ? WHERE tenant = ? AND idempotency_key = ? IF state = 'pending' AND claimed_at = ?"),
            )
            .await?,
            key_accept: prep(
                "idempotency accept",
                format!("UPDATE {ks}.idempotency_keys SET state = 'accepted' WHERE tenant = ? AND idempotency_key = ? IF EXISTS"),
            )
            .await?,
            key_release: prep(
                "idempotency release",
                format!("DELETE FROM {ks}.idempotency_keys WHERE tenant = ? AND idempotency_key = ? IF state = 'pending'"),
            )
            .await?,
            api_key_get: prep(
                "api key get",
                format!("SELECT key_id, tenant, role, secret_sha256, label, created_at, revoked FROM {ks}.api_keys WHERE key_id = ?"),
            )
            .await?,
            api_key_put: prep(
                "api key put",
                format!("INSERT INTO {ks}.api_keys (key_id, tenant, role, secret_sha256, label, created_at, revoked) VALUES (?, ?, ?, ?, ?, ?, ?)"),
            )
            .await?,
            api_key_index_put: prep(
                "api key index put",
                format!("INSERT INTO {ks}.api_keys_by_tenant (tenant, key_id, role, label, created_at, revoked) VALUES (?, ?, ?, ?, ?, ?)"),
            )
            .await?,
            api_key_list: prep(
                "api key list",
                format!("SELECT key_id, role, label, created_at, revoked FROM {ks}.api_keys_by_tenant WHERE tenant = ?"),
            )
            .await?,
            hook_get: prep(
                "webhook secret get",
                format!("SELECT secret FROM {ks}.webhook_secrets WHERE tenant = ? AND hook = ?"),
            )
            .await?,
            hook_put: prep(
                "webhook secret put",
                format!("INSERT INTO {ks}.webhook_secrets (tenant, hook, secret, created_at) VALUES (?, ?, ?, ?)"),
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

    /// Stores a new version if its number is free. `false`: someone else took the number.
    pub async fn insert_version(
        &self,
        v: &StoredVersion,
        name: Option<&str>,
    ) -> Result<bool, StoreError> {
        let op = "storing a workflow version";
        let row = lwt_row(
            op,
            self.exec(
                op,
                &self.st.version_insert,
                (
                    &v.tenant,
                    &v.workflow,
                    v.version,
                    &v.content_hash,
                    &v.definition,
                    v.created_at,
                    &v.created_by,
                ),
            )
            .await?,
        )?;
        if !applied(op, &row)? {
            return Ok(false);
        }
        self.exec(
            "updating the workflow list",
            &self.st.workflow_upsert,
            (&v.tenant, &v.workflow, v.version, name, v.created_at),
        )
        .await?;
        Ok(true)
    }

    async fn one_version(
        &self,
        op: &'static str,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let bad = |reason: String| StoreError::Result { op, reason };
        let rows = self
            .exec(op, st, values)
            .await?
            .into_rows_result()
            .map_err(|e| bad(e.to_string()))?;
        rows.maybe_first_row::<VersionRow>()
            .map(|r| r.map(version_from))
            .map_err(|e| bad(e.to_string()))
    }

    pub async fn version(
        &self,
        tenant: &str,
        workflow: &str,
        version: i32,
    ) -> Result<Option<StoredVersion>, StoreError> {
        self.one_version(
            "reading a workflow version",
            &self.st.version_get,
            (tenant, workflow, version),
        )
        .await
    }

    pub async fn latest(
        &self,
        tenant: &str,
        workflow: &str,
    ) -> Result<Option<StoredVersion>, StoreError> {
        self.one_version(
            "reading the latest workflow version",
            &self.st.version_latest,
            (tenant, workflow),
        )
        .await
    }

    pub async fn list(&self, tenant: &str) -> Result<Vec<WorkflowSummary>, StoreError> {
        let op = "listing workflows";
        let bad = |reason: String| StoreError::Result { op, reason };
        let rows = self
            .exec(op, &self.st.workflow_list, (tenant,))
            .await?
            .into_rows_result()
            .map_err(|e| bad(e.to_string()))?;
        let mut out = Vec::new();
        for row in rows
            .rows::<(String, i32, Option<String>, Option<DateTime<Utc>>)>()
            .map_err(|e| bad(e.to_string()))?
        {
            let (workflow, latest_version, name, updated_at) =
                row.map_err(|e| bad(e.to_string()))?;
            out.push(WorkflowSummary {
                workflow,
                latest_version,
                name,
                updated_at,
            });
        }
        Ok(out)
    }

    /// Claims an idempotency key for a request. Linearisable (Paxos), so of two
    /// concurrent requests with one key exactly one gets `Claimed`.
    pub async fn claim_key(
        &self,
        tenant: &str,
        key: &str,
        workflow: &str,
        run_id: Uuid,
        request_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let op = "claiming an idempotency key";
        let row = lwt_row(
            op,
            self.exec(
                op,
                &self.st.key_claim,
                (tenant, key, workflow, run_id, request_hash, now),
            )
            .await?,
        )?;
        if applied(op, &row)? {
            return Ok(Claim::Claimed);
        }
        existing_claim(op, &row)
    }

    /// Takes over a claim left `pending` by a request that died, if it is still the one
    /// seen (`seen_claimed_at`).
    pub async fn reclaim_key(
        &self,
        tenant: &str,
        key: &str,
        seen_claimed_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let op = "reclaiming an idempotency key";
        let row = lwt_row(
            op,
            self.exec(
                op,
                &self.st.key_reclaim,
                (now, tenant, key, seen_claimed_at),
            )
            .await?,
        )?;
        applied(op, &row)
    }

    pub async fn accept_key(&self, tenant: &str, key: &str) -> Result<(), StoreError> {
        let op = "accepting an idempotency key";
        lwt_row(op, self.exec(op, &self.st.key_accept, (tenant, key)).await?)?;
        Ok(())
    }

    /// Frees a claim whose trigger was not written, so that a retry can try again.
    pub async fn release_key(&self, tenant: &str, key: &str) -> Result<(), StoreError> {
        let op = "releasing an idempotency key";
        lwt_row(
            op,
            self.exec(op, &self.st.key_release, (tenant, key)).await?,
        )?;
        Ok(())
    }

    /// A hook's stored secret, as stored (sealed; `registry::hooks` opens it).
    pub async fn webhook_secret(
        &self,
        tenant: &str,
        hook: &str,
    ) -> Result<Option<String>, StoreError> {
        let op = "reading a webhook secret";
        let bad = |reason: String| StoreError::Result { op, reason };
        self.exec(op, &self.st.hook_get, (tenant, hook))
            .await?
            .into_rows_result()
            .map_err(|e| bad(e.to_string()))?
            .maybe_first_row::<(String,)>()
            .map(|r| r.map(|(s,)| s))
            .map_err(|e| bad(e.to_string()))
    }

    /// Stores a hook's secret as given: `registry::hooks` gives it sealed.
    pub async fn put_webhook_secret(
        &self,
        tenant: &str,
        hook: &str,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.exec(
            "storing a webhook secret",
            &self.st.hook_put,
            (tenant, hook, secret, now),
        )
        .await?;
        Ok(())
    }

    /// Raw API key row: (key_id, tenant, role, secret_sha256, label, created_at, revoked).
    pub async fn api_key_row(&self, key_id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        let op = "reading an API key";
        let bad = |reason: String| StoreError::Result { op, reason };
        self.exec(op, &self.st.api_key_get, (key_id,))
            .await?
            .into_rows_result()
            .map_err(|e| bad(e.to_string()))?
            .maybe_first_row::<ApiKeyRow>()
            .map_err(|e| bad(e.to_string()))
    }

    /// Stores a key and its entry in the tenant's list.
    pub async fn put_api_key_row(&self, row: &ApiKeyRow) -> Result<(), StoreError> {
        let (key_id, tenant, role, hash, label, created_at, revoked) = row;
        self.exec(
            "storing an API key",
            &self.st.api_key_put,
            (key_id, tenant, role, hash, label, created_at, revoked),
        )
        .await?;
        self.exec(
            "listing an API key under its tenant",
            &self.st.api_key_index_put,
            (tenant, key_id, role, label, created_at, revoked),
        )
        .await?;
        Ok(())
    }

    /// A tenant's keys: (key_id, role, label, created_at, revoked).
    pub async fn api_keys_of(&self, tenant: &str) -> Result<Vec<ApiKeyListing>, StoreError> {
        let op = "listing API keys";
        let bad = |reason: String| StoreError::Result { op, reason };
        let rows = self
            .exec(op, &self.st.api_key_list, (tenant,))
            .await?
            .into_rows_result()
            .map_err(|e| bad(e.to_string()))?;
        rows.rows::<ApiKeyListing>()
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))
    }
}

pub type ApiKeyRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    DateTime<Utc>,
    bool,
);

/// One key in a tenant's list: (key_id, role, label, created_at, revoked).
pub type ApiKeyListing = (String, String, Option<String>, DateTime<Utc>, bool);

fn existing_claim(op: &'static str, row: &LwtRow) -> Result<Claim, StoreError> {
    let bad = |reason: &str| StoreError::Result {
        op,
        reason: reason.to_owned(),
    };
    let claimed_at = match row.column("claimed_at") {
        Some(CqlValue::Timestamp(ts)) => DateTime::from_timestamp_millis(ts.0),
        _ => None,
    };
    let run_id = match row.column("run_id") {
        Some(CqlValue::Uuid(u)) => *u,
        _ => return Err(bad("existing claim has no run_id")),
    };
    Ok(Claim::Existing {
        workflow: row
            .text("workflow")
            .ok_or_else(|| bad("existing claim has no workflow"))?,
        run_id,
        request_hash: row
            .text("request_hash")
            .ok_or_else(|| bad("existing claim has no request_hash"))?,
        accepted: row.text("state").as_deref() == Some("accepted"),
        claimed_at,
    })
}
