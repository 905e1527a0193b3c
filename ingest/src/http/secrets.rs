//! Tenant secrets for connectors: set (sealed here, stored sealed in the compacted secrets
//! topic) and delete. There is no read: a value goes in once and only workers open it, at
//! the moment a step needs it.

use aiq_auth::Action;
use aiq_secrets::{SecretName, SecretRecord, SecretString};
use aiq_topics::{AuditAction, TopicKind};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::body;
use crate::http::{App, Caller};
use crate::problem::{FieldError, Problem};

/// The longest secret value, in characters.
const MAX_VALUE_CHARS: usize = 8192;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"value": "s3cr3t-api-t0ken"}))]
pub struct SecretValue {
    /// The credential; 1 to 8192 characters. Never returned by any route.
    #[schema(min_length = 1, max_length = 8192)]
    value: String,
}

#[derive(Serialize, ToSchema)]
pub struct SecretStored {
    name: String,
    /// The key that sealed it.
    key_id: String,
    updated_at: DateTime<Utc>,
}

fn name(raw: &str) -> Result<SecretName, Problem> {
    SecretName::new(raw).map_err(|e| Problem::bad_request("bad-secret-name", e.to_string()))
}

fn keyring(app: &App) -> Result<&aiq_secrets::Keyring, Problem> {
    app.keyring.as_deref().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "secrets-disabled",
            "this deployment has no secrets key (secrets.key_file), so it stores no secrets",
        )
    })
}

/// Sets one of the caller's secrets, replacing any value it had. Connector arguments
/// refer to it by name (`auth: {type: bearer, secret: NAME}`).
#[utoipa::path(put, path = "/v1/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, description = "1 to 64 of A-Z, a-z, 0-9, '_', '-', '.'",
        pattern = "^[A-Za-z0-9_.-]{1,64}$")),
    request_body = SecretValue,
    responses(
        (status = 200, body = SecretStored),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 413, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn put(
    State(app): State<App>,
    caller: Caller,
    Path(raw_name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<SecretStored>, Problem> {
    caller.require(Action::ManageSecrets)?;
    let name = name(&raw_name)?;
    let bytes = body::bytes(raw, app.settings.max_body_bytes)?;
    let req: SecretValue = body::object(&bytes)?;
    if req.value.is_empty() || req.value.chars().count() > MAX_VALUE_CHARS {
        return Err(Problem::bad_request(
            "bad-secret-value",
            format!("`value` must be 1 to {MAX_VALUE_CHARS} characters"),
        )
        .with_errors(vec![FieldError {
            pointer: "/value".into(),
            reason: format!("must be 1 to {MAX_VALUE_CHARS} characters"),
            line: None,
        }]));
    }
    let keyring = keyring(&app)?;
    let record = keyring
        .seal(
            &caller.tenant,
            &name,
            &SecretString::from(req.value),
            Utc::now(),
        )
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    app.publisher
        .send(TopicKind::Secrets, &record.key(), &record.encode())
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    crate::audit::record(
        &app.publisher,
        &caller,
        AuditAction::SecretPut,
        name.as_str(),
        serde_json::json!({"key_id": record.key_id}),
    )
    .await;
    Ok(Json(SecretStored {
        name: name.to_string(),
        key_id: record.key_id,
        updated_at: record.updated_at,
    }))
}

/// Deletes one of the caller's secrets; steps that refer to it fail from then on.
#[utoipa::path(delete, path = "/v1/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$")),
    responses(
        (status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn delete(
    State(app): State<App>,
    caller: Caller,
    Path(raw_name): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Action::ManageSecrets)?;
    let name = name(&raw_name)?;
    app.publisher
        .tombstone(
            TopicKind::Secrets,
            &SecretRecord::key_of(&caller.tenant, &name),
        )
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    crate::audit::record(
        &app.publisher,
        &caller,
        AuditAction::SecretDeleted,
        name.as_str(),
        serde_json::Value::Null,
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
