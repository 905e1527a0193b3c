//! The HTTP API end to end against real Kafka and Cassandra: the real router, auth,
//! limits, registry and triggers; only the TCP socket is left out.

// Test support: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiq_auth::{Action, ApiKey, JwtConfig, JwtVerifier, Role, mint_dev_token, permits};
use aiq_catalog::Definitions;
use aiq_ingest::bootstrap::{Ingest, build};
use aiq_ingest::limits::TriggerQuota;
use aiq_ingest::publisher::Publisher;
use aiq_ingest::settings::{IngestSettings, TenantOverrides};
use aiq_ingest::signature;
use aiq_kafka::{KafkaSettings, apply_topics, tail_topic};
use aiq_secrets::{ExposeSecret, Keyring, SecretRecord};
use aiq_sql::{CqlSettings, apply_schema, connect};
use aiq_testkit::{CQL, KAFKA, unique};
use aiq_topics::TenantId;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &str = "integration-test-secret-32-bytes-long";
const AUD: &str = "automateiq";

const WORKFLOW: &str = r#"
id: order-sync
input_schema:
  type: object
  required: [order_id]
  properties: { order_id: { type: integer, minimum: 1 } }
triggers:
  webhooks: [ { name: shop-paid } ]
steps:
  - id: fetch
    task: { connector: http, args: { url: "https://shop/${ input.order_id }" } }
"#;

struct Api {
    router: axum::Router,
    ingest: Ingest,
    /// Followed while the test runs.
    _definitions: Definitions,
    kafka: KafkaSettings,
    keyring: Arc<Keyring>,
}

async fn api(brokers: String, cql: String) -> Api {
    let kafka = KafkaSettings::plaintext(brokers, format!("{}.", unique("http")), 2, 2);
    apply_topics(&kafka, &kafka.topics()).await.unwrap();
    let cql = CqlSettings {
        contact_points: cql,
        keyspace: unique("http").to_lowercase(),
        replication_factor: 1,
        datacenters: vec![],
        username: None,
        password: None,
    };
    let session = connect(&cql).await.unwrap();
    apply_schema(&session, &cql, chrono::Utc::now())
        .await
        .unwrap();
    let settings = IngestSettings {
        max_body_bytes: 64 * 1024,
        // Small, so the test can pass it with a body the body limit still takes.
        max_trigger_input_bytes: 1024,
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
        tenants: HashMap::from([(
            TenantId::new("tiny").unwrap(),
            TenantOverrides {
                trigger_quota: TriggerQuota {
                    per_second: NonZeroU32::new(1).unwrap(),
                    burst: NonZeroU32::new(2).unwrap(),
                },
            },
        )]),
    };
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
        settings,
        jwt,
        Some(keyring.clone()),
        aiq_ingest::bootstrap::Followers {
            definitions: &definitions,
            tenants: None,
            vault: None,
        },
        None,
    )
    .await
    .unwrap();
    let (router, _) = aiq_ingest::http::router(ingest.app.clone());
    Api {
        router,
        ingest,
        _definitions: definitions,
        kafka,
        keyring,
    }
}

fn token(tenant: &str, role: Role) -> String {
    let now = chrono::Utc::now().timestamp() as u64;
    mint_dev_token(SECRET, &TenantId::new(tenant).unwrap(), role, AUD, 600, now).unwrap()
}

async fn call(
    router: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, HashMap<String, String>, Value) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, body)
}

fn req(method: &str, uri: &str, bearer: Option<&str>, body: Body) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(body).unwrap()
}

async fn register(router: &axum::Router, tenant: &str) {
    let r = Request::builder()
        .method("POST")
        .uri("/v1/workflows")
        .header(
            "authorization",
            format!("Bearer {}", token(tenant, Role::TenantAdmin)),
        )
        .header("content-type", "application/yaml")
        .body(Body::from(WORKFLOW))
        .unwrap();
    let (status, _, body) = call(router, r).await;
    assert!(
        status == StatusCode::CREATED || status == StatusCode::OK,
        "{status} {body}"
    );
}

/// The API with `tenant`'s workflow registered; `None` (the test skips) without services.
async fn api_for(tenant: &str) -> Option<Api> {
    let brokers = aiq_testkit::service(KAFKA)?;
    let cql = aiq_testkit::service(CQL)?;
    let api = api(brokers, cql).await;
    register(&api.router, tenant).await;
    Some(api)
}

/// Any run id: the API only queues signals; the orchestrator decides what they reach.
const RUN: &str = "0b1f6e0e-3c5a-5d7e-9a41-2f0c1d9e8b77";

#[tokio::test(flavor = "multi_thread")]
async fn every_role_by_endpoint_cell() {
    let Some(api) = api_for("acme").await else {
        return;
    };

    for role in Role::ALL {
        let t = token("acme", role);
        let cases: Vec<(Action, Request<Body>)> = vec![
            (Action::RegisterWorkflow, {
                let mut r = req("POST", "/v1/workflows", Some(&t), Body::from(WORKFLOW));
                r.headers_mut()
                    .insert("content-type", "application/yaml".parse().unwrap());
                r
            }),
            (
                Action::ReadWorkflows,
                req("GET", "/v1/workflows", Some(&t), Body::empty()),
            ),
            (
                Action::ReadWorkflows,
                req(
                    "GET",
                    "/v1/workflows/order-sync/versions/1",
                    Some(&t),
                    Body::empty(),
                ),
            ),
            (
                Action::StartRun,
                req(
                    "POST",
                    "/v1/workflows/order-sync/runs",
                    Some(&t),
                    Body::from(r#"{"input":{"order_id":1}}"#),
                ),
            ),
            (
                Action::ManageWebhooks,
                req("PUT", "/v1/hooks/shop-paid/secret", Some(&t), Body::empty()),
            ),
            (
                Action::ManageSecrets,
                req(
                    "PUT",
                    "/v1/secrets/crm-token",
                    Some(&t),
                    Body::from(r#"{"value":"t0ken-value"}"#),
                ),
            ),
            (
                Action::ManageSecrets,
                req("DELETE", "/v1/secrets/crm-token", Some(&t), Body::empty()),
            ),
            (
                Action::SendSignal,
                req(
                    "POST",
                    &format!("/v1/runs/{RUN}/signals/approved"),
                    Some(&t),
                    Body::from(r#"{"payload":{"by":"ann"}}"#),
                ),
            ),
            (
                Action::CancelRun,
                req(
                    "POST",
                    &format!("/v1/runs/{RUN}/cancel"),
                    Some(&t),
                    Body::empty(),
                ),
            ),
        ];
        for (action, r) in cases {
            let what = format!("{role} {} {}", r.method(), r.uri());
            let (status, _, body) = call(&api.router, r).await;
            if permits(role, action) {
                assert!(status.is_success(), "{what}: {status} {body}");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
                assert_eq!(body["type"], "https://automateiq.dev/problems/forbidden");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_tenants_credentials_reach_nothing_of_anothers() {
    let Some(api) = api_for("acme").await else {
        return;
    };
    let globex = token("globex", Role::TenantAdmin);

    let (s, _, body) = call(
        &api.router,
        req("GET", "/v1/workflows", Some(&globex), Body::empty()),
    )
    .await;
    assert_eq!((s, body), (StatusCode::OK, json!([])));
    let (s, _, _) = call(
        &api.router,
        req(
            "GET",
            "/v1/workflows/order-sync/versions/1",
            Some(&globex),
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(
        &api.router,
        req(
            "POST",
            "/v1/workflows/order-sync/runs",
            Some(&globex),
            Body::from(r#"{"input":{"order_id":1}}"#),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Naming another tenant is refused unless the caller is a platform admin.
    let mut r = req("GET", "/v1/workflows", Some(&globex), Body::empty());
    r.headers_mut()
        .insert("x-aiq-tenant", "acme".parse().unwrap());
    let (s, _, body) = call(&api.router, r).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let mut r = req(
        "GET",
        "/v1/workflows",
        Some(&token("ops", Role::PlatformAdmin)),
        Body::empty(),
    );
    r.headers_mut()
        .insert("x-aiq-tenant", "acme".parse().unwrap());
    let (s, _, body) = call(&api.router, r).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body[0]["workflow"], "order-sync");
    // The tenant in a body is ignored: the run starts for the credential's tenant only.
    let (s, _, _) = call(
        &api.router,
        req(
            "POST",
            "/v1/workflows/order-sync/runs",
            Some(&globex),
            Body::from(r#"{"input":{"order_id":1},"tenant":"acme"}"#),
        ),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "unknown body fields are refused, not obeyed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_start_once_per_key_and_bad_requests_get_clear_errors() {
    let Some(api) = api_for("acme").await else {
        return;
    };
    let user = token("acme", Role::User);
    let start = |key: &str, body: &'static str| {
        let mut r = req(
            "POST",
            "/v1/workflows/order-sync/runs",
            Some(&user),
            Body::from(body),
        );
        r.headers_mut()
            .insert("idempotency-key", key.parse().unwrap());
        r
    };
    let (s1, h1, b1) = call(&api.router, start("k1", r#"{"input":{"order_id":5}}"#)).await;
    assert_eq!(s1, StatusCode::ACCEPTED, "{b1}");
    let (s2, h2, b2) = call(&api.router, start("k1", r#"{"input":{"order_id":5}}"#)).await;
    assert_eq!(s2, StatusCode::ACCEPTED);
    assert_eq!(b1["run_id"], b2["run_id"]);
    assert!(!h1.contains_key("idempotent-replayed"));
    assert_eq!(
        h2.get("idempotent-replayed").map(String::as_str),
        Some("true")
    );

    let (s, h, b) = call(&api.router, start("k2", r#"{"input":{"order_id":5}"#)).await;
    assert_eq!(
        (s, h["content-type"].as_str()),
        (StatusCode::BAD_REQUEST, "application/problem+json")
    );
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .starts_with("the body is not valid JSON"),
        "{b}"
    );
    let (s, _, b) = call(&api.router, start("k3", r#"{"input":{"order_id":0}}"#)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        b["errors"][0],
        json!({"pointer": "/input/order_id", "reason": "0 is less than the minimum of 1"})
    );
    let big = format!(
        r#"{{"input":{{"order_id":1,"pad":"{}"}}}}"#,
        "x".repeat(100 * 1024)
    );
    let (s, _, b) = call(
        &api.router,
        req(
            "POST",
            "/v1/workflows/order-sync/runs",
            Some(&user),
            Body::from(big),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    let (s, _, _) = call(
        &api.router,
        req(
            "POST",
            "/v1/workflows/nope/runs",
            Some(&user),
            Body::from("{}"),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, h, b) = call(
        &api.router,
        req("GET", "/v1/workflows", None, Body::empty()),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(h["www-authenticate"].starts_with("Bearer"));
    let (s, _, b) = call(
        &api.router,
        req("GET", "/v1/workflows", Some("e30.e30."), Body::empty()),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_authenticate_and_rate_limits_answer_429() {
    let Some(api) = api_for("tiny").await else {
        return;
    };
    let (plain, record) =
        ApiKey::generate(TenantId::new("tiny").unwrap(), Role::User, "ci", 0).unwrap();
    aiq_ingest::api_keys::store(&api.ingest.app.store, &record)
        .await
        .unwrap();

    let start = || {
        Request::builder()
            .method("POST")
            .uri("/v1/workflows/order-sync/runs")
            .header("x-api-key", plain.as_str())
            .body(Body::from(r#"{"input":{"order_id":1}}"#))
            .unwrap()
    };
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let (s, h, _) = call(&api.router, start()).await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            retry_after = h.get("retry-after").cloned();
        }
        statuses.push(s);
    }
    assert_eq!(
        &statuses[..2],
        &[StatusCode::ACCEPTED, StatusCode::ACCEPTED]
    );
    assert!(
        statuses[2..].contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert_eq!(retry_after.as_deref(), Some("1"));

    let mut bad = start();
    bad.headers_mut().insert(
        "x-api-key",
        "aiq_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            .parse()
            .unwrap(),
    );
    let (s, _, b) = call(&api.router, bad).await;
    assert_eq!(
        (s, b["detail"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("the API key is not valid"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_check_signature_and_replay_window() {
    let Some(api) = api_for("acme").await else {
        return;
    };
    let (s, _, b) = call(
        &api.router,
        req(
            "PUT",
            "/v1/hooks/shop-paid/secret",
            Some(&token("acme", Role::TenantAdmin)),
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let secret = b["secret"].as_str().unwrap().to_owned();
    assert_eq!(b["url"], "/v1/hooks/acme/shop-paid");

    let body = r#"{"order_id":42}"#;
    let deliver = |ts: i64, sig: String, body: &'static str| {
        Request::builder()
            .method("POST")
            .uri("/v1/hooks/acme/shop-paid")
            .header("x-aiq-timestamp", ts.to_string())
            .header("x-aiq-signature", sig)
            .body(Body::from(body))
            .unwrap()
    };
    // A delivery signed with the hook's real secret.
    let signed = |ts: i64, body: &'static str| {
        deliver(
            ts,
            signature::sign(secret.as_bytes(), ts, body.as_bytes()),
            body,
        )
    };
    let now = chrono::Utc::now().timestamp();
    let (s, _, b) = call(&api.router, signed(now, body)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert!(b["run_id"].is_string());

    let (s, _, b) = call(
        &api.router,
        deliver(now, signature::sign(b"wrong", now, body.as_bytes()), body),
    )
    .await;
    assert_eq!(
        (s, b["detail"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("signature does not match the body and timestamp")
        )
    );
    let old = now - 3600;
    let (s, _, b) = call(&api.router, signed(old, body)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("outside the 300 s replay window"),
        "{b}"
    );
    let bad_json = "{nope";
    let (s, _, b) = call(&api.router, signed(now, bad_json)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, _, _) = call(&api.router, signed(now, body)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    // An unknown hook: 404 once the signature is well-formed, 401 before (the headers
    // are checked first, without any lookup).
    let mut unknown = deliver(now, signature::sign(b"any", now, body.as_bytes()), body);
    *unknown.uri_mut() = "/v1/hooks/acme/no-such-hook".parse().unwrap();
    let (s, _, _) = call(&api.router, unknown).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let mut unknown = deliver(now, "v1=00".into(), body);
    *unknown.uri_mut() = "/v1/hooks/acme/no-such-hook".parse().unwrap();
    let (s, _, _) = call(&api.router, unknown).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_down_gives_503_and_no_acceptance() {
    let Some(api) = api_for("acme").await else {
        return;
    };
    let mut dead = api.ingest.app.clone();
    let mut settings = KafkaSettings::plaintext("127.0.0.1:1", "x.", 1, 1);
    settings.client_id = "dead".into();
    let publisher = Publisher::new(&settings, Duration::from_secs(2)).unwrap();
    dead.runs.publisher = publisher.clone();
    dead.publisher = publisher;
    let (router, _) = aiq_ingest::http::router(dead);
    let (s, h, b) = call(
        &router,
        req(
            "POST",
            "/v1/workflows/order-sync/runs",
            Some(&token("acme", Role::User)),
            Body::from(r#"{"input":{"order_id":1}}"#),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(h.contains_key("retry-after"));
    let (s, _, b) = call(&router, req("GET", "/readyz", None, Body::empty())).await;
    assert_eq!(
        (s, b["kafka"].as_bool()),
        (StatusCode::SERVICE_UNAVAILABLE, Some(false))
    );
    let (s, _, b) = call(&api.router, req("GET", "/readyz", None, Body::empty())).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

/// A record's key and payload (None for a tombstone).
type KeyedRecord = (String, Option<Vec<u8>>);

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_stored_sealed_and_deleted_with_a_tombstone() {
    let Some(api) = api_for("acme").await else {
        return;
    };
    let seen: Arc<Mutex<Vec<KeyedRecord>>> = Arc::default();
    let into = seen.clone();
    let _tail = tail_topic(
        &api.kafka,
        api.kafka.topics().name(aiq_topics::TopicKind::Secrets),
        move |r| {
            let key = String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned();
            into.lock()
                .unwrap()
                .push((key, r.payload.map(<[u8]>::to_vec)));
        },
    )
    .await
    .unwrap();
    let admin = token("acme", Role::TenantAdmin);
    let value = "sk_live_Zq81-never-in-clear";
    let (status, _, body) = call(
        &api.router,
        req(
            "PUT",
            "/v1/secrets/crm-token",
            Some(&admin),
            Body::from(json!({ "value": value }).to_string()),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "crm-token");
    assert_eq!(body["key_id"], "k1");
    assert!(!body.to_string().contains(value));
    // Listed at once (the list reads the topic to its present end first), by name only.
    let list = |who: String| {
        let router = api.router.clone();
        async move {
            call(
                &router,
                req("GET", "/v1/secrets", Some(&who), Body::empty()),
            )
            .await
        }
    };
    let (status, _, body) = list(admin.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "secrets": ["crm-token"] }));
    let (status, _, body) = list(token("acme", Role::User)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let wait_for = |n: usize| {
        let seen = seen.clone();
        async move {
            for _ in 0..200 {
                if seen.lock().unwrap().len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the secrets topic did not get {n} records");
        }
    };
    wait_for(1).await;
    let (key, payload) = seen.lock().unwrap()[0].clone();
    assert_eq!(key, "acme/crm-token");
    let payload = payload.unwrap();
    // At rest it is sealed: the value is nowhere in the record, and it opens.
    assert!(!String::from_utf8_lossy(&payload).contains(value));
    let record = SecretRecord::decode(&payload).unwrap();
    assert_eq!(api.keyring.open(&record).unwrap().expose_secret(), value);

    let (status, _, body) = call(
        &api.router,
        req(
            "PUT",
            "/v1/secrets/no%2Fslash",
            Some(&admin),
            Body::from(r#"{"value":"x"}"#),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("only letters, digits"),
        "{body}"
    );
    let (status, _, body) = call(
        &api.router,
        req(
            "PUT",
            "/v1/secrets/empty",
            Some(&admin),
            Body::from(r#"{"value":""}"#),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["detail"], "`value` must be 1 to 8192 characters");
    assert_eq!(body["errors"][0]["pointer"], "/value");

    let (status, _, _) = call(
        &api.router,
        req(
            "DELETE",
            "/v1/secrets/crm-token",
            Some(&admin),
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, body) = list(admin.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({ "secrets": [] }),
        "deleted, so no longer listed"
    );
    wait_for(2).await;
    let (key, payload) = seen.lock().unwrap()[1].clone();
    assert_eq!(key, "acme/crm-token");
    assert!(payload.is_none(), "a delete is a tombstone");
}

/// Records on every partition of the triggers topic, from the watermarks.
fn triggers_written(kafka: &KafkaSettings) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", unique("watermarks"))
        .create()
        .unwrap();
    let topic = kafka
        .topics()
        .name(aiq_topics::TopicKind::Triggers)
        .to_owned();
    let partitions = kafka
        .topics()
        .get(aiq_topics::TopicKind::Triggers)
        .partitions;
    (0..partitions as i32)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .unwrap();
            high - low
        })
        .sum()
}

/// An input over `max_trigger_input_bytes` (1024 here) is refused with 413 and a problem
/// naming the field, the limit and the size, by API, by hand and by webhook alike, and
/// nothing reaches Kafka; an input at the limit is taken.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_input_gets_413_naming_the_limit_and_nothing_is_published() {
    let Some(api) = api_for("acme").await else {
        return;
    };
    let user = token("acme", Role::User);
    // 2,000 bytes of input: over the 1,024-byte input limit, under the 64 KiB body limit.
    let big = json!({"order_id": 1, "note": "x".repeat(1970)});
    let size = serde_json::to_vec(&big).unwrap().len();
    assert!(size > 1024 && size < 4096, "{size}");
    let check = |s: StatusCode, b: &Value| {
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
        assert_eq!(b["type"], "https://automateiq.dev/problems/input-too-large");
        let detail = b["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("{size} bytes")), "{detail}");
        assert!(detail.contains("at most 1024 bytes"), "{detail}");
        assert_eq!(b["errors"][0]["pointer"], "/input", "{b}");
        let reason = b["errors"][0]["reason"].as_str().unwrap();
        assert!(
            reason.contains(&size.to_string()) && reason.contains("1024"),
            "{reason}"
        );
    };
    for manual in [false, true] {
        let body = json!({"input": big, "manual": manual}).to_string();
        let (s, _, b) = call(
            &api.router,
            req(
                "POST",
                "/v1/workflows/order-sync/runs",
                Some(&user),
                Body::from(body),
            ),
        )
        .await;
        check(s, &b);
    }
    let (s, _, b) = call(
        &api.router,
        req(
            "PUT",
            "/v1/hooks/shop-paid/secret",
            Some(&token("acme", Role::TenantAdmin)),
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let secret = b["secret"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now().timestamp();
    let hook_body = big.to_string();
    let delivery = Request::builder()
        .method("POST")
        .uri("/v1/hooks/acme/shop-paid")
        .header("x-aiq-timestamp", now.to_string())
        .header(
            "x-aiq-signature",
            signature::sign(secret.as_bytes(), now, hook_body.as_bytes()),
        )
        .body(Body::from(hook_body))
        .unwrap();
    let (s, _, b) = call(&api.router, delivery).await;
    check(s, &b);
    assert_eq!(
        triggers_written(&api.kafka),
        0,
        "a refused trigger was published"
    );

    // At the limit exactly: accepted and published (so the count above could see one).
    let pad = 1024
        - serde_json::to_vec(&json!({"order_id": 1, "note": ""}))
            .unwrap()
            .len();
    let fits = json!({"order_id": 1, "note": "x".repeat(pad)});
    assert_eq!(serde_json::to_vec(&fits).unwrap().len(), 1024);
    let (s, _, b) = call(
        &api.router,
        req(
            "POST",
            "/v1/workflows/order-sync/runs",
            Some(&user),
            Body::from(json!({"input": fits}).to_string()),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(triggers_written(&api.kafka), 1);
}
