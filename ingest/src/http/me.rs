//! `GET /v1/me`: who the credential names and what it may do, for a client (the console)
//! that shows only the actions the caller is allowed.

use aiq_auth::Action;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::Caller;

#[derive(Serialize, ToSchema)]
pub struct Me {
    /// The tenant every call acts for.
    tenant: String,
    role: String,
    /// A token's subject or an API key's id.
    subject: String,
    /// The caller's own tenant when it acts for another (`X-AIQ-Tenant`).
    #[serde(skip_serializing_if = "Option::is_none")]
    own_tenant: Option<String>,
    /// Every action the role permits (the permission table's names).
    may: Vec<&'static str>,
}

/// The signed-in caller: tenant, role, subject and permitted actions.
#[utoipa::path(get, path = "/v1/me", tag = "tenants",
    responses((status = 200, body = Me), (status = 401, body = crate::problem::Problem)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn me(caller: Caller) -> Json<Me> {
    Json(Me {
        tenant: caller.tenant.to_string(),
        role: caller.role.to_string(),
        subject: caller.subject.clone(),
        own_tenant: caller.own_tenant.as_ref().map(ToString::to_string),
        may: Action::ALL
            .iter()
            .filter(|a| aiq_auth::permits(caller.role, **a))
            .map(|a| a.as_str())
            .collect(),
    })
}
