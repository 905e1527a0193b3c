//! The workflow registry.

use aiq_topics::{AuditAction, WorkflowId};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::catalog::Version;
use crate::http::body;
use crate::http::{App, Caller};
use crate::problem::{FieldError, Problem};
use crate::registry::service::{RegisterError, Registered};
use aiq_auth::Action;

#[derive(Serialize, ToSchema)]
pub struct VersionSummary {
    workflow: String,
    version: u32,
    content_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    created_at: DateTime<Utc>,
    /// No trigger starts runs of it (`POST /v1/workflows/{id}/disable`).
    disabled: bool,
    /// The version triggers without one start, when one is pinned.
    #[serde(skip_serializing_if = "Option::is_none")]
    default_version: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct VersionDetail {
    #[serde(flatten)]
    summary: VersionSummary,
    /// The accepted definition document.
    #[schema(value_type = Object)]
    definition: serde_json::Value,
}

fn summary(v: &Version) -> VersionSummary {
    VersionSummary {
        workflow: v.record.workflow.to_string(),
        version: v.record.version,
        content_hash: v.record.content_hash.clone(),
        name: v.workflow.definition().name.clone(),
        created_at: v.record.created_at,
        disabled: false,
        default_version: None,
    }
}

pub(crate) fn register_error(e: RegisterError) -> Problem {
    match e {
        RegisterError::Invalid(errors) => Problem::bad_request(
            "invalid-workflow",
            format!("the workflow has {} error(s)", errors.len()),
        )
        .with_errors(
            errors
                .into_iter()
                .map(|e| FieldError {
                    pointer: e.pointer,
                    reason: e.message,
                    line: None,
                })
                .collect(),
        ),
        RegisterError::Publish(_) | RegisterError::Store(_) | RegisterError::Contended(_) => {
            Problem::unavailable(e.to_string())
        }
        RegisterError::Corrupt { .. } => {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    }
}

/// A definition document from a request body: its text, and the file name that tells
/// the parser its format (YAML with a YAML content type, JSON otherwise).
pub(crate) fn document<'a>(
    headers: &HeaderMap,
    raw: &'a [u8],
) -> Result<(&'static str, &'a str), Problem> {
    let text = std::str::from_utf8(raw)
        .map_err(|e| Problem::bad_request("not-utf8", format!("the body is not UTF-8: {e}")))?;
    let yaml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("yaml"));
    Ok((if yaml { "request.yaml" } else { "request.json" }, text))
}

/// Registers a new version of a workflow (JSON, or YAML with a YAML content type).
/// Registering the newest version's content again answers 200 with that version.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows",
    request_body(description = "The definition document: YAML with a YAML content type, JSON otherwise",
        content((String = "application/yaml"), (Object = "application/json"))),
    responses(
        (status = 201, description = "A new version", body = VersionSummary),
        (status = 200, description = "The newest version already has this content", body = VersionSummary),
        (status = 400, description = "Invalid definition; one entry per error", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 413, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn register(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    caller.require(Action::RegisterWorkflow)?;
    let raw = body::bytes(raw, app.settings.max_body_bytes)?;
    let (file, text) = document(&headers, &raw)?;
    let label = app.metrics.tenant(&caller.tenant);
    let count = |outcome: &str| {
        app.metrics
            .registrations
            .with_label_values(&[label.as_str(), outcome])
            .inc()
    };
    let outcome = app
        .registry
        .register(&caller.tenant, file, text, &caller.subject, Utc::now())
        .await
        .map_err(|e| {
            count(if matches!(e, RegisterError::Invalid(_)) {
                "invalid"
            } else {
                "unavailable"
            });
            register_error(e)
        })?;
    let (Registered::Created(v) | Registered::Unchanged(v)) = &outcome;
    if app
        .catalog
        .state(&caller.tenant, &v.record.workflow)
        .is_some_and(|s| s.deleted)
    {
        undelete(&app, &caller, &v.record.workflow).await?;
    }
    let (status, v) = match outcome {
        Registered::Created(v) => {
            count("created");
            crate::audit::record(
                &app.publisher,
                &caller,
                AuditAction::WorkflowRegistered,
                &format!("{}/{}", v.record.workflow, v.record.version),
                json!({"content_hash": v.record.content_hash}),
            )
            .await;
            (StatusCode::CREATED, v)
        }
        Registered::Unchanged(v) => {
            count("unchanged");
            (StatusCode::OK, v)
        }
    };
    let location = format!(
        "/v1/workflows/{}/versions/{}",
        v.record.workflow, v.record.version
    );
    let mut resp = (status, Json(summary(&v))).into_response();
    if let Ok(l) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, l);
    }
    Ok(resp)
}

/// A deleted workflow registered again is back: enabled, unpinned.
async fn undelete(app: &App, caller: &Caller, workflow: &WorkflowId) -> Result<(), Problem> {
    let state = aiq_topics::WorkflowState::new(caller.tenant.clone(), workflow.clone(), Utc::now());
    app.publisher
        .send(
            aiq_topics::TopicKind::Definitions,
            &state.key(),
            &state.encode(),
        )
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    app.catalog.apply_state(state);
    Ok(())
}

/// The caller's workflows, each with its newest version.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows",
    responses((status = 200, body = [VersionSummary]), (status = 401, body = Problem)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list(
    State(app): State<App>,
    caller: Caller,
) -> Result<Json<Vec<VersionSummary>>, Problem> {
    caller.require(Action::ReadWorkflows)?;
    Ok(Json(
        app.catalog
            .list(&caller.tenant)
            .iter()
            .map(|v| {
                let mut s = summary(v);
                if let Some(state) = app.catalog.state(&caller.tenant, &v.record.workflow) {
                    s.disabled = state.disabled;
                    s.default_version = state.default_version;
                }
                s
            })
            .collect(),
    ))
}

/// One version of one of the caller's workflows.
#[utoipa::path(get, path = "/v1/workflows/{id}/versions/{version}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"),
        ("version" = u32, Path, description = "Version number", format = Int64, maximum = 4294967295.0)),
    responses((status = 200, body = VersionDetail), (status = 404, body = Problem), (status = 401, body = Problem)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get_version(
    State(app): State<App>,
    caller: Caller,
    Path((id, version)): Path<(String, u32)>,
) -> Result<Json<VersionDetail>, Problem> {
    caller.require(Action::ReadWorkflows)?;
    let not_found = || Problem::not_found(format!("workflow {id:?} has no version {version}"));
    let workflow = WorkflowId::new(id.clone()).map_err(|_| not_found())?;
    let v = app
        .catalog
        .version(&caller.tenant, &workflow, version)
        .ok_or_else(not_found)?;
    Ok(Json(VersionDetail {
        summary: summary(&v),
        definition: v.record.definition.clone(),
    }))
}
