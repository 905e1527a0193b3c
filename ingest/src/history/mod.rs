//! Reads of the run history the sink writes to Cassandra: a tenant's runs by day, one
//! run with its steps, and the audit trail. Nothing here writes.
//!
//! Lists walk one UTC day partition at a time, newest first, so no query ever scans
//! across partitions; filters that are not part of a key are applied here rather than
//! with `ALLOW FILTERING`.

mod audit;
mod cursor;
mod runs;
mod walk;
mod window;

use std::sync::Arc;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

pub use audit::AuditEntry;
pub use cursor::{BadToken, Position};
pub use runs::{Failure, MAX_STEPS, RunDetail, RunFilter, RunSummary, StepDetail};
pub use walk::Page;
pub use window::{MAX_SPAN_DAYS, Window, WindowError};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
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

struct Statements {
    runs_of_day: PreparedStatement,
    run: PreparedStatement,
    steps: PreparedStatement,
    audit_of_day: PreparedStatement,
}

/// The history tables of one keyspace, statements prepared once.
#[derive(Clone)]
pub struct HistoryStore {
    session: Arc<Session>,
    st: Arc<Statements>,
}

/// Rows per page fetched from Cassandra; a list request may read several.
const FETCH_PAGE: i32 = 256;

impl HistoryStore {
    /// Prepares every statement against `keyspace` (its schema must be applied).
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self, HistoryError> {
        let ks = keyspace;
        let prepare = |op: &'static str, cql: String| {
            let session = Arc::clone(&session);
            async move {
                let mut st =
                    session
                        .prepare(cql)
                        .await
                        .map_err(|source| HistoryError::Prepare {
                            op,
                            source: Box::new(source),
                        })?;
                st.set_page_size(FETCH_PAGE);
                Ok::<_, HistoryError>(st)
            }
        };
        let st = Statements {
            runs_of_day: prepare("listing runs", runs::list_cql(ks)).await?,
            run: prepare("reading a run", runs::run_cql(ks)).await?,
            steps: prepare("reading a run's steps", runs::steps_cql(ks)).await?,
            audit_of_day: prepare("listing audit events", audit::list_cql(ks)).await?,
        };
        Ok(Self {
            session,
            st: Arc::new(st),
        })
    }
}
