//! The history API: the caller's runs, newest first, and one run with its steps.

use aiq_auth::Action;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::history::{HistoryError, Position, RunDetail, RunFilter, RunSummary, Window};
use crate::http::{App, Caller};
use crate::problem::{FieldError, Problem};

/// Run statuses a list may be filtered by.
const STATUSES: [&str; 5] = ["running", "succeeded", "failed", "cancelled", "timed_out"];
pub(crate) const MAX_LIMIT: usize = 500;
const DEFAULT_LIMIT: usize = 50;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only runs of this workflow.
    #[param(min_length = 1)]
    workflow: Option<String>,
    /// running, succeeded, failed, cancelled or timed_out.
    #[param(pattern = "^(running|succeeded|failed|cancelled|timed_out)$")]
    status: Option<String>,
    /// RFC 3339; runs that started at or after it. Default: 24 hours before `to`.
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339; runs that started at or before it. Default: now. At most 31 days
    /// after `from`.
    #[param(format = DateTime)]
    to: Option<String>,
    /// 1 to 500; default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    runs: Vec<RunSummary>,
    /// Pass as `page_token` for the next page; null on the last page.
    next_page_token: Option<String>,
    scan: ScanReport,
}

/// What the request read. One request reads at most a fixed budget of rows and day
/// partitions; when the budget ran out first, the page may hold fewer runs than `limit`
/// (even none) and the list continues from `resume_cursor`.
#[derive(Serialize, ToSchema)]
pub struct ScanReport {
    /// The budget ended the request before the page was full or the range read.
    truncated: bool,
    /// Rows read from the store for this page.
    scanned_rows: usize,
    /// Day partitions queried for this page.
    scanned_partitions: usize,
    /// Where the budget stopped, the same as `next_page_token`; null when not truncated.
    resume_cursor: Option<String>,
}

/// A 400 naming the query parameter and what is wrong with it.
pub(crate) fn bad_param(name: &str, reason: impl Into<String>) -> Problem {
    let reason = reason.into();
    Problem::bad_request(
        "bad-parameter",
        format!("query parameter `{name}`: {reason}"),
    )
    .with_errors(vec![FieldError {
        pointer: format!("/query/{name}"),
        reason,
        line: None,
    }])
}

pub(crate) fn query_rejection(e: &QueryRejection) -> Problem {
    Problem::bad_request("bad-parameter", e.body_text())
}

fn instant(name: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, Problem> {
    raw.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| bad_param(name, format!("not an RFC 3339 time ({e})")))
    })
    .transpose()
}

/// The paging parameters shared by every list: window, limit and page token.
pub(crate) struct Paging {
    pub window: Window,
    pub limit: usize,
    pub after: Option<Position>,
}

pub(crate) fn paging(
    from: Option<&str>,
    to: Option<&str>,
    limit: Option<&str>,
    page_token: Option<&str>,
) -> Result<Paging, Problem> {
    let from_at = instant("from", from)?;
    let to_at = instant("to", to)?;
    let window = Window::new(from_at, to_at, Utc::now()).map_err(|e| {
        // Name the parameter the caller gave; with neither given this cannot fail.
        let name = if from.is_some() { "from" } else { "to" };
        bad_param(name, e.to_string())
    })?;
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                bad_param("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))
            })?,
    };
    let after = page_token
        .map(|t| Position::from_token(t).map_err(|e| bad_param("page_token", e.to_string())))
        .transpose()?;
    Ok(Paging {
        window,
        limit,
        after,
    })
}

pub(crate) fn history_error(e: &HistoryError) -> Problem {
    Problem::unavailable(e.to_string())
}

/// The caller's runs that started in a time range, newest first. Filtered lists read
/// only matching runs; a page the read budget cut short says so in `scan`.
#[utoipa::path(get, path = "/v1/runs", tag = "runs",
    params(RunsQuery),
    responses(
        (status = 200, body = RunList),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list(
    State(app): State<App>,
    caller: Caller,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<RunList>, Problem> {
    caller.require(Action::ReadRuns)?;
    let Query(q) = query.map_err(|e| query_rejection(&e))?;
    if let Some(s) = q.status.as_deref()
        && !STATUSES.contains(&s)
    {
        return Err(bad_param(
            "status",
            format!("must be one of {}", STATUSES.join(", ")),
        ));
    }
    if q.workflow.as_deref().is_some_and(str::is_empty) {
        return Err(bad_param("workflow", "must not be empty"));
    }
    let p = paging(
        q.from.as_deref(),
        q.to.as_deref(),
        q.limit.as_deref(),
        q.page_token.as_deref(),
    )?;
    let filter = RunFilter {
        workflow: q.workflow,
        status: q.status,
    };
    let page = app
        .history
        .list_runs(caller.tenant.as_str(), p.window, &filter, p.after, p.limit)
        .await
        .map_err(|e| history_error(&e))?;
    let next_page_token = page.next.map(|p| p.token());
    let scan = ScanReport {
        truncated: page.scan.truncated,
        scanned_rows: page.scan.rows,
        scanned_partitions: page.scan.partitions,
        resume_cursor: next_page_token.clone().filter(|_| page.scan.truncated),
    };
    Ok(Json(RunList {
        runs: page.items,
        next_page_token,
        scan,
    }))
}

/// One of the caller's runs with every dispatch of its steps. Another tenant's run is
/// answered exactly like a missing one.
#[utoipa::path(get, path = "/v1/runs/{run_id}", tag = "runs",
    params(("run_id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = RunDetail),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get(
    State(app): State<App>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<RunDetail>, Problem> {
    caller.require(Action::ReadRuns)?;
    let missing = || Problem::not_found(format!("run {raw:?} was not found"));
    let run_id: Uuid = raw.parse().map_err(|_| missing())?;
    app.history
        .run(caller.tenant.as_str(), run_id)
        .await
        .map_err(|e| history_error(&e))?
        .map(Json)
        .ok_or_else(missing)
}
