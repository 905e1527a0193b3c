//! A tenant's rows deleted from every history and registry table (erasure). The audit
//! table is kept: it holds no payloads, and the erasure's own certificate is there.
//!
//! Partitions keyed by day are found by reading `runs_by_day` and `dead_letters_by_day`
//! day by day from `from` to `to`; the index tables are deleted for the days that held
//! runs, by the workflows seen that day and every status.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use futures::{StreamExt, TryStreamExt};
use scylla::deserialize::row::DeserializeRow;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use serde::Serialize;
use uuid::Uuid;

use super::{HistoryError, HistoryStore};

/// Deletes in flight at once.
const PARALLEL: usize = 32;

/// What an erasure deleted from the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErasedRows {
    /// Runs whose row and steps were deleted.
    pub runs: usize,
    /// Days that held runs (their index partitions deleted).
    pub days: usize,
    pub dead_letters: usize,
    pub workflows: usize,
    pub api_keys: usize,
    /// Partitions deleted in all, index tables included.
    pub partitions: usize,
}

/// What erasing one run's payloads cleared in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErasedRunRows {
    /// The run's row: input, output and error message cleared.
    pub run: bool,
    /// Step dispatches whose error message was cleared.
    pub steps: usize,
}

/// One day's runs (id, workflow) and dead letters (id) of the tenant.
type DayRows = (NaiveDate, Vec<(Uuid, Option<String>)>, Vec<(Uuid,)>);

const STATUSES: [&str; 5] = ["running", "succeeded", "failed", "cancelled", "timed_out"];

impl HistoryStore {
    /// Clears one run's payloads: the run row's input, output and error message, and
    /// every step dispatch's error message, and marks the row erased at `at`.
    ///
    /// The writes take the server's clock, later than any of the sink's (which are
    /// stamped with the events' own times), so a replay of the run's events by the sink
    /// cannot bring the values back. The mark lives as long as the row (its TTL).
    pub async fn erase_run_payloads(
        &self,
        tenant: &str,
        run_id: Uuid,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<ErasedRunRows, HistoryError> {
        let ks = &*self.keyspace;
        let op = "erasing a run's payloads";
        let st = self
            .prepared(
                op,
                format!("SELECT TTL(status) FROM {ks}.runs WHERE tenant = ? AND run_id = ?"),
            )
            .await?;
        let ttl: Vec<(Option<i32>,)> = self.all_rows(op, &st, (tenant, run_id)).await?;
        let Some((ttl,)) = ttl.into_iter().next() else {
            return Ok(ErasedRunRows::default());
        };
        let st = self
            .prepared(
                op,
                format!(
                    "UPDATE {ks}.runs USING TTL ? SET input = null, output = null, \
                     error = null, payloads_erased_at = ? WHERE tenant = ? AND run_id = ?"
                ),
            )
            .await?;
        self.run_all(op, &st, vec![(ttl.unwrap_or(0), at, tenant, run_id)])
            .await?;
        let st = self
            .prepared(
                op,
                format!(
                    "SELECT step, iteration, attempt FROM {ks}.steps \
                     WHERE tenant = ? AND run_id = ?"
                ),
            )
            .await?;
        let keys: Vec<(String, i64, i32)> = self.all_rows(op, &st, (tenant, run_id)).await?;
        let st = self
            .prepared(
                op,
                format!(
                    "UPDATE {ks}.steps SET error = null WHERE tenant = ? AND run_id = ? \
                     AND step = ? AND iteration = ? AND attempt = ?"
                ),
            )
            .await?;
        let steps = self
            .run_all(
                op,
                &st,
                keys.into_iter()
                    .map(|(step, iteration, attempt)| (tenant, run_id, step, iteration, attempt))
                    .collect(),
            )
            .await?;
        Ok(ErasedRunRows { run: true, steps })
    }

    pub(super) async fn prepared(
        &self,
        op: &'static str,
        cql: String,
    ) -> Result<PreparedStatement, HistoryError> {
        self.session
            .prepare(cql)
            .await
            .map_err(|source| HistoryError::Prepare {
                op,
                source: Box::new(source),
            })
    }

    /// Every row of a query, page by page.
    pub(super) async fn all_rows<T, V>(
        &self,
        op: &'static str,
        st: &PreparedStatement,
        values: V,
    ) -> Result<Vec<T>, HistoryError>
    where
        T: for<'f, 'm> DeserializeRow<'f, 'm>,
        V: SerializeRow + Clone,
    {
        let bad = |reason: String| HistoryError::Result { op, reason };
        let mut out = Vec::new();
        let mut paging = PagingState::start();
        loop {
            let (result, more) = self
                .session
                .execute_single_page(st, values.clone(), paging)
                .await
                .map_err(|source| HistoryError::Execute {
                    op,
                    source: Box::new(source),
                })?;
            let rows = result.into_rows_result().map_err(|e| bad(e.to_string()))?;
            for row in rows.rows::<T>().map_err(|e| bad(e.to_string()))? {
                out.push(row.map_err(|e| bad(e.to_string()))?);
            }
            match more {
                PagingStateResponse::HasMorePages { state } => paging = state,
                PagingStateResponse::NoMorePages => return Ok(out),
            }
        }
    }

    /// Runs every statement with its values, `PARALLEL` at a time.
    async fn run_all<V: SerializeRow + Send + Sync>(
        &self,
        op: &'static str,
        st: &PreparedStatement,
        values: Vec<V>,
    ) -> Result<usize, HistoryError> {
        let n = values.len();
        futures::stream::iter(values)
            .map(|v| async move {
                self.session
                    .execute_unpaged(st, v)
                    .await
                    .map(|_| ())
                    .map_err(|source| HistoryError::Execute {
                        op,
                        source: Box::new(source),
                    })
            })
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(n)
    }

    /// Deletes the tenant's runs, steps, run indexes and dead letters of the days
    /// `from..=to`, and its workflows, webhook secrets, API keys and replays.
    pub async fn erase_tenant(
        &self,
        tenant: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<ErasedRows, HistoryError> {
        let ks = &*self.keyspace;
        let op = "erasing a tenant's history";
        let mut out = ErasedRows::default();
        let day_runs = self
            .prepared(
                op,
                format!(
                    "SELECT run_id, workflow FROM {ks}.runs_by_day WHERE tenant = ? AND day = ?"
                ),
            )
            .await?;
        let day_letters = self
            .prepared(
                op,
                format!("SELECT id FROM {ks}.dead_letters_by_day WHERE tenant = ? AND day = ?"),
            )
            .await?;
        let days: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
        let per_day: Vec<DayRows> = futures::stream::iter(days)
            .map(|day| {
                let (day_runs, day_letters) = (&day_runs, &day_letters);
                async move {
                    let runs = self.all_rows(op, day_runs, (tenant, day)).await?;
                    let letters = self.all_rows(op, day_letters, (tenant, day)).await?;
                    Ok::<_, HistoryError>((day, runs, letters))
                }
            })
            .buffer_unordered(PARALLEL)
            .try_collect()
            .await?;

        let mut runs = Vec::new();
        let mut letters = Vec::new();
        let (mut by_day, mut by_wf, mut by_status, mut by_wf_status) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut all_workflows = BTreeSet::new();
        for (day, day_runs, day_letters) in per_day {
            letters.extend(day_letters);
            if day_runs.is_empty() {
                continue;
            }
            out.days += 1;
            by_day.push((tenant, day));
            let workflows: BTreeSet<String> =
                day_runs.iter().filter_map(|(_, w)| w.clone()).collect();
            for status in STATUSES {
                by_status.push((tenant, status, day));
                for w in &workflows {
                    by_wf_status.push((tenant, w.clone(), status, day));
                }
            }
            for w in &workflows {
                by_wf.push((tenant, w.clone(), day));
            }
            all_workflows.extend(workflows);
            runs.extend(day_runs.into_iter().map(|(id, _)| (tenant, id)));
        }
        let delete = |table: &str, key: &str| format!("DELETE FROM {ks}.{table} WHERE {key}");
        let st = self
            .prepared(op, delete("runs", "tenant = ? AND run_id = ?"))
            .await?;
        out.runs = self.run_all(op, &st, runs.clone()).await?;
        let st = self
            .prepared(op, delete("steps", "tenant = ? AND run_id = ?"))
            .await?;
        out.partitions += self.run_all(op, &st, runs).await? + out.runs;
        let st = self
            .prepared(op, delete("runs_by_day", "tenant = ? AND day = ?"))
            .await?;
        out.partitions += self.run_all(op, &st, by_day).await?;
        let st = self
            .prepared(
                op,
                delete(
                    "runs_by_workflow_day",
                    "tenant = ? AND workflow = ? AND day = ?",
                ),
            )
            .await?;
        out.partitions += self.run_all(op, &st, by_wf).await?;
        let st = self
            .prepared(
                op,
                delete(
                    "runs_by_status_day",
                    "tenant = ? AND status = ? AND day = ?",
                ),
            )
            .await?;
        out.partitions += self.run_all(op, &st, by_status).await?;
        let st = self
            .prepared(
                op,
                delete(
                    "runs_by_workflow_status_day",
                    "tenant = ? AND workflow = ? AND status = ? AND day = ?",
                ),
            )
            .await?;
        out.partitions += self.run_all(op, &st, by_wf_status).await?;

        let st = self.prepared(op, delete("dead_letters", "id = ?")).await?;
        out.dead_letters = self.run_all(op, &st, letters).await?;
        let st = self
            .prepared(op, delete("dead_letters_by_day", "tenant = ? AND day = ?"))
            .await?;
        let letter_days: Vec<(&str, NaiveDate)> = from
            .iter_days()
            .take_while(|d| *d <= to)
            .map(|d| (tenant, d))
            .collect();
        out.partitions += self.run_all(op, &st, letter_days).await?;

        // The registry: workflows and their versions, webhook secrets, API keys, replays.
        let st = self
            .prepared(
                op,
                format!("SELECT workflow FROM {ks}.workflows WHERE tenant = ?"),
            )
            .await?;
        let registered: Vec<(String,)> = self.all_rows(op, &st, (tenant,)).await?;
        all_workflows.extend(registered.into_iter().map(|(w,)| w));
        out.workflows = all_workflows.len();
        let st = self
            .prepared(
                op,
                delete("workflow_versions", "tenant = ? AND workflow = ?"),
            )
            .await?;
        let versions: Vec<(&str, String)> =
            all_workflows.into_iter().map(|w| (tenant, w)).collect();
        out.partitions += self.run_all(op, &st, versions).await?;
        let st = self
            .prepared(
                op,
                format!("SELECT key_id FROM {ks}.api_keys_by_tenant WHERE tenant = ?"),
            )
            .await?;
        let keys: Vec<(String,)> = self.all_rows(op, &st, (tenant,)).await?;
        let st = self.prepared(op, delete("api_keys", "key_id = ?")).await?;
        out.api_keys = self.run_all(op, &st, keys).await?;
        for table in [
            "workflows",
            "webhook_secrets",
            "api_keys_by_tenant",
            "replays",
        ] {
            let st = self.prepared(op, delete(table, "tenant = ?")).await?;
            out.partitions += self.run_all(op, &st, vec![(tenant,)]).await?;
        }
        Ok(out)
    }
}
