//! A workflow's lifecycle: disable and enable it, delete it, pin the version triggers
//! start. Each change is a state record on the compacted definitions topic (key
//! `tenant/workflow/state`, see `aiq_topics::WorkflowState`), which every process's
//! catalog follows, so it takes effect everywhere within the follower's delay; this
//! process applies it at once. Runs in flight go on whatever the state. Audited.

use aiq_auth::Action;
use aiq_topics::{AuditAction, TopicKind, WorkflowId, WorkflowState};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::{App, Caller, body};
use crate::problem::Problem;

/// A workflow's lifecycle state after a change.
#[derive(Serialize, ToSchema)]
pub struct Lifecycle {
    workflow: String,
    disabled: bool,
    deleted: bool,
    /// The version triggers without one start; null: the newest.
    default_version: Option<u32>,
}

fn answer(s: &WorkflowState) -> Json<Lifecycle> {
    Json(Lifecycle {
        workflow: s.workflow.to_string(),
        disabled: s.disabled,
        deleted: s.deleted,
        default_version: s.default_version,
    })
}

/// Applies `change` to the workflow's state, publishes it and records `action`.
async fn change(
    app: &App,
    caller: &Caller,
    id: &str,
    action: AuditAction,
    change: impl FnOnce(&mut WorkflowState) -> Result<(), Problem>,
) -> Result<Json<Lifecycle>, Problem> {
    caller.require(Action::RegisterWorkflow)?;
    let missing = || Problem::not_found(format!("workflow {id:?} is not registered"));
    let workflow = WorkflowId::new(id).map_err(|_| missing())?;
    let now = Utc::now();
    let mut state = app
        .catalog
        .state(&caller.tenant, &workflow)
        .unwrap_or_else(|| WorkflowState::new(caller.tenant.clone(), workflow.clone(), now));
    if state.deleted
        || app
            .catalog
            .list(&caller.tenant)
            .iter()
            .all(|v| v.record.workflow != workflow)
    {
        return Err(missing());
    }
    change(&mut state)?;
    state.changed_at = now;
    app.publisher
        .send(TopicKind::Definitions, &state.key(), &state.encode())
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    app.catalog.apply_state(state.clone());
    crate::audit::record(
        &app.publisher,
        caller,
        action,
        workflow.as_str(),
        serde_json::json!({"disabled": state.disabled, "deleted": state.deleted,
                           "default_version": state.default_version}),
    )
    .await;
    Ok(answer(&state))
}

/// Stops every trigger of the workflow (API, webhooks, cron, outside producers) from
/// starting runs; runs in flight go on. Cron ticks stop within seconds.
#[utoipa::path(post, path = "/v1/workflows/{id}/disable", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, body = Lifecycle), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn disable(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Lifecycle>, Problem> {
    change(&app, &caller, &id, AuditAction::WorkflowDisabled, |s| {
        s.disabled = true;
        Ok(())
    })
    .await
}

/// Lets the workflow's triggers start runs again.
#[utoipa::path(post, path = "/v1/workflows/{id}/enable", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, body = Lifecycle), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn enable(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Lifecycle>, Problem> {
    change(&app, &caller, &id, AuditAction::WorkflowEnabled, |s| {
        s.disabled = false;
        Ok(())
    })
    .await
}

/// Removes the workflow from listings and triggers; its runs' history is kept for its
/// retention, and runs in flight go on. Registering it again brings it back.
#[utoipa::path(delete, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, body = Lifecycle), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn delete(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Lifecycle>, Problem> {
    change(&app, &caller, &id, AuditAction::WorkflowDeleted, |s| {
        s.deleted = true;
        Ok(())
    })
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"version": 3}))]
pub struct DefaultVersion {
    /// A registered version; null: the newest again.
    #[serde(default, deserialize_with = "body::optional_whole_u32")]
    #[schema(minimum = 1)]
    version: Option<u32>,
}

/// Pins the version that triggers without one start (API, webhooks, cron), or with
/// null unpins it: to roll back, pin an older version.
#[utoipa::path(put, path = "/v1/workflows/{id}/default-version", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    request_body = DefaultVersion,
    responses((status = 200, body = Lifecycle), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 503, body = Problem)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn default_version(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Lifecycle>, Problem> {
    let req: DefaultVersion = body::object(&body::bytes(raw, app.settings.max_body_bytes)?)?;
    let tenant = caller.tenant.clone();
    let catalog = std::sync::Arc::clone(&app.catalog);
    change(
        &app,
        &caller,
        &id,
        AuditAction::DefaultVersionSet,
        move |s| {
            if let Some(v) = req.version
                && catalog.version(&tenant, &s.workflow, v).is_none()
            {
                return Err(Problem::new(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    format!("workflow {:?} has no version {v}", s.workflow.as_str()),
                ));
            }
            s.default_version = req.version;
            Ok(())
        },
    )
    .await
}
