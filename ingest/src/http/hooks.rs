//! Webhooks: an outside system's call, checked by signature, becomes a trigger. The
//! checks run cheapest first — the signature headers' form and age, then the in-memory
//! catalog (does a workflow declare the hook), then the cached secret — so unknown hooks
//! and unsigned calls never reach the store.

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
use crate::registry::hooks::HookSecretError;
use crate::runs::StartRun;
use crate::signature::{self, SIGNATURE_HEADER, SignatureError, TIMESTAMP_HEADER};
use aiq_auth::Action;
use aiq_secrets::{ExposeSecret, SecretString};

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn secret_error(e: HookSecretError) -> Problem {
    match e {
        HookSecretError::NoKeyring => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "secrets-disabled",
            e.to_string(),
        ),
        _ => Problem::unavailable(e.to_string()),
    }
}

/// Receives a webhook delivery. Signed with the hook's secret: `X-AIQ-Timestamp: <unix
/// seconds>` and `X-AIQ-Signature: v2=<hex HMAC-SHA256 of "v2\n{timestamp}\n{idempotency
/// key}\n{body}">` (the key empty without an `Idempotency-Key`), or `v1=<hex HMAC-SHA256
/// of "{timestamp}.{body}">` for a delivery without one; a JSON body becomes the run input.
/// The same delivery sent again within the replay window answers with its first run.
#[utoipa::path(post, path = "/v1/hooks/{tenant}/{hook}", tag = "hooks",
    params(("tenant" = String, Path), ("hook" = String, Path),
        ("X-AIQ-Timestamp" = String, Header), ("X-AIQ-Signature" = String, Header),
        ("Idempotency-Key" = Option<String>, Header, description = "Covered by a v2 signature")),
    request_body(content = Option<Value>, content_type = "application/json",
        description = "Any JSON value, the run input; empty for none"),
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
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .map(|v| {
            v.to_str().map_err(|_| {
                Problem::bad_request(
                    "bad-idempotency-key",
                    "Idempotency-Key must be visible ASCII",
                )
            })
        })
        .transpose()?;
    let bad_signature =
        |e: SignatureError| Problem::new(StatusCode::UNAUTHORIZED, "bad-signature", e.to_string());
    // The headers' form and the timestamp first: a request that cannot be a delivery
    // costs no lookup at all.
    let parsed = signature::parse(
        header(&headers, TIMESTAMP_HEADER),
        header(&headers, SIGNATURE_HEADER),
        key,
        Utc::now().timestamp(),
        app.settings.webhook_replay_window_secs,
    );
    // Only hooks a registered workflow declares (in memory) are looked up in the store,
    // so calls to unknown hooks never reach it.
    let version = app.catalog.by_webhook(&tenant_id, &hook);
    // Counted by tenant only once a workflow of the tenant declares the hook: anyone can
    // call, and tenant labels are a bounded set.
    let label = version.as_ref().map(|_| app.metrics.tenant(&tenant_id));
    let count = |outcome: &str| {
        if let Some(label) = &label {
            app.metrics
                .webhooks
                .with_label_values(&[label.as_str(), outcome])
                .inc()
        }
    };
    let signed = parsed.map_err(|e| {
        count("bad_signature");
        bad_signature(e)
    })?;
    let version = version.ok_or_else(unknown)?;
    let secret = app
        .hooks
        .get(tenant_id.as_str(), &hook)
        .await
        .map_err(secret_error)?
        .ok_or_else(unknown)?;
    if let Err(e) = signed.verify(secret.expose_secret().as_bytes(), &raw) {
        // Perhaps rotated through another process since it was cached.
        let newer = app
            .hooks
            .reread(tenant_id.as_str(), &hook, &secret)
            .await
            .map_err(secret_error)?;
        let verified = newer.map_or(Err(e), |s| {
            signed.verify(s.expose_secret().as_bytes(), &raw)
        });
        verified.map_err(|e| {
            count("bad_signature");
            bad_signature(e)
        })?;
    }
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
    let workflow = version.record.workflow.clone();
    let started = app
        .runs
        .start(
            StartRun {
                tenant: tenant_id,
                workflow: workflow.clone(),
                version: Some(version.record.version),
                input,
                // The sender's key (covered by the signature), or one made from the
                // signature: a replay within the window finds the first run.
                idempotency_key: Some(signed.delivery_key()),
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

/// Creates or replaces the signing secret of one of the caller's webhooks; it is stored
/// sealed with the secrets key (503 `secrets-disabled` without `secrets.key_file`).
#[utoipa::path(put, path = "/v1/hooks/{hook}/secret", tag = "hooks",
    params(("hook" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$")),
    responses((status = 200, body = HookSecret), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 503, body = Problem)),
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
    // Stored sealed; this process verifies with it from now on, others within a minute
    // or at the first delivery signed with it.
    app.hooks
        .put(
            caller.tenant.as_str(),
            &hook,
            SecretString::from(secret.clone()),
            Utc::now(),
        )
        .await
        .map_err(secret_error)?;
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
