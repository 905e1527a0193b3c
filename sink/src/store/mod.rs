//! The Cassandra side of the sink: events into the run history tables, every statement
//! prepared once, sent with bounded concurrency, each with a TTL from the tenant's
//! retention class and a timestamp derived from the event (see `stamp`). Rows of one
//! partition go in one unlogged batch (see `group`).

mod dead_letters;
mod group;
mod index;
mod rows;
mod stamp;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use scylla::client::session::Session;
use scylla::errors::{BadQuery, DbError, ExecutionError, RequestAttemptError};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, MaybeUnset};
use tokio::task::JoinSet;

pub use dead_letters::{Letter, PLATFORM, letter_id, letter_writes};
pub use rows::{
    Table, Values, Write, audit, event_writes, run_finished, run_started, step, utc_day,
};
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

    fn prepared(&self, table: Table) -> &PreparedStatement {
        self.statements
            .get(&table)
            .unwrap_or_else(|| unreachable!("every table is prepared in Store::new"))
    }

    async fn execute_one(&self, write: &Write, metrics: &Metrics) -> Result<(), StoreError> {
        let clock = Instant::now();
        let result = self
            .session
            .execute_unpaged(self.prepared(write.table), &write.values)
            .await;
        finish(write.table, 1, clock, result, metrics)
    }

    /// `rows` (two or more, one table and partition) as one unlogged batch. Each row
    /// keeps its own TTL and timestamp; the batch sets none.
    async fn execute_batch(
        &self,
        writes: &[Write],
        rows: &[usize],
        metrics: &Metrics,
    ) -> Result<(), StoreError> {
        let Some(&first) = rows.first() else {
            return Ok(());
        };
        let table = writes[first].table;
        let mut batch = Batch::new(BatchType::Unlogged);
        let mut values: Vec<&Values> = Vec::with_capacity(rows.len());
        for &i in rows {
            batch.append_statement(self.prepared(writes[i].table).clone());
            values.push(&writes[i].values);
        }
        // Same cells, same timestamps: a retried batch changes nothing.
        batch.set_is_idempotent(true);
        let clock = Instant::now();
        let result = self.session.batch(&batch, values).await;
        finish(table, rows.len(), clock, result, metrics)
    }

    /// One request: a single row, or a batch of one partition's rows. A batch the store
    /// refuses does not say which row it refused, so its rows then go one by one and
    /// only the refused ones are reported.
    async fn execute_unit(&self, writes: &[Write], rows: Vec<usize>, metrics: &Metrics) -> Failed {
        let mut failed = Failed::default();
        let single = |failed: &mut Failed, i: usize, r: Result<(), StoreError>| match r {
            Ok(()) => {}
            Err(e) if e.refusal().is_some() => failed.refused.push((i, e)),
            Err(e) => {
                failed.retry.push(i);
                failed.error.get_or_insert(e);
            }
        };
        if let [i] = rows[..] {
            let r = self.execute_one(&writes[i], metrics).await;
            single(&mut failed, i, r);
            return failed;
        }
        match self.execute_batch(writes, &rows, metrics).await {
            Ok(()) => {}
            Err(e) if e.refusal().is_some() => {
                tracing::debug!(error = %e, rows = rows.len(), "batch refused; writing its rows one by one");
                for i in rows {
                    let r = self.execute_one(&writes[i], metrics).await;
                    single(&mut failed, i, r);
                }
            }
            Err(e) => {
                failed.retry = rows;
                failed.error = Some(e);
            }
        }
        failed
    }

    /// The requests `writes` go in: rows grouped by table and partition key.
    fn units(&self, writes: &[Write]) -> Vec<Vec<usize>> {
        let sizes: Vec<usize> = writes.iter().map(|w| approx_bytes(&w.values)).collect();
        // A row over the batch bound goes alone whatever its key, and computing the key
        // serialises the row's values: skip that for the rows it would not change.
        let keys: Vec<_> = writes
            .iter()
            .zip(&sizes)
            .map(|(w, &size)| {
                if size > group::MAX_BYTES {
                    return None;
                }
                self.prepared(w.table)
                    .compute_partition_key(&w.values)
                    .ok()
                    .map(|key| (w.table, key))
            })
            .collect();
        group::units(&keys, &sizes, group::MAX_ROWS, group::MAX_BYTES)
    }

    /// Executes `writes` with at most `max_in_flight` requests at once (a request is a
    /// row or one partition's batch). Their order does not matter: each cell's
    /// timestamp comes from its event, so the store keeps the same winner whichever
    /// lands first.
    pub async fn execute(
        &self,
        writes: Arc<Vec<Write>>,
        max_in_flight: usize,
        metrics: &Arc<Metrics>,
    ) -> Result<(), Failed> {
        let mut running = JoinSet::new();
        let mut failed = Failed::default();
        let mut panicked = false;
        let mut note = |r: Result<Failed, tokio::task::JoinError>, failed: &mut Failed| match r {
            Ok(unit) => {
                failed.retry.extend(unit.retry);
                failed.refused.extend(unit.refused);
                if let Some(e) = unit.error {
                    failed.error.get_or_insert(e);
                }
            }
            Err(e) => {
                panicked = true;
                failed.error.get_or_insert(StoreError::Join(e));
            }
        };
        for rows in self.units(&writes) {
            while running.len() >= max_in_flight.max(1) {
                if let Some(r) = running.join_next().await {
                    note(r, &mut failed);
                }
            }
            let (store, writes, metrics) = (self.clone(), Arc::clone(&writes), Arc::clone(metrics));
            running.spawn(async move { store.execute_unit(&writes, rows, &metrics).await });
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

/// Counts one request of `rows` rows to `table` in the metrics, and names the table in
/// its error.
fn finish<R>(
    table: Table,
    rows: usize,
    clock: Instant,
    result: Result<R, ExecutionError>,
    metrics: &Metrics,
) -> Result<(), StoreError> {
    let name = table.name();
    metrics
        .write_seconds
        .with_label_values(&[name])
        .observe(clock.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "ok" } else { "failed" };
    metrics
        .writes
        .with_label_values(&[name, outcome])
        .inc_by(rows as u64);
    result.map(|_| ()).map_err(|source| StoreError::Execute {
        table: name,
        source: Box::new(source),
    })
}

/// Roughly the bytes of a row's bound values: what a batch's size bound needs.
fn approx_bytes(values: &Values) -> usize {
    values
        .iter()
        .map(|v| match v {
            MaybeUnset::Set(CqlValue::Text(s) | CqlValue::Ascii(s)) => s.len() + 4,
            MaybeUnset::Set(CqlValue::Blob(b)) => b.len() + 4,
            _ => 16,
        })
        .sum()
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
