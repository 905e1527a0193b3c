//! Webhook security end to end against real Kafka and Cassandra, through the real router:
//! signing secrets sealed at rest (old plain rows still read), the `Idempotency-Key`
//! covered by the signature, a replayed delivery starting no second run, and unknown or
//! unsigned calls answered without a store read.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use aiq_auth::Role;
use aiq_ingest::http::App;
use aiq_ingest::registry::hooks::{REREAD_AFTER, WebhookSecrets};
use aiq_ingest::signature::{sign, sign_v2};
use aiq_testkit::{CQL, KAFKA, require_service, unique};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use support::{Api, call, send, token};
use tower::ServiceExt;

const WORKFLOW: &str = r#"
id: order-sync
triggers:
  webhooks: [ { name: shop-paid }, { name: legacy }, { name: copied } ]
steps:
  - id: fetch
    task: { connector: http, args: { url: "https://shop/x" } }
"#;

async fn setup(label: &str) -> Api {
    let brokers = aiq_testkit::service(KAFKA).unwrap();
    let cql = aiq_testkit::service(CQL).unwrap();
    let api = support::api(brokers, cql, label).await;
    let (s, _, b) = call(
        &api.router,
        send(
            "POST",
            "/v1/workflows",
            &token("acme", Role::TenantAdmin),
            "application/yaml",
            WORKFLOW.into(),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    api
}

/// The App as another process would have it: the same store and keys, an empty cache.
fn fresh(app: &App) -> App {
    let mut other = app.clone();
    other.hooks = Arc::new(WebhookSecrets::new(app.store.clone(), app.keyring.clone()));
    other
}

fn router(app: &App) -> axum::Router {
    aiq_ingest::http::router(app.clone()).0
}

async fn rotate(router: &axum::Router, hook: &str) -> String {
    let (s, _, b) = call(
        router,
        send(
            "PUT",
            &format!("/v1/hooks/{hook}/secret"),
            &token("acme", Role::TenantAdmin),
            "application/json",
            String::new(),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["secret"].as_str().unwrap().to_owned()
}

/// A delivery with the given headers; status, `idempotent-replayed`, body.
async fn deliver(
    router: &axum::Router,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (StatusCode, bool, Value) {
    let mut r = Request::builder().method("POST").uri(path);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let resp = router
        .clone()
        .oneshot(r.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let replayed = resp.headers().contains_key("idempotent-replayed");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, replayed, body)
}

fn v1(secret: &str, body: &str) -> Vec<(&'static str, String)> {
    let now = chrono::Utc::now().timestamp();
    vec![
        ("x-aiq-timestamp", now.to_string()),
        (
            "x-aiq-signature",
            sign(secret.as_bytes(), now, body.as_bytes()),
        ),
    ]
}

fn v2(secret: &str, key: &str, body: &str) -> Vec<(&'static str, String)> {
    let now = chrono::Utc::now().timestamp();
    vec![
        ("x-aiq-timestamp", now.to_string()),
        (
            "x-aiq-signature",
            sign_v2(secret.as_bytes(), now, key, body.as_bytes()),
        ),
        ("idempotency-key", key.to_owned()),
    ]
}

async fn stored_secret(api: &Api, hook: &str) -> String {
    let rows = api
        .session
        .query_unpaged(
            format!(
                "SELECT secret FROM {}.webhook_secrets WHERE tenant = 'acme' AND hook = ?",
                api.cql.keyspace
            ),
            (hook,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    rows.first_row::<(String,)>().unwrap().0
}

const HOOK: &str = "/v1/hooks/acme/shop-paid";

#[tokio::test(flavor = "multi_thread")]
async fn signing_secrets_are_sealed_at_rest_and_old_plain_rows_still_verify() {
    let _ = require_service!(KAFKA);
    let _ = require_service!(CQL);
    let api = setup("hooksealed").await;
    let app = &api.ingest.app;
    let secret = rotate(&api.router, "shop-paid").await;

    let stored = stored_secret(&api, "shop-paid").await;
    assert!(stored.starts_with("aiq-sealed:v1:"), "{stored}");
    assert!(!stored.contains(&secret["whsec_".len()..]), "{stored}");

    // Another process, with nothing cached, opens the sealed row and verifies with it.
    let other = router(&fresh(app));
    let (s, _, b) = deliver(&other, HOOK, &v1(&secret, "{}"), "{}").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");

    // A row written before secrets were sealed holds the plain value: still read.
    app.store
        .put_webhook_secret(
            "acme",
            "legacy",
            "whsec_written_in_plain",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let (s, _, b) = deliver(
        &other,
        "/v1/hooks/acme/legacy",
        &v1("whsec_written_in_plain", "{}"),
        "{}",
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");

    // A sealed row copied to another hook does not open there.
    app.store
        .put_webhook_secret("acme", "copied", &stored, chrono::Utc::now())
        .await
        .unwrap();
    let (s, _, b) = deliver(&other, "/v1/hooks/acme/copied", &v1(&secret, "{}"), "{}").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(
        b["detail"].as_str().unwrap().contains("does not open"),
        "{b}"
    );

    // Without a secrets key, no secret is created (and none stored in plain).
    let mut keyless = app.clone();
    keyless.keyring = None;
    keyless.hooks = Arc::new(WebhookSecrets::new(app.store.clone(), None));
    let (s, _, b) = call(
        &router(&keyless),
        send(
            "PUT",
            "/v1/hooks/shop-paid/secret",
            &token("acme", Role::TenantAdmin),
            "application/json",
            String::new(),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(
        b["type"].as_str().unwrap().ends_with("/secrets-disabled"),
        "{b}"
    );
    assert_eq!(stored_secret(&api, "shop-paid").await, stored);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_delivery_starts_no_second_run_and_the_key_is_signed() {
    let _ = require_service!(KAFKA);
    let _ = require_service!(CQL);
    let api = setup("hookreplay").await;
    let secret = rotate(&api.router, "shop-paid").await;
    let r = &api.router;
    let body = r#"{"order_id":42}"#;

    // Sent twice as it is (a retry, or someone replaying it within the window): one run.
    let headers = v1(&secret, body);
    let (s, replayed, first) = deliver(r, HOOK, &headers, body).await;
    assert_eq!((s, replayed), (StatusCode::ACCEPTED, false), "{first}");
    let (s, replayed, again) = deliver(r, HOOK, &headers, body).await;
    assert_eq!((s, replayed), (StatusCode::ACCEPTED, true), "{again}");
    assert_eq!(first["run_id"], again["run_id"]);

    // A key added beside a v1 signature is not covered by it: refused.
    let mut with_key = headers.clone();
    with_key.push(("idempotency-key", "another-run".into()));
    let (s, _, b) = deliver(r, HOOK, &with_key, body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .starts_with("header Idempotency-Key is not covered by a v1 signature"),
        "{b}"
    );

    // v2 covers the key: the sender's key names the run, and another key with the same
    // signature does not verify.
    let keyed = v2(&secret, "order-42", body);
    let (s, replayed, k1) = deliver(r, HOOK, &keyed, body).await;
    assert_eq!((s, replayed), (StatusCode::ACCEPTED, false), "{k1}");
    assert_ne!(k1["run_id"], first["run_id"]);
    let (s, replayed, k2) = deliver(r, HOOK, &keyed, body).await;
    assert_eq!(
        (s, replayed, &k2["run_id"]),
        (StatusCode::ACCEPTED, true, &k1["run_id"])
    );
    let mut swapped = keyed.clone();
    swapped[2].1 = "order-43".into();
    let (s, _, b) = deliver(r, HOOK, &swapped, body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert_eq!(
        b["detail"],
        "signature does not match the body and timestamp"
    );

    // Unsigned, stale, or signed with another secret: refused.
    let (s, _, _) = deliver(r, HOOK, &[], body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let old = chrono::Utc::now().timestamp() - 3600;
    let stale = vec![
        ("x-aiq-timestamp", old.to_string()),
        (
            "x-aiq-signature",
            sign(secret.as_bytes(), old, body.as_bytes()),
        ),
    ];
    let (s, _, b) = deliver(r, HOOK, &stale, body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        b["detail"].as_str().unwrap().contains("replay window"),
        "{b}"
    );
    let (s, _, _) = deliver(r, HOOK, &v1("whsec_wrong", body), body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Two runs were written in all.
    assert_eq!(support_triggers(&api), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_hooks_and_unsigned_calls_never_read_the_store() {
    let _ = require_service!(KAFKA);
    let _ = require_service!(CQL);
    let api = setup("hookcache").await;
    let secret = rotate(&api.router, "shop-paid").await;
    let app = fresh(&api.ingest.app);
    let r = router(&app);
    let body = "{}";
    let signed = v1(&secret, body);
    for _ in 0..20 {
        // A hook no workflow declares, signed or not; a tenant that does not exist.
        for path in ["/v1/hooks/acme/no-such-hook", "/v1/hooks/nobody/shop-paid"] {
            let (s, _, _) = deliver(&r, path, &signed, body).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        }
        let (s, _, _) = deliver(&r, "/v1/hooks/acme/no-such-hook", &[], body).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        // The declared hook without a signature, or with a malformed one.
        let (s, _, _) = deliver(&r, HOOK, &[], body).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let mut malformed = signed.clone();
        malformed[1].1 = "v1=00".into();
        let (s, _, _) = deliver(&r, HOOK, &malformed, body).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.hooks.store_reads(), 0);

    // The first real delivery reads the secret once; later ones, and well-formed
    // forgeries, use the cached secret.
    let started = std::time::Instant::now();
    let (s, _, b) = deliver(&r, HOOK, &signed, body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    for i in 0..20 {
        let b = format!("{{\"n\":{i}}}");
        let (s, _, _) = deliver(&r, HOOK, &v1(&secret, &b), &b).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        let (s, _, _) = deliver(&r, HOOK, &v1("whsec_forged", &b), &b).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // One read, and at most one more per REREAD_AFTER of forgeries.
    let bound = 2 + started.elapsed().as_millis() / REREAD_AFTER.as_millis();
    let reads = u128::from(app.hooks.store_reads());
    assert!(reads <= bound, "{reads} store reads, more than {bound}");

    // Rotated through another process: picked up at the first delivery signed with the
    // new secret once the cached one is REREAD_AFTER old.
    let rotated = rotate(&api.router, "shop-paid").await;
    tokio::time::sleep(REREAD_AFTER + Duration::from_millis(200)).await;
    let (s, _, b) = deliver(&r, HOOK, &v1(&rotated, body), body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let (s, _, _) = deliver(&r, HOOK, &v1(&secret, "{\"old\":1}"), "{\"old\":1}").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the old secret is gone");
}

fn support_triggers(api: &Api) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = api
        .kafka
        .client_config()
        .set("group.id", unique("watermarks"))
        .create()
        .unwrap();
    let topics = api.kafka.topics();
    let topic = topics.name(aiq_topics::TopicKind::Triggers).to_owned();
    let partitions = topics.get(aiq_topics::TopicKind::Triggers).partitions;
    (0..partitions as i32)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .unwrap();
            high - low
        })
        .sum()
}
