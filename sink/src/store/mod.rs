//! The Cassandra side of the sink: events into the run history tables, every statement
//! prepared once, sent with bounded concurrency, each with a TTL from the tenant's
//! retention class and a timestamp derived from the event (see `stamp`).

mod dead_letters;
mod index;
mod rows;
mod stamp;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use scylla::client::session::Session;
use scylla::errors::{BadQuery, DbError, ExecutionError, RequestAttemptError};
use scylla::statement::prepared::PreparedStatement;
use tokio::task::JoinSet;

pub use dead_letters::{Letter, PLATFORM, letter_id, letter_writes};
pub use rows::{Table, Write, audit, event_writes, run_finished, run_started, step, utc_day};
pub use stamp::{run_rank, step_rank, write_timestamp};

use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("preparing the {table} statement: {source}")]
    Prepare {
        table: &'static str,
        #[source]
        source: Box<scylla::errors::PrepareError>,
    },
    #[error("writing {table}: {source}")]
    Execute {
        table: &'static str,
        #[source]
        source: Box<scylla::errors::ExecutionError>,
    },
    #[error("a write task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// How the store refused a write for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over a limit of the store's (mutation size, frame size, key length).
    TooLarge,
    /// A value the schema or the server refuses.
    Invalid,
}

impl StoreError {
    /// `Some` when sending the same write again must meet the same answer: the store
    /// refused what this record holds. Only errors that depend on the record's values
    /// count; timeouts, unavailable replicas, lost connections, overload, missing rights
    /// or tables (an operator's fix, not the record's) are transient and retried.
    pub fn refusal(&self) -> Option<Refusal> {
        let StoreError::Execute { source, .. } = self else {
            return None;
        };
        let attempt = match source.as_ref() {
            // The driver refused to send it (a value it cannot serialise, a key too long).
            ExecutionError::BadQuery(q) => {
                return Some(match q {
                    BadQuery::ValuesTooLongForKey(..) => Refusal::TooLarge,
                    _ => Refusal::Invalid,
                });
            }
            ExecutionError::LastAttemptError(a) => a,
            _ => return None,
        };
        match attempt {
            RequestAttemptError::SerializationError(_)
            | RequestAttemptError::CqlRequestSerialization(_) => Some(Refusal::Invalid),
            RequestAttemptError::DbError(db, reason) => refusal_of(db, reason),
            _ => None,
        }
    }
}

fn refusal_of(db: &DbError, reason: &str) -> Option<Refusal> {
    let reason = reason.to_ascii_lowercase();
    let too_large = [
        "too large",
        "too big",
        "too long",
        "longer than",
        "oversized",
    ]
    .iter()
    .any(|s| reason.contains(s));
    match db {
        // The server says which request it cannot take ("Request is too big", an
        // oversized mutation, a key too long, a TTL too large).
        DbError::Invalid
        | DbError::ProtocolError
        | DbError::ServerError
        | DbError::WriteFailure { .. }
            if too_large =>
        {
            Some(Refusal::TooLarge)
        }
        // Invalid names the statement's problem; a missing table or keyspace is the
        // schema's, and would refuse every record alike.
        DbError::Invalid
            if !(reason.contains("unconfigured table")
                || reason.contains("does not exist")
                || reason.contains("undefined column")) =>
        {
            Some(Refusal::Invalid)
        }
        _ => None,
    }
}

/// What a call to [`Store::execute`] could not write. Indices are into the writes given.
#[derive(Debug, Default)]
pub struct Failed {
    /// Writes to send again: a transient error, or lost with a panicked task.
    pub retry: Vec<usize>,
    /// Writes the store refused for good, and why.
    pub refused: Vec<(usize, StoreError)>,
    /// The first transient error, to say why `retry` is not empty.
    pub error: Option<StoreError>,
}

#[derive(Clone)]
pub struct Store {
    session: Arc<Session>,
    statements: Arc<HashMap<Table, PreparedStatement>>,
}

impl Store {
    /// Prepares every statement against `keyspace` (its schema must be applied).
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self, StoreError> {
        let mut statements = HashMap::new();
        for table in Table::ALL {
            let mut prepared = session
                .prepare(table.cql(keyspace))
                .await
                .map_err(|source| StoreError::Prepare {
                    table: table.name(),
                    source: Box::new(source),
                })?;
            // Same cells, same timestamps: a retried write changes nothing.
            prepared.set_is_idempotent(true);
            statements.insert(table, prepared);
        }
        Ok(Self {
            session,
            statements: Arc::new(statements),
        })
    }

    async fn execute_one(&self, write: &Write, metrics: &Metrics) -> Result<(), StoreError> {
        let table = write.table.name();
        let prepared = self
            .statements
            .get(&write.table)
            .unwrap_or_else(|| unreachable!("every table is prepared in Store::new"));
        let clock = Instant::now();
        let result = self.session.execute_unpaged(prepared, &write.values).await;
        metrics
            .write_seconds
            .with_label_values(&[table])
            .observe(clock.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        metrics.writes.with_label_values(&[table, outcome]).inc();
        result.map(|_| ()).map_err(|source| StoreError::Execute {
            table,
            source: Box::new(source),
        })
    }

    /// Executes `writes` with at most `max_in_flight` at once. Their order does not
    /// matter: each cell's timestamp comes from its event, so the store keeps the same
    /// winner whichever lands first.
    pub async fn execute(
        &self,
        writes: Arc<Vec<Write>>,
        max_in_flight: usize,
        metrics: &Arc<Metrics>,
    ) -> Result<(), Failed> {
        let mut running = JoinSet::new();
        let mut failed = Failed::default();
        let mut panicked = false;
        let mut note = |r: Result<(usize, Result<(), StoreError>), tokio::task::JoinError>,
                        failed: &mut Failed| match r {
            Ok((_, Ok(()))) => {}
            Ok((i, Err(e))) if e.refusal().is_some() => failed.refused.push((i, e)),
            Ok((i, Err(e))) => {
                failed.retry.push(i);
                failed.error.get_or_insert(e);
            }
            Err(e) => {
                panicked = true;
                failed.error.get_or_insert(StoreError::Join(e));
            }
        };
        for i in 0..writes.len() {
            while running.len() >= max_in_flight.max(1) {
                if let Some(r) = running.join_next().await {
                    note(r, &mut failed);
                }
            }
            let (store, writes, metrics) = (self.clone(), Arc::clone(&writes), Arc::clone(metrics));
            running.spawn(async move { (i, store.execute_one(&writes[i], &metrics).await) });
        }
        while let Some(r) = running.join_next().await {
            note(r, &mut failed);
        }
        if panicked {
            // A write whose task panicked is in no list: send all but the refused ones
            // again rather than lose it (writes are idempotent).
            failed.retry = (0..writes.len())
                .filter(|i| !failed.refused.iter().any(|(r, _)| r == i))
                .collect();
        }
        if failed.retry.is_empty() && failed.refused.is_empty() {
            return Ok(());
        }
        failed.retry.sort_unstable();
        failed.refused.sort_unstable_by_key(|(i, _)| *i);
        Err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execute(db: DbError, reason: &str) -> StoreError {
        StoreError::Execute {
            table: "runs",
            source: Box::new(ExecutionError::LastAttemptError(
                RequestAttemptError::DbError(db, reason.into()),
            )),
        }
    }

    #[test]
    fn only_errors_of_the_record_itself_are_refusals() {
        let refused = [
            (
                DbError::Invalid,
                "Key length of 70000 is longer than maximum of 65535",
                Refusal::TooLarge,
            ),
            (
                DbError::ProtocolError,
                "Request is too big: length 17825803 exceeds maximum allowed length 16777216",
                Refusal::TooLarge,
            ),
            (
                DbError::ServerError,
                "Mutation of 17825803 bytes is too large for the maximum size of 16777216",
                Refusal::TooLarge,
            ),
            (
                DbError::Invalid,
                "ttl is too large. requested (999999999) maximum (630720000)",
                Refusal::TooLarge,
            ),
            (DbError::Invalid, "Invalid UTF-8 bytes", Refusal::Invalid),
        ];
        for (db, reason, want) in refused {
            assert_eq!(execute(db, reason).refusal(), Some(want), "{reason}");
        }
        let transient = [
            (DbError::Overloaded, "overloaded"),
            (DbError::IsBootstrapping, "bootstrapping"),
            (DbError::ServerError, "java.lang.NullPointerException"),
            (DbError::Unauthorized, "no MODIFY permission"),
            (DbError::Invalid, "unconfigured table runs"),
            (DbError::Invalid, "Keyspace ks does not exist"),
            (
                DbError::RateLimitReached {
                    op_type: scylla::errors::OperationType::Write,
                    rejected_by_coordinator: true,
                },
                "slow down",
            ),
        ];
        for (db, reason) in transient {
            assert_eq!(execute(db, reason).refusal(), None, "{reason}");
        }
        let timeout = StoreError::Execute {
            table: "runs",
            source: Box::new(ExecutionError::RequestTimeout(
                std::time::Duration::from_secs(1),
            )),
        };
        assert_eq!(timeout.refusal(), None);
        let too_long_key = StoreError::Execute {
            table: "runs",
            source: Box::new(ExecutionError::BadQuery(BadQuery::ValuesTooLongForKey(
                70_000, 65_535,
            ))),
        };
        assert_eq!(too_long_key.refusal(), Some(Refusal::TooLarge));
    }
}
