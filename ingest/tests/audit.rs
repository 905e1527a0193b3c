//! Audit events end to end: configuration changes through the real router publish to
//! the real audit topic, the sink's own store writes what was consumed, and
//! `GET /v1/audit` reads it back.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiq_auth::Role;
use aiq_kafka::tail_topic;
use aiq_testkit::{CQL, KAFKA, require_service};
use aiq_topics::{AuditAction, AuditEvent, TopicKind};
use axum::http::StatusCode;
use serde_json::{Value, json};
use support::{api, call, get, send, token};

const WORKFLOW: &str = r#"
id: order-sync
triggers:
  webhooks: [ { name: shop-paid } ]
steps:
  - id: fetch
    task: { connector: http, args: { url: "https://shop/x" } }
"#;

type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

async fn wait_for(seen: &Seen, n: usize) -> Vec<(String, Vec<u8>)> {
    for _ in 0..400 {
        if seen.lock().unwrap().len() >= n {
            return seen.lock().unwrap().clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the audit topic got {} records, expected {n}",
        seen.lock().unwrap().len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_changes_are_audited_without_secret_values() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let api = api(brokers, cql, "audit").await;
    let seen: Seen = Arc::default();
    let into = seen.clone();
    let _tail = tail_topic(
        &api.kafka,
        api.kafka.topics().name(TopicKind::Audit),
        move |r| {
            let key = String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned();
            into.lock()
                .unwrap()
                .push((key, r.payload.unwrap_or_default().to_vec()));
        },
    )
    .await
    .unwrap();
    let admin = token("acme", Role::TenantAdmin);
    let r = &api.router;

    let (status, _, body) = call(
        r,
        send(
            "POST",
            "/v1/workflows",
            &admin,
            "application/yaml",
            WORKFLOW.into(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The same content again changes nothing and is not audited.
    let (status, _, _) = call(
        r,
        send(
            "POST",
            "/v1/workflows",
            &admin,
            "application/yaml",
            WORKFLOW.into(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let value = "sk_live_Zq81-audit-never-in-clear";
    let put = json!({ "value": value }).to_string();
    let (status, _, body) = call(
        r,
        send(
            "PUT",
            "/v1/secrets/crm-token",
            &admin,
            "application/json",
            put,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, _, created) = call(
        r,
        send(
            "POST",
            "/v1/api-keys",
            &admin,
            "application/json",
            "{}".into(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    let api_key = created["key"].as_str().unwrap().to_owned();
    let (status, _, _) = call(
        r,
        send(
            "DELETE",
            &format!("/v1/api-keys/{key_id}"),
            &admin,
            "application/json",
            String::new(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, _, hook) = call(
        r,
        send(
            "PUT",
            "/v1/hooks/shop-paid/secret",
            &admin,
            "application/json",
            String::new(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{hook}");
    let hook_secret = hook["secret"].as_str().unwrap().to_owned();

    let (status, _, _) = call(
        r,
        send(
            "DELETE",
            "/v1/secrets/crm-token",
            &admin,
            "application/json",
            String::new(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Six changes, and an `api_call` for each of the seven mutating calls (the
    // unchanged registration included); nothing more.
    wait_for(&seen, 13).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let records = seen.lock().unwrap().clone();
    assert_eq!(records.len(), 13);
    let mut events = Vec::new();
    let mut calls = Vec::new();
    for (key, payload) in &records {
        assert_eq!(key, "acme", "keyed by tenant");
        let text = String::from_utf8_lossy(payload);
        for secret in [value, api_key.as_str(), hook_secret.as_str()] {
            assert!(!text.contains(secret), "a secret in {text}");
        }
        let e = AuditEvent::decode(payload).unwrap();
        if e.action == AuditAction::ApiCall {
            calls.push(e);
        } else {
            events.push(e);
        }
    }
    assert_eq!(calls.len(), 7, "{calls:?}");
    for c in &calls {
        assert_eq!(c.actor, "dev:acme:tenant_admin");
        assert!(c.request_id.is_some() && c.outcome.is_some(), "{c:?}");
        assert!(
            c.subject.starts_with("POST ")
                || c.subject.starts_with("PUT ")
                || c.subject.starts_with("DELETE "),
            "{c:?}"
        );
    }
    events.sort_by_key(|e| e.at);
    let summary: Vec<(AuditAction, &str)> = events
        .iter()
        .map(|e| (e.action, e.subject.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (AuditAction::WorkflowRegistered, "order-sync/1"),
            (AuditAction::SecretPut, "crm-token"),
            (AuditAction::ApiKeyCreated, key_id.as_str()),
            (AuditAction::ApiKeyRevoked, key_id.as_str()),
            (AuditAction::WebhookSecretSet, "shop-paid"),
            (AuditAction::SecretDeleted, "crm-token"),
        ]
    );
    for e in &events {
        assert_eq!(e.tenant.as_str(), "acme");
        assert_eq!(e.actor, "dev:acme:tenant_admin");
    }
    assert_eq!(events[1].detail, json!({"key_id": "k1"}));
    assert_eq!(events[2].detail, json!({"role": "user"}));
    assert!(events[0].detail["content_hash"].is_string());

    // The sink's own store writes what the topic held; the API reads it back.
    let store = aiq_sink::Store::new(api.session.clone(), &api.cql.keyspace)
        .await
        .unwrap();
    let retention = aiq_sink::RetentionSettings::default();
    let writes: Vec<_> = events
        .iter()
        .map(|e| aiq_sink::store::audit(e, &retention))
        .collect();
    let metrics = Arc::new(aiq_sink::metrics::Metrics::new(&prometheus::Registry::new()));
    store.execute(Arc::new(writes), 4, &metrics).await.unwrap();

    let (status, _, body) = call(r, get("/v1/audit", &admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: Vec<String> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let newest_first: Vec<String> = events.iter().rev().map(|e| e.id.to_string()).collect();
    assert_eq!(listed, newest_first);
    assert_eq!(body["next_page_token"], Value::Null);
    let first = &body["events"][0];
    assert_eq!(first["action"], "secret_deleted");
    assert_eq!(first["subject"], "crm-token");
    assert_eq!(first["actor"], "dev:acme:tenant_admin");
    assert_eq!(body["events"][4]["detail"], json!({"key_id": "k1"}));

    // Pages of two hold the same events.
    let (_, _, page) = call(r, get("/v1/audit?limit=2", &admin)).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let next = page["next_page_token"].as_str().unwrap();
    let (_, _, page2) = call(
        r,
        get(&format!("/v1/audit?limit=2&page_token={next}"), &admin),
    )
    .await;
    assert_eq!(page2["events"][0]["id"], listed[2].as_str());

    // Users may not read the trail; another tenant's trail is its own.
    let (status, _, _) = call(r, get("/v1/audit", &token("acme", Role::User))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, other) = call(r, get("/v1/audit", &token("globex", Role::TenantAdmin))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(other["events"], json!([]));
    let (status, _, bad) = call(r, get("/v1/audit?limit=0", &admin)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad["detail"].as_str().unwrap().contains("`limit`"));
}
