//! Establishing who is calling. Handlers take a [`Caller`]; it is established by
//! [`Authenticate`] from the request headers only, so the tenant never comes from a
//! request body.

use std::future::Future;
use std::pin::Pin;

use aiq_auth::AuthError;
use aiq_topics::TenantId;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};

use crate::caller::Caller;
use crate::http::App;
use crate::problem::Problem;

/// Header with which a platform admin acts for a tenant; anyone else may only name
/// their own tenant.
pub const ACTING_TENANT: &str = "x-aiq-tenant";

pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Caller, Problem>> + Send + 'a>>;

pub trait Authenticate: Send + Sync {
    /// Establishes the caller from the request headers, or refuses with 401/403/503.
    fn authenticate<'a>(&'a self, headers: &'a HeaderMap) -> AuthFuture<'a>;
}

pub fn auth_problem(e: &AuthError) -> Problem {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let slug = match status {
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        _ => "internal",
    };
    let p = Problem::new(status, slug, e.to_string());
    if status == StatusCode::UNAUTHORIZED {
        p.challenge()
    } else {
        p
    }
}

impl Authenticate for aiq_auth::Authenticator {
    fn authenticate<'a>(&'a self, headers: &'a HeaderMap) -> AuthFuture<'a> {
        Box::pin(async move {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let principal = aiq_auth::Authenticator::authenticate(
                self,
                header("authorization"),
                header("x-api-key"),
            )
            .await
            .map_err(|e| auth_problem(&e))?;
            let requested = match header(ACTING_TENANT) {
                None => None,
                Some(t) => Some(TenantId::new(t).map_err(|e| {
                    Problem::bad_request("bad-tenant", format!("header X-AIQ-Tenant: {e}"))
                })?),
            };
            let tenant = principal
                .acting_tenant(requested.as_ref())
                .map_err(|e| auth_problem(&AuthError::Access(e)))?;
            let own_tenant = (tenant != principal.tenant).then_some(principal.tenant);
            Ok(Caller {
                tenant,
                role: principal.role,
                subject: principal.subject,
                own_tenant,
            })
        })
    }
}

impl FromRequestParts<App> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let caller = app.auth.authenticate(&parts.headers).await?;
        if let Some(slot) = parts.extensions.get::<super::trail::CallerSlot>() {
            slot.set(&caller);
        }
        if !app.tenants.admits(&caller).await {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "unknown-tenant",
                format!(
                    "tenant {:?} is not registered; a platform admin creates it with POST /v1/tenants",
                    caller.tenant.as_str()
                ),
            ));
        }
        Ok(caller)
    }
}
