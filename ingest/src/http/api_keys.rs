//! Machine credentials for a tenant.

use aiq_auth::{Action, ApiKey, Role};
use aiq_topics::AuditAction;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::body;
use crate::http::{App, Caller};
use crate::problem::Problem;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"role": "user", "label": "erp integration"}))]
pub struct NewApiKey {
    /// `user` (default) or `tenant_admin`; platform rights never go into a key.
    #[serde(default)]
    #[schema(value_type = Option<KeyRole>)]
    role: Option<Role>,
    /// What the key is for, e.g. "erp integration".
    #[serde(default)]
    label: String,
}

/// The roles a key may have: [`Role`] without `platform_admin` (asking for it is
/// answered 403).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum KeyRole {
    User,
    TenantAdmin,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    key_id: String,
    /// Shown once; only its SHA-256 is stored. Send it as `X-API-Key`.
    key: String,
    role: KeyRole,
}

/// Creates an API key for the caller's tenant.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys",
    request_body = Option<NewApiKey>,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn create(
    State(app): State<App>,
    caller: Caller,
    raw: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedApiKey>), Problem> {
    caller.require(Action::ManageApiKeys)?;
    let raw = body::bytes(raw, app.settings.max_body_bytes)?;
    let req: NewApiKey = body::object_or_default(&raw)?;
    let role = req.role.unwrap_or(Role::User);
    // Only tenant admins and platform admins get here (ManageApiKeys); platform rights
    // never go into a tenant's key.
    let key_role = match role {
        Role::User => KeyRole::User,
        Role::TenantAdmin => KeyRole::TenantAdmin,
        Role::PlatformAdmin => {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("role {} may not create {role} keys", caller.role),
            ));
        }
    };
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    let (key, record) = ApiKey::generate(caller.tenant.clone(), role, req.label, now)
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    crate::api_keys::store(&app.store, &record)
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    crate::audit::record(
        &app.publisher,
        &caller,
        AuditAction::ApiKeyCreated,
        &record.key_id,
        serde_json::json!({"role": role.as_str()}),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            key_id: record.key_id,
            key,
            role: key_role,
        }),
    ))
}

/// Revokes one of the caller's tenant's API keys; requests with it are refused at once.
#[utoipa::path(delete, path = "/v1/api-keys/{key_id}", tag = "api-keys",
    params(("key_id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn revoke(
    State(app): State<App>,
    caller: Caller,
    axum::extract::Path(key_id): axum::extract::Path<String>,
) -> Result<StatusCode, Problem> {
    caller.require(Action::ManageApiKeys)?;
    let not_found = || Problem::not_found(format!("no API key {key_id:?}"));
    let row = app
        .store
        .api_key_row(&key_id)
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?
        .ok_or_else(not_found)?;
    // Another tenant's key does not exist, as far as this caller can tell.
    if row.1 != caller.tenant.as_str() {
        return Err(not_found());
    }
    let (id, tenant, role, hash, label, created, _) = row;
    app.store
        .put_api_key_row(&(id, tenant, role, hash, label, created, true))
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    crate::audit::record(
        &app.publisher,
        &caller,
        AuditAction::ApiKeyRevoked,
        &key_id,
        serde_json::Value::Null,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyInfo {
    key_id: String,
    role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    revoked: bool,
}

/// The caller's tenant's API keys (never the keys themselves).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys",
    responses((status = 200, body = [ApiKeyInfo]), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list(
    State(app): State<App>,
    caller: Caller,
) -> Result<Json<Vec<ApiKeyInfo>>, Problem> {
    caller.require(Action::ManageApiKeys)?;
    let rows = app
        .store
        .api_keys_of(caller.tenant.as_str())
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    Ok(Json(
        rows.into_iter()
            .map(|(key_id, role, label, created_at, revoked)| ApiKeyInfo {
                key_id,
                role,
                label,
                created_at,
                revoked,
            })
            .collect(),
    ))
}
