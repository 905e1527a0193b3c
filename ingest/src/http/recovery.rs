//! Redrive and rerun of the caller's runs (see `crate::recovery`). Both are audited;
//! with an `Idempotency-Key`, a repeated request answers what the first got.

use aiq_auth::Action;
use aiq_topics::{AuditAction, RunId};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::http::runs::{accepted, idempotency_key, start_error};
use crate::http::{App, Caller, body};
use crate::problem::Problem;
use crate::recovery::{Recovery, RecoveryError, RerunVersion};

fn recovery(app: &App) -> Recovery<'_> {
    Recovery {
        history: &app.history,
        publisher: &app.publisher,
        store: &app.store,
        runs: &app.runs,
    }
}

fn run_id(raw: &str) -> Result<RunId, Problem> {
    raw.parse()
        .map_err(|_| Problem::not_found(format!("run {raw:?} was not found")))
}

pub(crate) fn recovery_problem(e: RecoveryError) -> Problem {
    match e {
        RecoveryError::NotFound(_) => Problem::not_found(e.to_string()),
        RecoveryError::NotRedrivable { .. } => {
            Problem::new(StatusCode::CONFLICT, "not-redrivable", e.to_string())
        }
        RecoveryError::NoWorkflow(_) => {
            Problem::new(StatusCode::CONFLICT, "not-rerunnable", e.to_string())
        }
        RecoveryError::Erased(_) => Problem::new(StatusCode::CONFLICT, "run-erased", e.to_string()),
        RecoveryError::KeyReused(_) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            e.to_string(),
        ),
        RecoveryError::InProgress(_) => {
            Problem::new(StatusCode::CONFLICT, "in-progress", e.to_string()).retry_after(1)
        }
        RecoveryError::Start(s) => start_error(s),
        RecoveryError::History(_) | RecoveryError::Publish(_) | RecoveryError::Store(_) => {
            Problem::unavailable(e.to_string())
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RedriveAccepted {
    #[schema(value_type = String, format = Uuid)]
    run_id: RunId,
    /// When the failure being resumed ended.
    failed_at: DateTime<Utc>,
}

/// Resumes one of the caller's `failed` or `timed_out` runs at the step it failed at,
/// with fresh attempts and everything else as it was (a parallel or foreach step that
/// failed runs again whole). Answered 202 once Kafka has the request; the run's events
/// then show it running. Allowed while the orchestrator keeps the run's state
/// (`orchestrator.redrive_retention_secs`); past that the request goes to the dead
/// letters, saying so. A run that is not failed or timed_out is refused with 409.
#[utoipa::path(post, path = "/v1/runs/{run_id}/redrive", tag = "runs",
    params(
        ("run_id" = String, Path, format = Uuid),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 256, description = "Makes a retried request do nothing more"),
    ),
    responses(
        (status = 202, body = RedriveAccepted),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn redrive(
    State(app): State<App>,
    caller: Caller,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    caller.require(Action::StartRun)?;
    let run = run_id(&raw)?;
    let key = idempotency_key(&headers)?;
    let done = recovery(&app)
        .redrive(&caller.tenant, run, key.as_deref(), Utc::now())
        .await
        .map_err(recovery_problem)?;
    if !done.replayed {
        crate::audit::record(
            &app.publisher,
            &caller,
            AuditAction::RunRedriven,
            &run.to_string(),
            serde_json::json!({"workflow": done.workflow, "failed_at": done.failed_at}),
        )
        .await;
    }
    let mut resp = (
        StatusCode::ACCEPTED,
        Json(RedriveAccepted {
            run_id: run,
            failed_at: done.failed_at,
        }),
    )
        .into_response();
    if done.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"version": "latest"}))]
pub struct RerunRequest {
    /// A version number, or `"latest"`; default: the version the run ran.
    #[schema(schema_with = version_choice)]
    #[serde(default)]
    version: Option<Value>,
}

/// A version number from 1, or the word `latest`.
fn version_choice() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(u32::MAX)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["latest"])),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build()
        .into()
}

/// Starts a new run of the same workflow with the same input as one of the caller's
/// runs (any status), of the same version unless `version` says otherwise. The new run
/// is a run like any other; the audit trail links it to the original.
#[utoipa::path(post, path = "/v1/runs/{run_id}/rerun", tag = "runs",
    params(
        ("run_id" = String, Path, format = Uuid),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 256, description = "Makes a retried request return the same run"),
    ),
    request_body = Option<RerunRequest>,
    responses(
        (status = 202, body = crate::http::runs::StartedRun),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn rerun(
    State(app): State<App>,
    caller: Caller,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body_raw: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    caller.require(Action::StartRun)?;
    let run = run_id(&raw)?;
    let key = idempotency_key(&headers)?;
    let req: RerunRequest =
        body::object_or_default(&body::bytes(body_raw, app.settings.max_body_bytes)?)?;
    let version = match &req.version {
        None => RerunVersion::Same,
        Some(Value::String(s)) if s == "latest" => RerunVersion::Latest,
        Some(v) => body::whole_u32(v)
            .filter(|n| *n > 0)
            .map(RerunVersion::Exactly)
            .ok_or_else(|| {
                Problem::bad_request(
                    "bad-version",
                    "field `version`: a version number from 1, or \"latest\"",
                )
            })?,
    };
    let (started, workflow) = recovery(&app)
        .rerun(&caller.tenant, run, version, key, Utc::now())
        .await
        .map_err(recovery_problem)?;
    if !started.replayed {
        crate::audit::record(
            &app.publisher,
            &caller,
            AuditAction::RunRerun,
            &started.run_id.to_string(),
            serde_json::json!({"rerun_of": run, "workflow": workflow, "version": started.version}),
        )
        .await;
    }
    Ok(accepted(&started, &workflow))
}
