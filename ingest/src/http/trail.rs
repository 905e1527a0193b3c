//! The access half of the audit trail: every mutating call under `/v1` (whatever its
//! outcome, once the caller is known), and every call a platform admin makes for
//! another tenant (reads included), becomes an `api_call` audit event under the tenant
//! acted on: who, acting from which tenant, the route, the request id and the status.
//! The change events the handlers record (`workflow_registered`, ...) say what changed;
//! these say who called.
//!
//! A call whose credential was refused names no tenant and is not recorded here (its
//! 401 is logged and counted); a webhook delivery is recorded once its signature
//! verified (2xx), under the tenant of its URL.
//!
//! The event is published after the answer, off the request's path: a run start does
//! not wait for a second Kafka acknowledgement. A process that dies in between loses
//! the event (the change events and `run_started`, written by the orchestrator in the
//! run's own transaction, are not lost that way). At most [`MAX_IN_FLIGHT`] such
//! publishes run at once; past that a request publishes its own event before it
//! answers, so a flood slows its callers instead of queueing without bound. A call
//! refused by a rate limit (429) is not recorded: it changed nothing, and recording
//! each would let a flood write the trail as fast as it is refused.

use std::sync::{Arc, Mutex};

use aiq_auth::Role;
use aiq_topics::{AuditAction, AuditEvent, TenantId};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use uuid::Uuid;

use crate::caller::Caller;
use crate::http::App;

/// The request id's header, read from the request (when a proxy set one) and set on
/// the answer.
pub const REQUEST_ID: &str = "x-request-id";
/// Longest request id kept from a request; a longer one is replaced.
const MAX_REQUEST_ID: usize = 128;
/// Longest path kept in an event.
const MAX_PATH: usize = 512;
/// Events published in the background at once, per process.
pub const MAX_IN_FLIGHT: usize = 1024;

static IN_FLIGHT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_IN_FLIGHT);

/// Where the `Caller` extractor leaves the caller it established, for this layer.
#[derive(Clone, Default)]
pub struct CallerSlot(Arc<Mutex<Option<Caller>>>);

impl CallerSlot {
    pub fn set(&self, caller: &Caller) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(caller.clone());
    }

    fn take(&self) -> Option<Caller> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.is_ascii())
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned)
}

fn mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The webhook route's tenant, from `/v1/hooks/{tenant}/{hook}`.
fn hook_tenant(path: &str) -> Option<(TenantId, String)> {
    let rest = path.strip_prefix("/v1/hooks/")?;
    let (tenant, hook) = rest.split_once('/')?;
    Some((TenantId::new(tenant).ok()?, hook.to_owned()))
}

pub async fn record(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let method = req.method().clone();
    let path: String = req.uri().path().chars().take(MAX_PATH).collect();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| path.clone(), |m| m.as_str().to_owned());
    let slot = CallerSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    if !path.starts_with("/v1/") {
        return resp;
    }
    let status = resp.status();
    if status == axum::http::StatusCode::TOO_MANY_REQUESTS {
        return resp;
    }
    let (tenant, actor, own_tenant) = match slot.take() {
        Some(c) => {
            let cross = c.role == Role::PlatformAdmin && c.own_tenant.is_some();
            if !mutating(&method) && !cross {
                return resp;
            }
            (c.tenant, c.subject, c.own_tenant)
        }
        None if route == "/v1/hooks/{tenant}/{hook}" && status.is_success() => {
            match hook_tenant(&path) {
                Some((tenant, hook)) => (tenant, format!("webhook:{hook}"), None),
                None => return resp,
            }
        }
        None => return resp,
    };
    let event = AuditEvent {
        id: Uuid::new_v4(),
        tenant,
        at: Utc::now(),
        actor,
        action: AuditAction::ApiCall,
        subject: format!("{method} {route}"),
        detail: serde_json::json!({"path": path}),
        actor_tenant: own_tenant,
        request_id: Some(id),
        outcome: Some(status.as_u16().to_string()),
    };
    let publisher = app.publisher.clone();
    let publish = async move {
        if let Err(e) = crate::audit::publish(&publisher, &event).await {
            tracing::error!(tenant = %event.tenant, subject = %event.subject, request_id = ?event.request_id, error = %e, "api_call audit event not published");
        }
    };
    match IN_FLIGHT.try_acquire() {
        Ok(permit) => {
            tokio::spawn(async move {
                publish.await;
                drop(permit);
            });
        }
        Err(_) => publish.await,
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_is_kept_only_when_sane_and_a_hook_names_its_tenant() {
        let req = |v: &str| {
            axum::http::Request::builder()
                .header(REQUEST_ID, v)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert_eq!(request_id(&req("abc-123")), "abc-123");
        assert_ne!(request_id(&req(&"x".repeat(200))), "x".repeat(200));
        assert_eq!(
            hook_tenant("/v1/hooks/acme/orders"),
            Some((TenantId::new("acme").unwrap(), "orders".into()))
        );
        assert_eq!(hook_tenant("/v1/hooks/acme"), None);
        assert!(mutating(&Method::POST) && !mutating(&Method::GET));
    }
}
