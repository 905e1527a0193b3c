//! Starting runs by API or by hand.

use aiq_topics::{RunId, TriggerSource, WorkflowId};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::body;
use crate::http::{App, Caller};
use crate::problem::{FieldError, Problem};
use crate::runs::{Accepted, StartError, StartRun};
use aiq_auth::Action;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"input": {"order_id": 42}}))]
pub struct StartRequest {
    /// The run input, any JSON value, checked against the workflow's input schema.
    #[serde(default)]
    #[schema(value_type = Value)]
    input: serde_json::Value,
    /// A registered version; the newest when absent.
    #[serde(default, deserialize_with = "body::optional_whole_u32")]
    #[schema(minimum = 1)]
    version: Option<u32>,
    /// `api` (default) or `manual`.
    #[serde(default)]
    manual: bool,
}

#[derive(Serialize, ToSchema)]
pub struct StartedRun {
    #[schema(value_type = String, format = Uuid)]
    run_id: RunId,
    workflow: String,
    version: u32,
}

/// The `outcome` label of a refused run start.
pub(crate) fn outcome(e: &StartError) -> &'static str {
    match e {
        StartError::UnknownWorkflow(_) | StartError::UnknownVersion { .. } => "unknown_workflow",
        StartError::Stopped(_) => "workflow_stopped",
        StartError::Suspended(_) => "tenant_suspended",
        StartError::InvalidInput(_) => "invalid_input",
        StartError::InputTooLarge { .. } => "too_large",
        StartError::BadKey { .. } | StartError::KeyReused(_) => "bad_request",
        StartError::InProgress(_) => "in_progress",
        StartError::QueueFull { .. } => "queue_full",
        StartError::Unavailable(_) | StartError::Store(_) => "unavailable",
    }
}

pub(crate) fn start_error(e: StartError) -> Problem {
    match e {
        StartError::UnknownWorkflow(_) | StartError::UnknownVersion { .. } => {
            Problem::not_found(e.to_string())
        }
        StartError::Stopped(_) => {
            Problem::new(StatusCode::CONFLICT, "workflow-stopped", e.to_string())
        }
        StartError::Suspended(_) => {
            Problem::new(StatusCode::FORBIDDEN, "tenant-suspended", e.to_string())
        }
        StartError::InvalidInput(errors) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-input",
            "the input does not match the workflow's input schema",
        )
        .with_errors(
            errors
                .into_iter()
                .map(|line| match line.split_once(": ") {
                    Some((p, r)) => FieldError {
                        pointer: format!("/input{}", if p == "/" { "" } else { p }),
                        reason: r.to_owned(),
                        line: None,
                    },
                    None => FieldError {
                        pointer: "/input".into(),
                        reason: line,
                        line: None,
                    },
                })
                .collect(),
        ),
        StartError::InputTooLarge { size, limit } => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "input-too-large",
            format!(
                "the input is {size} bytes of JSON; at most {limit} bytes are accepted \
                 (ingest.max_trigger_input_bytes)"
            ),
        )
        .with_errors(vec![FieldError {
            pointer: "/input".into(),
            reason: format!("{size} bytes, over the limit of {limit} bytes"),
            line: None,
        }]),
        StartError::BadKey { .. } => Problem::bad_request("bad-idempotency-key", e.to_string()),
        StartError::KeyReused(_) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            e.to_string(),
        ),
        StartError::InProgress(_) => {
            Problem::new(StatusCode::CONFLICT, "in-progress", e.to_string()).retry_after(1)
        }
        StartError::QueueFull { .. } => {
            Problem::new(StatusCode::TOO_MANY_REQUESTS, "queue-full", e.to_string()).retry_after(5)
        }
        StartError::Unavailable(_) | StartError::Store(_) => Problem::unavailable(e.to_string()),
    }
}

/// The request's `Idempotency-Key`, if it has one.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    headers
        .get(IDEMPOTENCY_KEY)
        .map(|v| {
            v.to_str().map(str::to_owned).map_err(|_| {
                Problem::bad_request(
                    "bad-idempotency-key",
                    "Idempotency-Key must be visible ASCII",
                )
            })
        })
        .transpose()
}

pub(crate) fn accepted(a: &Accepted, workflow: &WorkflowId) -> Response {
    let mut resp = (
        StatusCode::ACCEPTED,
        Json(StartedRun {
            run_id: a.run_id,
            workflow: workflow.to_string(),
            version: a.version,
        }),
    )
        .into_response();
    if a.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

/// Starts a run. Answered 202 only once Kafka has acknowledged the trigger; with an
/// `Idempotency-Key`, a repeated request returns the same run and starts nothing new.
#[utoipa::path(post, path = "/v1/workflows/{id}/runs", tag = "runs",
    params(
        ("id" = String, Path, description = "Workflow id", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 256, description = "Makes a retried request return the same run"),
    ),
    request_body = Option<StartRequest>,
    responses(
        (status = 202, body = StartedRun),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn start(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    caller.require(Action::StartRun)?;
    let workflow = WorkflowId::new(id.clone())
        .map_err(|_| Problem::not_found(format!("workflow {id:?} is not registered")))?;
    let started_at = std::time::Instant::now();
    let label = app.metrics.tenant(&caller.tenant);
    app.limiter.check(&caller.tenant).map_err(|r| {
        app.metrics
            .triggers
            .with_label_values(&[label.as_str(), "rate_limited"])
            .inc();
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("tenant {} is over its trigger rate", caller.tenant),
        )
        .retry_after(r.header_secs())
    })?;
    let raw = body::bytes(raw, app.settings.max_body_bytes)?;
    let req: StartRequest = body::object_or_default(&raw)?;
    let key = idempotency_key(&headers)?;
    let accepted_run = app
        .runs
        .start(
            StartRun {
                tenant: caller.tenant.clone(),
                workflow: workflow.clone(),
                version: req.version,
                input: req.input,
                idempotency_key: key,
                source: if req.manual {
                    TriggerSource::Manual
                } else {
                    TriggerSource::Api
                },
                parent_traceparent: headers
                    .get(aiq_topics::trace::TRACEPARENT)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            },
            Utc::now(),
        )
        .await
        .map_err(|e| {
            app.metrics
                .triggers
                .with_label_values(&[label.as_str(), outcome(&e)])
                .inc();
            start_error(e)
        })?;
    let result = if accepted_run.replayed {
        "replayed"
    } else {
        "accepted"
    };
    app.metrics
        .triggers
        .with_label_values(&[label.as_str(), result])
        .inc();
    app.metrics
        .accept_seconds
        .with_label_values(&[label.as_str()])
        .observe(started_at.elapsed().as_secs_f64());
    Ok(accepted(&accepted_run, &workflow))
}
