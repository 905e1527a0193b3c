//! Bulk replay chosen by SQL (see `crate::replays`): a dry run answers what the
//! predicate matches; a real one becomes a job whose progress `GET /v1/replays/{id}`
//! shows and which `POST /v1/replays/{id}/cancel` stops.

use aiq_analytics::Scope;
use aiq_auth::Action;
use aiq_topics::AuditAction;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::sql::{analytics, analytics_error, scope};
use crate::http::{App, Caller, body};
use crate::problem::{FieldError, Problem};
use crate::replays::{Job, JobRequest, ReplayMode, SelectError, matching};

/// Sample runs a dry run shows.
const SAMPLE: usize = 20;
const MAX_RATE: u32 = 1_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"where": "status = 'failed' AND workflow = 'order-sync'", "mode": "redrive", "dry_run": true}))]
pub struct ReplayRequest {
    /// A predicate over the `runs` table, as after `WHERE` in `POST /v1/sql`.
    #[serde(rename = "where")]
    #[schema(min_length = 1)]
    predicate: String,
    /// `redrive` (default): resume each failed run at its failed step; `rerun`: start a
    /// new run of each with the same input.
    #[serde(default)]
    mode: Option<String>,
    /// Only count and show a sample of what would be replayed.
    #[serde(default)]
    dry_run: bool,
    /// Runs replayed per second at most, 1 to 1000; default 10.
    #[serde(default, deserialize_with = "body::optional_whole_u32")]
    #[schema(minimum = 1, maximum = 1000)]
    max_per_second: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct SampleRun {
    tenant: String,
    run_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct DryRun {
    /// Runs the predicate matches.
    matched: usize,
    /// The first of them, ordered by tenant and run id.
    sample: Vec<SampleRun>,
}

fn field(name: &str, reason: String) -> Problem {
    Problem::bad_request("invalid-replay", format!("field `{name}`: {reason}")).with_errors(vec![
        FieldError {
            pointer: format!("/{name}"),
            reason,
            line: None,
        },
    ])
}

fn select_problem(e: SelectError) -> Problem {
    match e {
        SelectError::Empty | SelectError::TooMany => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-replay",
            e.to_string(),
        )
        .with_errors(vec![FieldError {
            pointer: "/where".into(),
            reason: e.to_string(),
            line: None,
        }]),
        SelectError::Analytics(a) => analytics_error(a),
        SelectError::BadRow(_) => Problem::unavailable(e.to_string()),
    }
}

fn store_problem(e: crate::replays::StoreError) -> Problem {
    Problem::unavailable(e.to_string())
}

/// Chooses runs with SQL and redrives or reruns them: a dry run answers 200 with the
/// count and a sample; otherwise 202 with the job, which replays each matched run once,
/// at most `max_per_second`. A tenant's predicate reads only its own runs; a platform
/// admin acting for no tenant chooses across tenants.
#[utoipa::path(post, path = "/v1/replays", tag = "replays",
    request_body = ReplayRequest,
    responses(
        (status = 200, body = DryRun), (status = 202, body = Job),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem), (status = 503, body = Problem),
        (status = 504, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn create(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    caller.require(Action::StartRun)?;
    caller.require(Action::QuerySql)?;
    let engine = analytics(&app)?;
    let req: ReplayRequest = body::object(&body::bytes(raw, app.settings.max_body_bytes)?)?;
    let mode = match req.mode.as_deref() {
        None => ReplayMode::Redrive,
        Some(m) => ReplayMode::parse(m)
            .ok_or_else(|| field("mode", format!("{m:?} is neither redrive nor rerun")))?,
    };
    let max_per_second = req.max_per_second.unwrap_or(10);
    if !(1..=MAX_RATE).contains(&max_per_second) {
        return Err(field(
            "max_per_second",
            format!("must be 1 to {MAX_RATE}, got {max_per_second}"),
        ));
    }
    let scope = scope(&caller, &headers);
    let targets = matching(engine, &scope, &req.predicate)
        .await
        .map_err(select_problem)?;
    if req.dry_run {
        let sample = targets
            .iter()
            .take(SAMPLE)
            .map(|t| SampleRun {
                tenant: t.tenant.to_string(),
                run_id: t.run.to_string(),
            })
            .collect();
        return Ok(Json(DryRun {
            matched: targets.len(),
            sample,
        })
        .into_response());
    }
    let job = Job::new(
        JobRequest {
            tenant: caller.tenant.clone(),
            created_by: caller.subject.clone(),
            predicate: req.predicate,
            mode,
            platform: scope == Scope::Platform,
            max_per_second,
        },
        targets,
        Utc::now(),
    );
    app.replays.create(&job).await.map_err(store_problem)?;
    crate::audit::record(
        &app.publisher,
        &caller,
        AuditAction::ReplayStarted,
        &job.id.to_string(),
        serde_json::json!({"where": job.predicate, "mode": mode.as_str(), "runs": job.total,
                           "max_per_second": max_per_second, "platform": job.platform}),
    )
    .await;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

fn job_id(raw: &str) -> Result<Uuid, Problem> {
    raw.parse()
        .map_err(|_| Problem::not_found(format!("replay {raw:?} was not found")))
}

/// A replay job and its progress.
#[utoipa::path(get, path = "/v1/replays/{id}", tag = "replays",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = Job),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get(
    State(app): State<App>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<Job>, Problem> {
    caller.require(Action::ReadRuns)?;
    let id = job_id(&raw)?;
    app.replays
        .get(&caller.tenant, id)
        .await
        .map_err(store_problem)?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("replay {id} was not found")))
}

/// Stops a running replay job; what it replayed stays replayed.
#[utoipa::path(post, path = "/v1/replays/{id}/cancel", tag = "replays",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = Job),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn cancel(
    State(app): State<App>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<Job>, Problem> {
    caller.require(Action::StartRun)?;
    let id = job_id(&raw)?;
    let missing = || Problem::not_found(format!("replay {id} was not found"));
    let job = app
        .replays
        .get(&caller.tenant, id)
        .await
        .map_err(store_problem)?
        .ok_or_else(missing)?;
    if !app
        .replays
        .cancel(&caller.tenant, id)
        .await
        .map_err(store_problem)?
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "not-running",
            format!(
                "replay {id} is {}; only a running one is cancelled",
                job.state.as_str()
            ),
        ));
    }
    crate::audit::record(
        &app.publisher,
        &caller,
        AuditAction::ReplayCancelled,
        &id.to_string(),
        serde_json::Value::Null,
    )
    .await;
    app.replays
        .get(&caller.tenant, id)
        .await
        .map_err(store_problem)?
        .map(Json)
        .ok_or_else(missing)
}
