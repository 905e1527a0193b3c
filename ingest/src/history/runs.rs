//! A tenant's runs: the list from `runs_by_day` or, filtered, from the table keyed by
//! the filter; one run from `runs` with its `steps`.
//!
//! The status tables hold keys only, and a run's status changes: each key found there is
//! checked against the run's row of `runs_by_day`, which gives the listed columns, and a
//! key whose status there differs is skipped (the sink deletes a run's key under
//! `running` when it ends, so stale keys are rare; this makes them harmless). For a
//! moment after a run ends, the two tables may disagree, and the run is listed under
//! neither status until both writes have landed.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use scylla::client::session::Session;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::prepared::PreparedStatement;
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinSet;
use utoipa::ToSchema;
use uuid::Uuid;

use super::walk::{Page, Positioned, Resolved, Walk};
use super::{HistoryError, HistoryStore, Position, Window};

const SUMMARY: &str =
    "started_at, run_id, workflow, version, status, trigger_source, finished_at, duration_ms";
const SINCE: &str = "day = ? AND started_at >= ? AND started_at <= ?";

pub(super) fn list_cql(ks: &str) -> String {
    format!("SELECT {SUMMARY} FROM {ks}.runs_by_day WHERE tenant = ? AND {SINCE}")
}

pub(super) fn list_workflow_cql(ks: &str) -> String {
    format!(
        "SELECT {SUMMARY} FROM {ks}.runs_by_workflow_day WHERE tenant = ? AND workflow = ? \
         AND {SINCE}"
    )
}

pub(super) fn list_status_cql(ks: &str) -> String {
    format!(
        "SELECT started_at, run_id FROM {ks}.runs_by_status_day WHERE tenant = ? \
         AND status = ? AND {SINCE}"
    )
}

pub(super) fn list_both_cql(ks: &str) -> String {
    format!(
        "SELECT started_at, run_id FROM {ks}.runs_by_workflow_status_day WHERE tenant = ? \
         AND workflow = ? AND status = ? AND {SINCE}"
    )
}

/// One run's row of `runs_by_day`, by its full key.
pub(super) fn day_row_cql(ks: &str) -> String {
    format!(
        "SELECT {SUMMARY} FROM {ks}.runs_by_day WHERE tenant = ? AND day = ? \
         AND started_at = ? AND run_id = ?"
    )
}

/// A run's key in a status table.
struct Key {
    started_at: DateTime<Utc>,
    run_id: Uuid,
}

impl Positioned for Key {
    fn position(&self) -> Position {
        Position {
            day: self.started_at.date_naive(),
            at: self.started_at,
            id: self.run_id,
        }
    }
}

fn key(row: (DateTime<Utc>, Uuid)) -> Key {
    Key {
        started_at: row.0,
        run_id: row.1,
    }
}

/// Run rows read at once when checking keys of a status table.
const CHECKS_IN_FLIGHT: usize = 32;

pub(super) fn run_cql(ks: &str) -> String {
    format!(
        "SELECT workflow, version, status, trigger_source, scheduled_at, started_at, \
         finished_at, duration_ms, input, output, error_class, error_step, error, \
         payloads_erased_at FROM {ks}.runs WHERE tenant = ? AND run_id = ?"
    )
}

pub(super) fn steps_cql(ks: &str) -> String {
    format!(
        "SELECT step, iteration, attempt, kind, status, connector, started_at, finished_at, \
         duration_ms, output_bytes, error_class, error FROM {ks}.steps \
         WHERE tenant = ? AND run_id = ?"
    )
}

/// A run in a list.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RunSummary {
    pub run_id: Uuid,
    pub workflow: Option<String>,
    pub version: Option<i32>,
    pub status: Option<String>,
    pub trigger_source: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
}

type SummaryRow = (
    DateTime<Utc>,
    Uuid,
    Option<String>,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<i64>,
);

fn summary(row: SummaryRow) -> RunSummary {
    let (started_at, run_id, workflow, version, status, trigger_source, finished_at, duration_ms) =
        row;
    RunSummary {
        run_id,
        workflow,
        version,
        status,
        trigger_source,
        started_at,
        finished_at,
        duration_ms,
    }
}

impl Positioned for RunSummary {
    fn position(&self) -> Position {
        Position {
            day: self.started_at.date_naive(),
            at: self.started_at,
            id: self.run_id,
        }
    }
}

/// Which runs a list keeps; None keeps all.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub workflow: Option<String>,
    pub status: Option<String>,
}

impl RunFilter {
    fn keeps(&self, run: &RunSummary) -> bool {
        let matches = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        matches(&self.workflow, &run.workflow) && matches(&self.status, &run.status)
    }
}

/// Why a run or step failed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Failure {
    pub class: Option<String>,
    /// The step that failed the run; absent for steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub message: Option<String>,
}

/// One dispatch of a step.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StepDetail {
    pub step: String,
    /// The foreach item; absent outside a foreach.
    pub iteration: Option<i64>,
    pub attempt: i32,
    pub kind: Option<String>,
    pub status: Option<String>,
    pub connector: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub output_bytes: Option<i64>,
    pub error: Option<Failure>,
}

type StepRow = (
    String,
    i64,
    i32,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

fn step(row: StepRow) -> StepDetail {
    let (
        step,
        iteration,
        attempt,
        kind,
        status,
        connector,
        started_at,
        finished_at,
        duration_ms,
        output_bytes,
        class,
        message,
    ) = row;
    StepDetail {
        step,
        iteration: (iteration >= 0).then_some(iteration),
        attempt,
        kind,
        status,
        connector,
        started_at,
        finished_at,
        duration_ms,
        output_bytes,
        error: failure(class, None, message),
    }
}

fn failure(
    class: Option<String>,
    step: Option<String>,
    message: Option<String>,
) -> Option<Failure> {
    (class.is_some() || message.is_some()).then_some(Failure {
        class,
        step,
        message,
    })
}

/// One run with every dispatch of its steps.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RunDetail {
    pub run_id: Uuid,
    pub workflow: Option<String>,
    pub version: Option<i32>,
    pub status: Option<String>,
    pub trigger_source: Option<String>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// Any JSON value; null when the history has none.
    #[schema(value_type = Value)]
    pub input: Value,
    /// Any JSON value; null until the run has one.
    #[schema(value_type = Value)]
    pub output: Value,
    pub error: Option<Failure>,
    /// When the run's payloads (input, output, error messages) were erased; they read
    /// null from then on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payloads_erased_at: Option<DateTime<Utc>>,
    /// Ordered by step id, then iteration, then attempt.
    pub steps: Vec<StepDetail>,
    /// True when the run has more than [`MAX_STEPS`] dispatches and only the first are
    /// listed.
    pub steps_truncated: bool,
}

/// Step dispatches returned with a run; a huge foreach is summarised by SQL instead.
pub const MAX_STEPS: usize = 10_000;

type RunRow = (
    Option<String>,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
);

/// The row of `runs_by_day` with the key `k`.
async fn day_row(
    session: &Session,
    statement: &PreparedStatement,
    tenant: &str,
    k: Key,
) -> Result<Option<RunSummary>, HistoryError> {
    let op = "listing runs";
    let bad = |reason: String| HistoryError::Result { op, reason };
    let values = (tenant, k.started_at.date_naive(), k.started_at, k.run_id);
    let row = session
        .execute_unpaged(statement, values)
        .await
        .map_err(|source| HistoryError::Execute {
            op,
            source: Box::new(source),
        })?
        .into_rows_result()
        .map_err(|e| bad(e.to_string()))?
        .maybe_first_row::<SummaryRow>()
        .map_err(|e| bad(e.to_string()))?;
    Ok(row.map(summary))
}

/// Stored JSON text back to JSON; text that is not JSON stays a string rather than
/// failing the whole answer.
fn json(text: Option<String>) -> Value {
    match text {
        None => Value::Null,
        Some(t) => serde_json::from_str(&t).unwrap_or(Value::String(t)),
    }
}

impl HistoryStore {
    /// The tenant's runs that started in `window`, newest first, after `after`; at most
    /// the store's budget is read (`Page::scan` says whether it cut the page short).
    pub async fn list_runs(
        &self,
        tenant: &str,
        window: Window,
        filter: &RunFilter,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Page<RunSummary>, HistoryError> {
        let walk = |statement, sized_to_page| Walk {
            op: "listing runs",
            statement,
            window,
            after,
            limit,
            budget: self.budget,
            sized_to_page,
        };
        let as_is = |items| std::future::ready(Ok(Resolved { items, reads: 0 }));
        let st = &self.st;
        match (filter.workflow.as_deref(), filter.status.as_deref()) {
            (None, None) => {
                let bind = |d: NaiveDate, f, t| (tenant, d, f, t);
                self.walk(walk(&st.runs_of_day, true), bind, summary, as_is)
                    .await
            }
            _ if self.scanning => {
                let bind = |d: NaiveDate, f, t| (tenant, d, f, t);
                let kept = |rows: Vec<RunSummary>| {
                    let items = rows.into_iter().filter(|r| filter.keeps(r)).collect();
                    std::future::ready(Ok(Resolved { items, reads: 0 }))
                };
                self.walk(walk(&st.runs_of_day, false), bind, summary, kept)
                    .await
            }
            (Some(w), None) => {
                let bind = |d: NaiveDate, f, t| (tenant, w, d, f, t);
                self.walk(walk(&st.runs_of_workflow, true), bind, summary, as_is)
                    .await
            }
            (None, Some(s)) => {
                let bind = |d: NaiveDate, f, t| (tenant, s, d, f, t);
                let check = |keys| self.check(tenant, keys, filter);
                self.walk(walk(&st.runs_of_status, true), bind, key, check)
                    .await
            }
            (Some(w), Some(s)) => {
                let bind = |d: NaiveDate, f, t| (tenant, w, s, d, f, t);
                let check = |keys| self.check(tenant, keys, filter);
                self.walk(walk(&st.runs_of_workflow_status, true), bind, key, check)
                    .await
            }
        }
    }

    /// The runs of `keys` whose row of `runs_by_day` `filter` keeps, in the order of
    /// `keys`; a key without a row (expired) or with another status is skipped.
    async fn check(
        &self,
        tenant: &str,
        keys: Vec<Key>,
        filter: &RunFilter,
    ) -> Result<Resolved<RunSummary>, HistoryError> {
        let reads = keys.len();
        let mut found: Vec<Option<RunSummary>> = (0..keys.len()).map(|_| None).collect();
        let mut running = JoinSet::new();
        let mut keys = keys.into_iter().enumerate();
        loop {
            while running.len() < CHECKS_IN_FLIGHT {
                let Some((i, k)) = keys.next() else { break };
                let (session, st) = (Arc::clone(&self.session), Arc::clone(&self.st));
                let tenant = tenant.to_owned();
                running.spawn(async move { (i, day_row(&session, &st.day_row, &tenant, k).await) });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            let (i, row) = done.map_err(|e| HistoryError::Result {
                op: "listing runs",
                reason: format!("a read task failed: {e}"),
            })?;
            found[i] = row?;
        }
        let items = found
            .into_iter()
            .flatten()
            .filter(|r| filter.keeps(r))
            .collect();
        Ok(Resolved { items, reads })
    }

    /// One of the tenant's runs with its steps; None when the tenant has no such run.
    pub async fn run(&self, tenant: &str, run_id: Uuid) -> Result<Option<RunDetail>, HistoryError> {
        let Some(mut detail) = self.run_row(tenant, run_id).await? else {
            return Ok(None);
        };
        (detail.steps, detail.steps_truncated) = self.steps(tenant, run_id).await?;
        for s in &mut detail.steps {
            if let Some(f) = &mut s.error {
                self.open_message(tenant, f).await?;
            }
        }
        Ok(Some(detail))
    }

    /// An error's message opened from its seal.
    async fn open_message(&self, tenant: &str, f: &mut Failure) -> Result<(), HistoryError> {
        if !self.vault.is_on() {
            return Ok(());
        }
        let Some(message) = f.message.take() else {
            return Ok(());
        };
        let op = "opening an error message";
        let bad = |reason: String| HistoryError::Result { op, reason };
        let tenant = aiq_topics::TenantId::new(tenant).map_err(|e| bad(e.to_string()))?;
        f.message = match self
            .vault
            .open_field(&tenant, "message", Value::String(message))
            .await
            .map_err(|e| bad(e.to_string()))?
        {
            Value::String(m) => Some(m),
            other => Some(other.to_string()),
        };
        Ok(())
    }

    /// The run's own row, without reading its steps (`steps` empty): what redrive and
    /// rerun need, run after run in a bulk replay.
    pub async fn run_row(
        &self,
        tenant: &str,
        run_id: Uuid,
    ) -> Result<Option<RunDetail>, HistoryError> {
        let op = "reading a run";
        let bad = |reason: String| HistoryError::Result { op, reason };
        let row = self
            .session
            .execute_unpaged(&self.st.run, (tenant, run_id))
            .await
            .map_err(|source| HistoryError::Execute {
                op,
                source: Box::new(source),
            })?
            .into_rows_result()
            .map_err(|e| bad(e.to_string()))?
            .maybe_first_row::<RunRow>()
            .map_err(|e| bad(e.to_string()))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (
            workflow,
            version,
            status,
            trigger_source,
            scheduled_at,
            started_at,
            finished_at,
            duration_ms,
            input,
            output,
            error_class,
            error_step,
            error,
            payloads_erased_at,
        ) = row;
        let (input, output) = self.opened(tenant, json(input), json(output)).await?;
        let mut error = failure(error_class, error_step, error);
        if let Some(f) = &mut error {
            self.open_message(tenant, f).await?;
        }
        Ok(Some(RunDetail {
            run_id,
            workflow,
            version,
            status,
            trigger_source,
            scheduled_at,
            started_at,
            finished_at,
            duration_ms,
            input,
            output,
            error,
            payloads_erased_at,
            steps: Vec::new(),
            steps_truncated: false,
        }))
    }

    /// A run's input and output opened from their seals.
    async fn opened(
        &self,
        tenant: &str,
        input: Value,
        output: Value,
    ) -> Result<(Value, Value), HistoryError> {
        if !self.vault.is_on() {
            return Ok((input, output));
        }
        let op = "opening a run's sealed payload";
        let bad = |reason: String| HistoryError::Result { op, reason };
        let tenant = aiq_topics::TenantId::new(tenant).map_err(|e| bad(e.to_string()))?;
        let open = |field: &'static str, v: Value| {
            let vault = std::sync::Arc::clone(&self.vault);
            let tenant = tenant.clone();
            async move { vault.open_field(&tenant, field, v).await }
        };
        let input = open("input", input).await.map_err(|e| bad(e.to_string()))?;
        let output = open("output", output)
            .await
            .map_err(|e| bad(e.to_string()))?;
        Ok((input, output))
    }

    async fn steps(
        &self,
        tenant: &str,
        run_id: Uuid,
    ) -> Result<(Vec<StepDetail>, bool), HistoryError> {
        let op = "reading a run's steps";
        let bad = |reason: String| HistoryError::Result { op, reason };
        let mut steps = Vec::new();
        let mut paging = PagingState::start();
        loop {
            let (result, more) = self
                .session
                .execute_single_page(&self.st.steps, (tenant, run_id), paging)
                .await
                .map_err(|source| HistoryError::Execute {
                    op,
                    source: Box::new(source),
                })?;
            let rows = result.into_rows_result().map_err(|e| bad(e.to_string()))?;
            for row in rows.rows::<StepRow>().map_err(|e| bad(e.to_string()))? {
                if steps.len() == MAX_STEPS {
                    return Ok((steps, true));
                }
                steps.push(step(row.map_err(|e| bad(e.to_string()))?));
            }
            match more {
                PagingStateResponse::HasMorePages { state } => paging = state,
                PagingStateResponse::NoMorePages => return Ok((steps, false)),
            }
        }
    }
}
