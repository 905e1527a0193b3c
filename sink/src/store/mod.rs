//! The Cassandra side of the sink: events into the run history tables, every statement
//! prepared once, sent with bounded concurrency, each with a TTL from the tenant's
//! retention class and a timestamp derived from the event (see `stamp`).

mod rows;
mod stamp;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use tokio::task::JoinSet;

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

/// The writes that did not succeed, to be retried, and the first error.
#[derive(Debug)]
pub struct Failed {
    pub writes: Vec<Write>,
    pub error: StoreError,
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
        writes: Vec<Write>,
        max_in_flight: usize,
        metrics: &Arc<Metrics>,
    ) -> Result<(), Failed> {
        let writes = Arc::new(writes);
        let mut running = JoinSet::new();
        let mut failed = Vec::new();
        let mut first_error = None;
        let mut panicked = false;
        let mut note = |r: Result<(usize, Result<(), StoreError>), tokio::task::JoinError>,
                        failed: &mut Vec<usize>| match r {
            Ok((_, Ok(()))) => {}
            Ok((i, Err(e))) => {
                failed.push(i);
                first_error.get_or_insert(e);
            }
            Err(e) => {
                panicked = true;
                first_error.get_or_insert(StoreError::Join(e));
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
        match first_error {
            None => Ok(()),
            Some(error) => {
                // A write whose task panicked is not in `failed`: send everything again
                // rather than lose it (writes are idempotent).
                let again = if panicked {
                    writes.to_vec()
                } else {
                    failed.iter().map(|&i| writes[i].clone()).collect()
                };
                Err(Failed {
                    writes: again,
                    error,
                })
            }
        }
    }
}
