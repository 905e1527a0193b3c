//! Signals for runs waiting on an event, and cancellation. Both go to the signals topic
//! keyed by the caller's tenant; the orchestrator that owns the tenant applies them to a
//! run of that tenant only (another tenant's run id reaches nothing).

use aiq_auth::Action;
use aiq_topics::{AuditAction, RunId, SignalAction, SignalEvent};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::body;
use crate::http::{App, Caller};
use crate::problem::Problem;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"correlation": "order-42", "payload": {"approved": true}}))]
pub struct SignalRequest {
    /// Matches a `wait_for_event` step's correlation, when it has one.
    #[serde(default)]
    correlation: Option<String>,
    /// Becomes the waiting step's output; any JSON value.
    #[serde(default)]
    #[schema(value_type = Value)]
    payload: serde_json::Value,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "a duplicate order"}))]
pub struct CancelRequest {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Queued {
    #[schema(value_type = String, format = Uuid)]
    run_id: RunId,
    /// `signal` or `cancel`.
    action: &'static str,
}

fn run_id(raw: &str) -> Result<RunId, Problem> {
    raw.parse()
        .map_err(|_| Problem::not_found(format!("run {raw:?} is not a run id")))
}

async fn publish(
    app: &App,
    caller: &Caller,
    event: SignalEvent,
    action: &'static str,
) -> Result<Response, Problem> {
    app.publisher
        .signal(&event)
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    let (audited, detail) = match &event.action {
        SignalAction::Signal { name, .. } => {
            (AuditAction::SignalSent, serde_json::json!({"name": name}))
        }
        _ => (AuditAction::RunCancelled, serde_json::Value::Null),
    };
    crate::audit::record(
        &app.publisher,
        caller,
        audited,
        &event.run.to_string(),
        detail,
    )
    .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(Queued {
            run_id: event.run,
            action,
        }),
    )
        .into_response())
}

/// Sends a named signal to one of the caller's runs. Answered 202 once Kafka has it; a
/// run that is not waiting for it keeps it (up to 64) until a step waits for it.
#[utoipa::path(post, path = "/v1/runs/{run_id}/signals/{name}", tag = "runs",
    params(
        ("run_id" = String, Path, format = Uuid, description = "The run"),
        ("name" = String, Path, min_length = 1, max_length = 128,
            description = "The signal name a `wait_for_event` step waits for; 1 to 128 characters"),
    ),
    request_body = Option<SignalRequest>,
    responses(
        (status = 202, body = Queued),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 413, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn signal(
    State(app): State<App>,
    caller: Caller,
    Path((run, name)): Path<(String, String)>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    caller.require(Action::SendSignal)?;
    let run = run_id(&run)?;
    if name.is_empty() || name.chars().count() > 128 {
        return Err(Problem::bad_request(
            "bad-signal-name",
            "the signal name must be 1 to 128 characters",
        ));
    }
    let req: SignalRequest =
        body::object_or_default(&body::bytes(raw, app.settings.max_body_bytes)?)?;
    let event = SignalEvent {
        tenant: caller.tenant.clone(),
        run,
        action: SignalAction::Signal {
            name,
            correlation: req.correlation,
            payload: req.payload,
        },
    };
    publish(&app, &caller, event, "signal").await
}

/// Cancels one of the caller's runs (a queued run ends without starting).
#[utoipa::path(post, path = "/v1/runs/{run_id}/cancel", tag = "runs",
    params(("run_id" = String, Path, format = Uuid, description = "The run")),
    request_body = Option<CancelRequest>,
    responses(
        (status = 202, body = Queued),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 413, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn cancel(
    State(app): State<App>,
    caller: Caller,
    Path(run): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    caller.require(Action::CancelRun)?;
    let run = run_id(&run)?;
    let req: CancelRequest =
        body::object_or_default(&body::bytes(raw, app.settings.max_body_bytes)?)?;
    let event = SignalEvent {
        tenant: caller.tenant.clone(),
        run,
        action: SignalAction::Cancel {
            reason: req
                .reason
                .unwrap_or_else(|| format!("cancelled by {}", caller.subject)),
        },
    };
    publish(&app, &caller, event, "cancel").await
}
