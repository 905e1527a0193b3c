//! Reads of the run history the sink writes to Cassandra: a tenant's runs by day, one
//! run with its steps, the audit trail and the dead letters. Nothing here writes.
//!
//! Lists walk one UTC day partition at a time, newest first, so no query ever scans
//! across partitions. A run list filtered by workflow, status or both reads the table
//! keyed by that filter (`runs_by_workflow_day`, `runs_by_status_day`,
//! `runs_by_workflow_status_day`), so it reads only matching rows; nothing uses
//! `ALLOW FILTERING`. Every list request stops at a [`Budget`] of rows and partitions
//! and then answers with what it found and a cursor to continue from.

mod audit;
mod cursor;
mod dead_letters;
mod erase;
mod export;
mod runs;
mod walk;
mod window;

use std::sync::Arc;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

pub use audit::AuditEntry;
pub use cursor::{BadToken, Position};
pub use dead_letters::{Letter, LetterFilter, LetterState, LetterSummary, PLATFORM};
pub use erase::{ErasedRows, ErasedRunRows};
pub use export::DayReader;
pub use runs::{Failure, MAX_STEPS, RunDetail, RunFilter, RunSummary, StepDetail};
pub use walk::{Budget, Page, Scan};
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
    runs_of_workflow: PreparedStatement,
    runs_of_status: PreparedStatement,
    runs_of_workflow_status: PreparedStatement,
    day_row: PreparedStatement,
    run: PreparedStatement,
    steps: PreparedStatement,
    audit_of_day: PreparedStatement,
    dead_letters_of_day: PreparedStatement,
    dead_letter_state: PreparedStatement,
    dead_letter: PreparedStatement,
}

/// The history tables of one keyspace, statements prepared once.
#[derive(Clone)]
pub struct HistoryStore {
    session: Arc<Session>,
    st: Arc<Statements>,
    budget: Budget,
    /// Filters applied here over `runs_by_day` instead of read from the index tables.
    scanning: bool,
    /// Opens the sealed payloads of the rows read.
    vault: Arc<aiq_vault::Vault>,
    keyspace: Arc<str>,
}

/// Rows per page fetched from Cassandra at most; a list request may read several.
const FETCH_PAGE: usize = 256;

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
                st.set_page_size(FETCH_PAGE as i32);
                Ok::<_, HistoryError>(st)
            }
        };
        let st = Statements {
            runs_of_day: prepare("listing runs", runs::list_cql(ks)).await?,
            runs_of_workflow: prepare("listing runs", runs::list_workflow_cql(ks)).await?,
            runs_of_status: prepare("listing runs", runs::list_status_cql(ks)).await?,
            runs_of_workflow_status: prepare("listing runs", runs::list_both_cql(ks)).await?,
            day_row: prepare("listing runs", runs::day_row_cql(ks)).await?,
            run: prepare("reading a run", runs::run_cql(ks)).await?,
            steps: prepare("reading a run's steps", runs::steps_cql(ks)).await?,
            audit_of_day: prepare("listing audit events", audit::list_cql(ks)).await?,
            dead_letters_of_day: prepare("listing dead letters", dead_letters::list_cql(ks))
                .await?,
            dead_letter_state: prepare("listing dead letters", dead_letters::state_cql(ks)).await?,
            dead_letter: prepare("reading a dead letter", dead_letters::letter_cql(ks)).await?,
        };
        Ok(Self {
            session,
            st: Arc::new(st),
            budget: Budget::default(),
            scanning: false,
            vault: aiq_vault::Vault::off(),
            keyspace: keyspace.into(),
        })
    }

    /// The same store opening sealed payloads with `vault`.
    pub fn with_vault(mut self, vault: Arc<aiq_vault::Vault>) -> Self {
        self.vault = vault;
        self
    }

    /// The same store with another per-request budget.
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// The same store listing every filter from `runs_by_day`, filtering rows here: the
    /// plan before the index tables existed, kept to measure against and for history
    /// written before them. The budget still applies.
    pub fn scanning(mut self) -> Self {
        self.scanning = true;
        self
    }
}
