//! A tenant's runs: the list from `runs_by_day`, one run from `runs` with its `steps`.

use chrono::{DateTime, Utc};
use scylla::response::{PagingState, PagingStateResponse};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::walk::{Page, Positioned, Walk};
use super::{HistoryError, HistoryStore, Position, Window};

pub(super) fn list_cql(ks: &str) -> String {
    format!(
        "SELECT started_at, run_id, workflow, version, status, trigger_source, finished_at, \
         duration_ms FROM {ks}.runs_by_day WHERE tenant = ? AND day = ? AND started_at >= ? \
         AND started_at <= ?"
    )
}

pub(super) fn run_cql(ks: &str) -> String {
    format!(
        "SELECT workflow, version, status, trigger_source, scheduled_at, started_at, \
         finished_at, duration_ms, input, output, error_class, error_step, error \
         FROM {ks}.runs WHERE tenant = ? AND run_id = ?"
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
    #[schema(value_type = Object)]
    pub input: Value,
    #[schema(value_type = Object)]
    pub output: Value,
    pub error: Option<Failure>,
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
);

/// Stored JSON text back to JSON; text that is not JSON stays a string rather than
/// failing the whole answer.
fn json(text: Option<String>) -> Value {
    match text {
        None => Value::Null,
        Some(t) => serde_json::from_str(&t).unwrap_or(Value::String(t)),
    }
}

impl HistoryStore {
    /// The tenant's runs that started in `window`, newest first, after `after`.
    pub async fn list_runs(
        &self,
        tenant: &str,
        window: Window,
        filter: &RunFilter,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Page<RunSummary>, HistoryError> {
        let walk = Walk {
            op: "listing runs",
            statement: &self.st.runs_of_day,
            tenant,
            window,
            after,
            limit,
        };
        self.walk(walk, summary, |r| filter.keeps(r)).await
    }

    /// One of the tenant's runs; None when the tenant has no such run.
    pub async fn run(&self, tenant: &str, run_id: Uuid) -> Result<Option<RunDetail>, HistoryError> {
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
        ) = row;
        let (steps, steps_truncated) = self.steps(tenant, run_id).await?;
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
            input: json(input),
            output: json(output),
            error: failure(error_class, error_step, error),
            steps,
            steps_truncated,
        }))
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
