//! Webhooks: an outside system's call, checked by signature, becomes a trigger.

use aiq_topics::{TenantId, TriggerSource};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::body;
use crate::http::runs::{IDEMPOTENCY_KEY, accepted, start_error};
use crate::http::{App, Caller};
use crate::problem::Problem;
use crate::runs::StartRun;
use crate::signature::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use aiq_auth::Action;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Receives a webhook delivery. Signed with the hook's secret:
/// `X-AIQ-Timestamp: <unix seconds>` and `X-AIQ-Signature: v1=<hex HMAC-SHA256 of
/// "{timestamp}.{body}">`; a JSON body becomes the run input.
#[utoipa::path(post, path = "/v1/hooks/{tenant}/{hook}", tag = "hooks",
    params(("tenant" = String, Path), ("hook" = String, Path),
        ("X-AIQ-Timestamp" = String, Header), ("X-AIQ-Signature" = String, Header)),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 202, body = crate::http::runs::StartedRun),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 413, body = Problem), (status = 429, body = Problem), (status = 503, body = Problem),
    )
)]
pub async fn deliver(
    State(app): State<App>,
    Path((tenant, hook)): Path<(String, String)>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let unknown = || Problem::not_found(format!("no webhook {hook:?} for tenant {tenant:?}"));
    let tenant_id = TenantId::new(tenant.clone()).map_err(|_| unknown())?;
    let raw = body::bytes(raw, app.settings.max_body_bytes)?;
    let secret = app
        .store
        .webhook_secret(tenant_id.as_str(), &hook)
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?
        .ok_or_else(unknown)?;
    let label = app.metrics.tenant(&tenant_id);
    let count = |outcome: &str| {
        app.metrics
            .webhooks
            .with_label_values(&[label.as_str(), outcome])
            .inc()
    };
    signature::verify(
        secret.as_bytes(),
        header(&headers, TIMESTAMP_HEADER),
        header(&headers, SIGNATURE_HEADER),
        &raw,
        Utc::now().timestamp(),
        app.settings.webhook_replay_window_secs,
    )
    .map_err(|e| {
        count("bad_signature");
        Problem::new(StatusCode::UNAUTHORIZED, "bad-signature", e.to_string())
    })?;
    // Only a verified tenant reaches the limiter, so its map stays bounded.
    app.limiter.check(&tenant_id).map_err(|r| {
        count("rate_limited");
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("tenant {tenant} is over its trigger rate"),
        )
        .retry_after(r.header_secs())
    })?;
    let input: serde_json::Value = body::json_or_default(&raw)?;
    let version = app.catalog.by_webhook(&tenant_id, &hook).ok_or_else(|| {
        Problem::not_found(format!(
            "no registered workflow of tenant {tenant:?} declares webhook {hook:?}"
        ))
    })?;
    let workflow = version.record.workflow.clone();
    let started = app
        .runs
        .start(
            StartRun {
                tenant: tenant_id,
                workflow: workflow.clone(),
                version: Some(version.record.version),
                input,
                idempotency_key: header(&headers, IDEMPOTENCY_KEY).map(str::to_owned),
                source: TriggerSource::Webhook,
                parent_traceparent: header(&headers, aiq_topics::trace::TRACEPARENT)
                    .map(str::to_owned),
            },
            Utc::now(),
        )
        .await
        .map_err(|e| {
            count(crate::http::runs::outcome(&e));
            start_error(e)
        })?;
    count(if started.replayed {
        "replayed"
    } else {
        "accepted"
    });
    Ok(accepted(&started, &workflow))
}

#[derive(Serialize, ToSchema)]
pub struct HookSecret {
    hook: String,
    /// Shown once: sign deliveries with it.
    secret: String,
    url: String,
}

/// Creates or replaces the signing secret of one of the caller's webhooks.
#[utoipa::path(put, path = "/v1/hooks/{hook}/secret", tag = "hooks",
    params(("hook" = String, Path)),
    responses((status = 200, body = HookSecret), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn rotate_secret(
    State(app): State<App>,
    caller: Caller,
    Path(hook): Path<String>,
) -> Result<Json<HookSecret>, Problem> {
    caller.require(Action::ManageWebhooks)?;
    let slug = !hook.is_empty()
        && hook.len() <= 64
        && hook
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !slug {
        return Err(Problem::bad_request(
            "bad-hook-name",
            format!("{hook:?} must be 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.'"),
        ));
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Problem::unavailable(format!("no randomness: {e}")))?;
    let secret = format!("whsec_{}", hex::encode(bytes));
    app.store
        .put_webhook_secret(caller.tenant.as_str(), &hook, &secret, Utc::now())
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    crate::audit::record(
        &app.publisher,
        &caller,
        aiq_topics::AuditAction::WebhookSecretSet,
        &hook,
        serde_json::Value::Null,
    )
    .await;
    Ok(Json(HookSecret {
        url: format!("/v1/hooks/{}/{hook}", caller.tenant),
        hook,
        secret,
    }))
}
