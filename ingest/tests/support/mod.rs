//! The real App over a fresh keyspace and topic prefix, shared by the history, SQL and
//! audit tests; requests go through the real router without a socket.

#![allow(dead_code)]

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use aiq_auth::{JwtConfig, JwtVerifier, Role, mint_dev_token};
use aiq_catalog::Definitions;
use aiq_ingest::bootstrap::{Ingest, build};
use aiq_ingest::limits::TriggerQuota;
use aiq_ingest::settings::IngestSettings;
use aiq_kafka::{KafkaSettings, apply_topics};
use aiq_secrets::Keyring;
use aiq_sql::{CqlSettings, apply_schema, connect};
use aiq_testkit::unique;
use aiq_topics::TenantId;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use scylla::client::session::Session;
use serde_json::Value;
use tower::ServiceExt;

pub const SECRET: &str = "integration-test-secret-32-bytes-long";
pub const AUD: &str = "automateiq";

pub struct Api {
    pub router: axum::Router,
    pub ingest: Ingest,
    /// Followed while the test runs.
    pub definitions: Definitions,
    pub kafka: KafkaSettings,
    pub cql: CqlSettings,
    pub session: Arc<Session>,
}

pub fn settings() -> IngestSettings {
    IngestSettings {
        max_body_bytes: 64 * 1024,
        max_trigger_input_bytes: 32 * 1024,
        max_concurrent_exports: 2,
        ack_timeout_ms: 5000,
        webhook_replay_window_secs: 300,
        idempotency_stale_after_ms: 30_000,
        jwt_audience: AUD.into(),
        jwt_issuer: None,
        console_client_id: None,
        console_scope: None,
        console_resource: None,
        jwks: None,
        jwks_refresh_secs: 600,
        allow_dev_tokens_with_jwks: false,
        jwt_claims: Default::default(),
        issuers: Vec::new(),
        open_tenants: true,
        trigger_quota: TriggerQuota {
            per_second: NonZeroU32::new(1000).unwrap(),
            burst: NonZeroU32::new(1000).unwrap(),
        },
        tenants: HashMap::new(),
    }
}

/// The App over a new keyspace and topic prefix named after `label`.
pub async fn api(brokers: String, contact_points: String, label: &str) -> Api {
    api_with(brokers, contact_points, label, None).await
}

/// The App as [`api`] makes it, serving SQL with `analytics`.
pub async fn api_with(
    brokers: String,
    contact_points: String,
    label: &str,
    analytics: Option<Arc<aiq_analytics::Analytics>>,
) -> Api {
    let kafka = KafkaSettings::plaintext(brokers, format!("{}.", unique(label)), 2, 2);
    apply_topics(&kafka, &kafka.topics()).await.unwrap();
    let cql = CqlSettings {
        contact_points,
        keyspace: unique(label).to_lowercase(),
        replication_factor: 1,
        datacenters: vec![],
        username: None,
        password: None,
    };
    let session = Arc::new(connect(&cql).await.unwrap());
    apply_schema(&session, &cql, chrono::Utc::now())
        .await
        .unwrap();
    let jwt = JwtVerifier::new(JwtConfig {
        audience: AUD.into(),
        hs256_secret: Some(SECRET.into()),
        ..JwtConfig::default()
    })
    .unwrap();
    let keyring = Arc::new(Keyring::generate("k1").unwrap());
    let definitions = aiq_catalog::spawn(&kafka).await.unwrap();
    let ingest = build(
        &kafka,
        &cql,
        settings(),
        jwt,
        Some(keyring),
        aiq_ingest::bootstrap::Followers {
            definitions: &definitions,
            tenants: None,
            vault: None,
        },
        analytics,
    )
    .await
    .unwrap();
    let (router, _) = aiq_ingest::http::router(ingest.app.clone());
    Api {
        router,
        ingest,
        definitions,
        kafka,
        cql,
        session,
    }
}

pub fn token(tenant: &str, role: Role) -> String {
    let now = chrono::Utc::now().timestamp() as u64;
    mint_dev_token(SECRET, &TenantId::new(tenant).unwrap(), role, AUD, 600, now).unwrap()
}

/// Status, content type and body (JSON when it parses, else a string).
pub async fn call(router: &axum::Router, req: Request<Body>) -> (StatusCode, String, Value) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, content_type, body)
}

pub fn get(uri: &str, bearer: &str) -> Request<Body> {
    Request::builder()
        .method("GET")
        .uri(uri)
        .header("authorization", format!("Bearer {bearer}"))
        .body(Body::empty())
        .unwrap()
}

pub fn send(
    method: &str,
    uri: &str,
    bearer: &str,
    content_type: &str,
    body: String,
) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {bearer}"))
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap()
}
