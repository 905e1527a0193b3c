//! Connectors through the whole pipeline on a real Kafka: a secret set the way ingest
//! sets it (sealed, on the secrets topic), an HTTP call authenticated with it, a Kafka
//! publish to the tenant's topic, and a failure for a missing secret. Then every record of
//! every topic and every log line is searched for the secret's value.
#![allow(clippy::unwrap_used)]

// The orchestrator's test environment, shared rather than copied: these tests run
// an orchestrator too.
#[path = "../../orchestrator/tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiq_connectors::{ConnectorSettings, Connectors, KafkaTarget, OutboundSettings, SecretStore};
use aiq_secrets::{Keyring, SecretName, SecretString};
use aiq_topics::{ErrorClass, Event, RunStatus, TopicKind};
use aiq_worker::WorkerSettings;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde_json::json;

const TOKEN: &str = "shop-Bearer-T0ken-9f8e7d6c";

const SYNC: &str = r#"
id: sync-order
steps:
  - id: fetch
    task:
      connector: http
      args:
        url: "${ input.base }/orders/${ string(input.n) }"
        auth: { type: bearer, secret: shop-token }
  - id: publish
    task:
      connector: kafka
      args:
        topic: orders
        key: "${ string(input.n) }"
        value: "${ steps.fetch.output.body.order }"
        headers: { source: shop }
"#;

const UNSET: &str = r#"
id: unset-secret
steps:
  - id: fetch
    task:
      connector: http
      args: { url: "${ input.base }/orders/1", auth: { type: bearer, secret: never-set } }
"#;

const NO_TOPIC: &str = r#"
id: no-topic
steps:
  - id: publish
    task: { connector: kafka, args: { topic: never-created, value: { x: 1 } } }
"#;

/// Log lines of every crate, at every level, kept for the search at the end.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn secrets_reach_the_target_and_nothing_else() {
    let logs = Captured::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();

    let Some(env) = common::env("connectors", 2) else {
        return;
    };
    env.register("acme", 1, SYNC);
    env.register("acme", 1, UNSET);
    env.register("acme", 1, NO_TOPIC);
    let orders_topic = format!("{}tenant.acme.orders", env.kafka.topic_prefix);
    let admin: AdminClient<DefaultClientContext> = env.kafka.client_config().create().unwrap();
    env.rt.block_on(async {
        let r = admin
            .create_topics(
                &[NewTopic::new(&orders_topic, 1, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await
            .unwrap();
        r[0].as_ref().unwrap();
    });

    // The shop: answers only to the right bearer token, and echoes the header back, as
    // careless APIs do.
    let base = env.rt.block_on(async {
        let app = axum::Router::new().route(
            "/orders/{n}",
            get(
                |axum::extract::Path(n): axum::extract::Path<u32>, h: HeaderMap| async move {
                    let auth = h
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    if auth != format!("Bearer {TOKEN}") {
                        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "no"})));
                    }
                    (
                        StatusCode::OK,
                        axum::Json(json!({"order": {"id": n, "total": 42}, "seen": auth})),
                    )
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    });

    // The secret, as `PUT /v1/secrets/shop-token` stores it.
    let keyring = Arc::new(Keyring::generate("k1").unwrap());
    let record = keyring
        .seal(
            &common::tenant("acme"),
            &SecretName::new("shop-token").unwrap(),
            &SecretString::from(TOKEN),
            chrono::Utc::now(),
        )
        .unwrap();
    env.send(
        &env.topic(TopicKind::Secrets),
        None,
        record.key().as_bytes(),
        &record.encode(),
    );
    env.flush();

    let orch = env.orchestrator("connectors-test");
    let (worker, _secrets_tail) = env.rt.block_on(async {
        let (store, tail) = SecretStore::follow(&env.kafka, Some(keyring.clone()))
            .await
            .unwrap();
        let connectors = Connectors::builtin(
            &ConnectorSettings {
                outbound: OutboundSettings {
                    allow: vec!["127.0.0.1/32".into()],
                },
                ..ConnectorSettings::default()
            },
            Arc::new(store),
            Some(KafkaTarget {
                producer: env.kafka.producer_config().create().unwrap(),
                topic_prefix: env.kafka.topic_prefix.clone(),
            }),
            &prometheus::Registry::new(),
        )
        .unwrap();
        let w = aiq_worker::spawn(
            &env.kafka,
            WorkerSettings::default(),
            connectors,
            Arc::default(),
            &prometheus::Registry::new(),
        )
        .unwrap();
        (w, tail)
    });

    let runs: Vec<_> = (1..=3)
        .map(|n| {
            env.trigger(
                "acme",
                "sync-order",
                json!({"base": base, "n": n}),
                &format!("o{n}"),
            )
        })
        .collect();
    let unset = env.trigger("acme", "unset-secret", json!({"base": base}), "u1");
    let no_topic = env.trigger("acme", "no-topic", json!({}), "t1");
    env.flush();

    let mut events = env.reader(TopicKind::Events);
    let done = events.read_until(Duration::from_secs(120), |rs| {
        rs.iter()
            .filter(|r| matches!(Event::decode(&r.payload), Ok(Event::Run(e)) if e.status.is_terminal()))
            .count()
            >= 5
    });
    assert!(done, "runs did not finish");
    let all = events.events();
    let end = |run| {
        all.iter()
            .find_map(|e| match e {
                Event::Run(r) if r.run == run && r.status.is_terminal() => Some(r.clone()),
                _ => None,
            })
            .unwrap()
    };
    for run in &runs {
        let e = end(*run);
        assert_eq!(e.status, RunStatus::Succeeded, "{e:?}");
        let out = e.output.unwrap();
        assert_eq!(out["topic"], orders_topic.as_str());
    }
    // The echoed header reached the step's result scrubbed.
    let mut results = env.reader(TopicKind::Results);
    assert!(results.read_until(Duration::from_secs(10), |rs| {
        rs.iter()
            .any(|r| String::from_utf8_lossy(&r.payload).contains("\"seen\""))
    }));
    let echoed = results
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .find(|p| p.contains("\"seen\""))
        .unwrap();
    assert!(
        echoed.contains("\"seen\":\"Bearer [redacted]\""),
        "{echoed}"
    );
    let failed = end(unset);
    assert_eq!(failed.status, RunStatus::Failed);
    let err = failed.error.unwrap();
    assert_eq!(err.class, ErrorClass::Fatal);
    assert!(
        err.message
            .contains("secret \"never-set\" is not set for this tenant"),
        "{}",
        err.message
    );

    let failed = end(no_topic);
    assert_eq!(failed.status, RunStatus::Failed);
    let err = failed.error.unwrap();
    assert_eq!(err.class, ErrorClass::Fatal);
    assert!(
        err.message
            .contains("tenant.acme.never-created does not exist"),
        "{}",
        err.message
    );

    // The tenant's topic got one message per run, keyed and with the fetched order.
    let mut orders = common::Reader::new(&env.kafka, &orders_topic);
    assert!(orders.read_until(Duration::from_secs(30), |rs| rs.len() >= 3));
    let mut got: Vec<(String, serde_json::Value, String)> = orders
        .records
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.key.clone()).unwrap(),
                serde_json::from_slice(&r.payload).unwrap(),
                r.headers["source"].clone(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        (1..=3)
            .map(|n| (
                n.to_string(),
                json!({"id": n, "total": 42}),
                "shop".to_owned()
            ))
            .collect::<Vec<_>>()
    );

    env.rt.block_on(worker.shutdown()).unwrap();
    orch.shutdown_blocking().unwrap();

    // Nowhere but the shop: no record of any topic, no log line.
    let mut searched = 0usize;
    for kind in [
        TopicKind::Tasks,
        TopicKind::Results,
        TopicKind::Events,
        TopicKind::Changelog,
        TopicKind::DeadLetters,
        TopicKind::Triggers,
    ] {
        let mut r = env.reader(kind);
        r.read_until(Duration::from_secs(3), |_| false);
        for rec in &r.records {
            searched += 1;
            assert!(
                !String::from_utf8_lossy(&rec.payload).contains(TOKEN)
                    && !String::from_utf8_lossy(&rec.key).contains(TOKEN),
                "the secret is in a record of {kind:?}"
            );
        }
    }
    assert!(searched > 20, "only {searched} records searched");
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(text.lines().count() > 50, "the logs were not captured");
    assert!(!text.contains(TOKEN), "the secret is in the logs");
    println!(
        "searched {searched} records and {} log lines: the secret is in none",
        text.lines().count()
    );
}
