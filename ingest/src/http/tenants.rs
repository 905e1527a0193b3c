//! The tenant registry: onboarding in one call (the answer carries the tenant's first
//! `tenant_admin` API key), plans that change live, suspension. Platform admins only,
//! but a tenant admin may read its own tenant. Every change is audited under the tenant
//! it changed.

use aiq_auth::{Action, Role};
use aiq_topics::{AuditAction, IdentityProvider, Plan, TenantId, TenantRecord};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::{App, Caller, body};
use crate::problem::{FieldError, Problem};
use crate::tenants::{NewTenant, TenantError, TenantPatch};

/// A tenant's limits; each field left out is the deployment's default.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // the document's shape of `aiq_topics::Plan`
pub struct PlanDoc {
    /// Sustained triggers per second accepted.
    #[schema(minimum = 1)]
    trigger_per_second: Option<u32>,
    /// Triggers accepted at once on top of the rate.
    #[schema(minimum = 1)]
    trigger_burst: Option<u32>,
    #[schema(minimum = 1)]
    max_concurrent_runs: Option<u32>,
    #[schema(minimum = 1)]
    max_inflight_tasks: Option<u32>,
    #[schema(minimum = 1)]
    max_queued_runs: Option<u32>,
    /// A retention class of the sink's configuration.
    retention_class: Option<String>,
    /// Connectors the tenant's steps may use; left out: all.
    allowed_connectors: Option<Vec<String>>,
    #[schema(minimum = 1)]
    sql_max_rows: Option<u32>,
    #[schema(minimum = 1)]
    sql_timeout_ms: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "acme", "display_name": "Acme Corp", "plan": {"trigger_per_second": 50, "max_concurrent_runs": 200}}))]
pub struct NewTenantBody {
    /// Letters, digits, `-` and `_`; fixed for good.
    id: String,
    display_name: String,
    #[serde(default)]
    #[schema(value_type = Option<PlanDoc>)]
    plan: Plan,
}

#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"plan": {"trigger_per_second": 5}}))]
pub struct TenantPatchBody {
    #[serde(default)]
    display_name: Option<String>,
    /// The plan fields to replace; the others stay.
    #[serde(default)]
    #[schema(value_type = Option<PlanDoc>)]
    plan: Plan,
    /// The tenant's own OpenID provider; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<IdentityDoc>)]
    identity: Option<Option<IdentityProvider>>,
}

/// A field that is present, even as `null` (`Some(None)`), apart from one left out
/// (`None`, by `#[serde(default)]`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A tenant's own OpenID provider: its tokens act for the tenant only, at most as
/// `tenant_admin`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // the document's shape of `aiq_topics::IdentityProvider`
pub struct IdentityDoc {
    /// The `iss` its tokens carry, exactly.
    issuer: String,
    /// Its JWKS (https; http only for a loopback host).
    jwks_uri: String,
    /// The `aud` its tokens carry; unset: the deployment's.
    audience: Option<String>,
    /// The claim holding the role (default `roles`).
    role_claim: Option<String>,
    /// Claim value → `user` or `tenant_admin`.
    roles: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendBody {
    /// Also cancel the tenant's runs in flight and queued (default: they go on).
    #[serde(default)]
    cancel_running: bool,
}

#[derive(Serialize, ToSchema)]
pub struct TenantView {
    id: String,
    display_name: String,
    #[schema(value_type = PlanDoc)]
    plan: Plan,
    /// `active`, `suspended` or `erased`.
    state: &'static str,
    suspended_at: Option<chrono::DateTime<Utc>>,
    created_at: chrono::DateTime<Utc>,
    updated_at: chrono::DateTime<Utc>,
    updated_by: String,
    #[schema(value_type = Option<IdentityDoc>)]
    identity: Option<IdentityProvider>,
}

impl From<TenantRecord> for TenantView {
    fn from(r: TenantRecord) -> Self {
        Self {
            id: r.id.to_string(),
            display_name: r.display_name,
            plan: r.plan,
            state: r.state.as_str(),
            suspended_at: r.suspended_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            updated_by: r.updated_by,
            identity: r.identity,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TenantList {
    tenants: Vec<TenantView>,
}

/// The first key of a new tenant: shown once.
#[derive(Serialize, ToSchema)]
pub struct FirstKey {
    key_id: String,
    /// Send it as `X-API-Key`; only its SHA-256 is stored.
    key: String,
    /// Always `tenant_admin`.
    role: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedTenant {
    tenant: TenantView,
    api_key: FirstKey,
}

pub(crate) fn problem(e: TenantError) -> Problem {
    match e {
        TenantError::Exists(_) => {
            Problem::new(StatusCode::CONFLICT, "tenant-exists", e.to_string())
        }
        TenantError::InProgress(_) => {
            Problem::new(StatusCode::CONFLICT, "in-progress", e.to_string()).retry_after(1)
        }
        TenantError::NotFound(_) => Problem::not_found(e.to_string()),
        TenantError::Erased(_) => {
            Problem::new(StatusCode::CONFLICT, "tenant-erased", e.to_string())
        }
        TenantError::Invalid { field, reason } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-tenant",
            format!("{field}: {reason}"),
        )
        .with_errors(vec![FieldError {
            pointer: format!("/{}", field.replace('.', "/")),
            reason,
            line: None,
        }]),
        TenantError::Unavailable(_) | TenantError::Store(_) | TenantError::Internal(_) => {
            Problem::unavailable(e.to_string())
        }
    }
}

fn tenant_id(raw: &str) -> Result<TenantId, Problem> {
    TenantId::new(raw).map_err(|_| Problem::not_found(format!("no tenant {raw:?}")))
}

/// Creates a tenant and its first `tenant_admin` API key: onboarding in one call.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants",
    request_body = NewTenantBody,
    responses(
        (status = 201, body = CreatedTenant),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn create(
    State(app): State<App>,
    caller: Caller,
    raw: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedTenant>), Problem> {
    caller.require(Action::ManageTenants)?;
    let req: NewTenantBody = body::object(&body::bytes(raw, app.settings.max_body_bytes)?)?;
    let id = TenantId::new(&req.id).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-tenant",
            format!("id: {e}"),
        )
        .with_errors(vec![FieldError {
            pointer: "/id".into(),
            reason: e.to_string(),
            line: None,
        }])
    })?;
    let made = app
        .tenants
        .create(
            NewTenant {
                id,
                display_name: req.display_name,
                plan: req.plan,
            },
            &caller,
            Utc::now(),
        )
        .await
        .map_err(problem)?;
    app.tenants
        .audit(&caller, &made.record, AuditAction::TenantCreated)
        .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTenant {
            tenant: made.record.into(),
            api_key: FirstKey {
                key_id: made.key_id,
                key: made.key,
                role: "tenant_admin",
            },
        }),
    ))
}

/// Every tenant, ordered by id.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants",
    responses((status = 200, body = TenantList), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list(State(app): State<App>, caller: Caller) -> Result<Json<TenantList>, Problem> {
    caller.require(Action::ManageTenants)?;
    app.tenants.catch_up().await;
    Ok(Json(TenantList {
        tenants: app
            .tenants
            .directory
            .list()
            .into_iter()
            .map(TenantView::from)
            .collect(),
    }))
}

/// One tenant: platform admins any, a tenant admin its own.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants",
    params(("id" = String, Path)),
    responses((status = 200, body = TenantView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TenantView>, Problem> {
    let own = caller.tenant.as_str() == id && caller.role == Role::TenantAdmin;
    if !own {
        caller.require(Action::ManageTenants)?;
    }
    let tenant = tenant_id(&id)?;
    let record = app
        .tenants
        .get(&tenant)
        .await
        .ok_or_else(|| Problem::not_found(format!("no tenant {id:?}")))?;
    Ok(Json(record.into()))
}

/// Changes a tenant's name or plan; in force in every process within seconds.
#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants",
    params(("id" = String, Path)),
    request_body = TenantPatchBody,
    responses(
        (status = 200, body = TenantView),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn update(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<TenantView>, Problem> {
    caller.require(Action::ManageTenants)?;
    let req: TenantPatchBody =
        body::object_or_default(&body::bytes(raw, app.settings.max_body_bytes)?)?;
    let tenant = tenant_id(&id)?;
    let record = app
        .tenants
        .update(
            &tenant,
            TenantPatch {
                display_name: req.display_name,
                plan: req.plan,
                identity: req.identity,
            },
            &caller,
            Utc::now(),
        )
        .await
        .map_err(problem)?;
    app.tenants
        .audit(&caller, &record, AuditAction::TenantUpdated)
        .await;
    Ok(Json(record.into()))
}

/// Suspends a tenant: its triggers and webhooks are refused (403 `tenant-suspended`),
/// its cron schedules pause; its runs go on unless `cancel_running`.
#[utoipa::path(post, path = "/v1/tenants/{id}/suspend", tag = "tenants",
    params(("id" = String, Path)),
    request_body = Option<SuspendBody>,
    responses(
        (status = 200, body = TenantView),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn suspend(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<TenantView>, Problem> {
    caller.require(Action::ManageTenants)?;
    let req: SuspendBody =
        body::object_or_default(&body::bytes(raw, app.settings.max_body_bytes)?)?;
    let tenant = tenant_id(&id)?;
    let record = app
        .tenants
        .suspend(&tenant, req.cancel_running, &caller, Utc::now())
        .await
        .map_err(problem)?;
    app.tenants
        .audit(&caller, &record, AuditAction::TenantSuspended)
        .await;
    Ok(Json(record.into()))
}

/// Resumes a suspended tenant: triggers are accepted and cron runs again.
#[utoipa::path(post, path = "/v1/tenants/{id}/resume", tag = "tenants",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = TenantView),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn resume(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TenantView>, Problem> {
    caller.require(Action::ManageTenants)?;
    let tenant = tenant_id(&id)?;
    let record = app
        .tenants
        .resume(&tenant, &caller, Utc::now())
        .await
        .map_err(problem)?;
    app.tenants
        .audit(&caller, &record, AuditAction::TenantResumed)
        .await;
    Ok(Json(record.into()))
}
