//! Registration and run starts against the real Kafka and Cassandra.

use std::sync::Arc;
use std::time::Duration;

use aiq_ingest::catalog::Catalog;
use aiq_ingest::publisher::Publisher;
use aiq_ingest::registry::service::{RegisterError, Registered, Registry};
use aiq_ingest::registry::store::RegistryStore;
use aiq_ingest::runs::{Runs, StartError, StartRun};
use aiq_kafka::{KafkaSettings, apply_topics};
use aiq_sql::{CqlSettings, apply_schema, connect};
use aiq_testkit::{CQL, KAFKA, require_service, unique};
use aiq_topics::{
    DefinitionRecord, TenantId, TopicKind, TriggerEvent, TriggerSource, WorkflowId,
    partition_for_key,
};
use chrono::Utc;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use serde_json::json;

struct Env {
    kafka: KafkaSettings,
    registry: Registry,
    runs: Runs,
}

async fn env(brokers: String, cql: String) -> Env {
    let kafka = KafkaSettings::plaintext(brokers, format!("{}.", unique("ingest")), 3, 2);
    apply_topics(&kafka, &kafka.topics()).await.expect("topics");
    let cql = CqlSettings {
        contact_points: cql,
        keyspace: unique("ingest").to_lowercase(),
        replication_factor: 1,
        datacenters: vec![],
        username: None,
        password: None,
    };
    let session = Arc::new(connect(&cql).await.expect("connect"));
    apply_schema(&session, &cql, Utc::now())
        .await
        .expect("schema");
    let store = RegistryStore::new(session, &cql.keyspace)
        .await
        .expect("store");
    let publisher = Publisher::new(&kafka, Duration::from_secs(5)).expect("publisher");
    let catalog = Arc::new(Catalog::default());
    Env {
        registry: Registry {
            store: store.clone(),
            publisher: publisher.clone(),
            catalog: Arc::clone(&catalog),
        },
        runs: Runs {
            store,
            publisher,
            catalog,
            stale_after: Duration::from_secs(30),
            max_input_bytes: 256 * 1024,
            queues: aiq_ingest::queues::follow(&kafka)
                .await
                .expect("queue-state follower"),
            tenants: Arc::default(),
        },
        kafka,
    }
}

/// Every record of a topic: (key, payload, partition).
async fn read_all(
    kafka: &KafkaSettings,
    kind: TopicKind,
    expect: usize,
) -> Vec<(String, Vec<u8>, i32)> {
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer
        .subscribe(&[kafka.topics().name(kind)])
        .expect("subscribe");
    let mut out = Vec::new();
    // Read what there is: everything expected, then a quiet second for extras.
    loop {
        let wait = if out.len() < expect {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(2)
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(m)) => out.push((
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m.payload().unwrap_or_default().to_vec(),
                m.partition(),
            )),
            Ok(Err(e)) => panic!("consume: {e}"),
            Err(_) if out.len() >= expect => return out,
            Err(_) => panic!("only {} of {expect} records arrived", out.len()),
        }
    }
}

const ORDER_SYNC: &str = r#"
id: order-sync
name: Order sync
input_schema:
  type: object
  required: [order_id]
  properties: { order_id: { type: integer, minimum: 1 } }
steps:
  - id: fetch
    task: { connector: http, args: { url: "https://shop/${ input.order_id }" } }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn versions_are_numbered_stored_published_and_repeat_safely() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let e = env(brokers, cql).await;
    let acme = TenantId::new("acme").expect("id");

    let v1 = e
        .registry
        .register(&acme, "o.yaml", ORDER_SYNC, "ada", Utc::now())
        .await
        .expect("register");
    let Registered::Created(v1) = v1 else {
        panic!("expected a new version")
    };
    assert_eq!(v1.record.version, 1);
    let again = e
        .registry
        .register(&acme, "o.yaml", ORDER_SYNC, "ada", Utc::now())
        .await
        .expect("again");
    assert!(matches!(again, Registered::Unchanged(v) if v.record.version == 1));
    let changed = ORDER_SYNC.replace("Order sync", "Order sync v2");
    let v2 = e
        .registry
        .register(&acme, "o.yaml", &changed, "ada", Utc::now())
        .await
        .expect("v2");
    assert!(matches!(v2, Registered::Created(v) if v.record.version == 2));

    let bad = e
        .registry
        .register(&acme, "bad.yaml", "id: x\nsteps: []\n", "ada", Utc::now())
        .await;
    match bad {
        Err(RegisterError::Invalid(errs)) => assert_eq!(
            errs[0].to_string(),
            "bad.yaml:/steps: a workflow needs at least one step"
        ),
        other => panic!("expected validation errors, got {other:?}"),
    }

    // Two versions on the compacted definitions topic, keyed tenant/workflow/version.
    let records = read_all(&e.kafka, TopicKind::Definitions, 2).await;
    let keys: Vec<&str> = records.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["acme/order-sync/1", "acme/order-sync/2"]);
    let r2 = DefinitionRecord::decode(&records[1].1).expect("decodes");
    assert_eq!(r2.definition["name"], json!("Order sync v2"));

    // Another instance's catalog, fed only from the topic, agrees.
    let other = Catalog::default();
    for (_, payload, _) in &records {
        other.apply_bytes(payload).expect("applies");
    }
    let wf = WorkflowId::new("order-sync").expect("id");
    assert_eq!(
        other
            .latest(&acme, &wf)
            .expect("latest")
            .record
            .content_hash,
        r2.content_hash
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_start_lands_under_the_tenant_key_once_per_idempotency_key() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let e = env(brokers, cql).await;
    let acme = TenantId::new("acme").expect("id");
    let wf = WorkflowId::new("order-sync").expect("id");
    e.registry
        .register(&acme, "o.yaml", ORDER_SYNC, "ada", Utc::now())
        .await
        .expect("register");

    let req = |input: serde_json::Value, key: Option<&str>| StartRun {
        tenant: acme.clone(),
        workflow: wf.clone(),
        version: None,
        input,
        idempotency_key: key.map(str::to_owned),
        source: TriggerSource::Api,
        parent_traceparent: None,
    };
    let first = e
        .runs
        .start(req(json!({"order_id": 7}), Some("k-1")), Utc::now())
        .await
        .expect("accepted");
    assert!(!first.replayed);
    let second = e
        .runs
        .start(req(json!({"order_id": 7}), Some("k-1")), Utc::now())
        .await
        .expect("accepted again");
    assert_eq!(second.run_id, first.run_id);
    assert!(second.replayed);
    let reused = e
        .runs
        .start(req(json!({"order_id": 8}), Some("k-1")), Utc::now())
        .await;
    assert!(matches!(reused, Err(StartError::KeyReused(k)) if k == "k-1"));
    let plain = e
        .runs
        .start(req(json!({"order_id": 9}), None), Utc::now())
        .await
        .expect("accepted");
    assert_ne!(plain.run_id, first.run_id);

    let bad = e
        .runs
        .start(req(json!({"order_id": 0}), None), Utc::now())
        .await;
    match bad {
        Err(StartError::InvalidInput(errs)) => assert_eq!(
            errs,
            vec!["/order_id: 0 is less than the minimum of 1".to_owned()]
        ),
        other => panic!("expected input errors, got {other:?}"),
    }
    let globex = TenantId::new("globex").expect("id");
    let foreign = StartRun {
        tenant: globex,
        ..req(json!({"order_id": 7}), None)
    };
    assert!(
        matches!(
            e.runs.start(foreign, Utc::now()).await,
            Err(StartError::UnknownWorkflow(_))
        ),
        "another tenant cannot start acme's workflow"
    );

    // Exactly two triggers were written (k-1 once, the plain one), under acme's key.
    let records = read_all(&e.kafka, TopicKind::Triggers, 2).await;
    assert_eq!(records.len(), 2, "a replayed request wrote nothing");
    let expected_partition = partition_for_key(b"acme", 3) as i32;
    let mut runs = Vec::new();
    for (key, payload, partition) in &records {
        assert_eq!(key, "acme");
        assert_eq!(*partition, expected_partition);
        let t = TriggerEvent::decode(Some(key.as_bytes()), payload).expect("a valid trigger");
        assert_eq!(t.version, Some(1));
        runs.push(t.run_id.expect("ingest sets the run id"));
    }
    assert_eq!(runs, vec![first.run_id, plain.run_id]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_down_means_no_acceptance_and_a_retry_works_later() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let e = env(brokers, cql).await;
    let acme = TenantId::new("acme").expect("id");
    e.registry
        .register(&acme, "o.yaml", ORDER_SYNC, "ada", Utc::now())
        .await
        .expect("register");

    // The same catalog and store, but brokers nobody answers on.
    let mut dead = e.kafka.clone();
    dead.brokers = "127.0.0.1:1".into();
    let down = Runs {
        publisher: Publisher::new(&dead, Duration::from_secs(2)).expect("publisher"),
        ..e.runs.clone()
    };
    let req = StartRun {
        tenant: acme.clone(),
        workflow: WorkflowId::new("order-sync").expect("id"),
        version: None,
        input: json!({"order_id": 1}),
        idempotency_key: Some("retry-me".into()),
        source: TriggerSource::Api,
        parent_traceparent: None,
    };
    let refused = down.start(req.clone(), Utc::now()).await;
    assert!(
        matches!(refused, Err(StartError::Unavailable(_))),
        "{refused:?}"
    );
    // The key was released, so the retry against a working Kafka is accepted.
    let ok = e
        .runs
        .start(req, Utc::now())
        .await
        .expect("accepted on retry");
    assert!(!ok.replayed);
    let records = read_all(&e.kafka, TopicKind::Triggers, 1).await;
    assert_eq!(records.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_announced_full_is_refused_until_announced_free() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let e = env(brokers, cql).await;
    let acme = TenantId::new("acme").expect("id");
    e.registry
        .register(&acme, "o.yaml", ORDER_SYNC, "ada", Utc::now())
        .await
        .expect("register");
    let announce = |full: bool| {
        let kafka = e.kafka.clone();
        let acme = acme.clone();
        async move {
            let producer: rdkafka::producer::FutureProducer =
                kafka.client_config().create().expect("producer");
            let state = aiq_topics::QueueState {
                tenant: acme.clone(),
                full,
                queued: 7,
                max: 7,
                at: Utc::now(),
            };
            let payload = serde_json::to_vec(&state).expect("json");
            let topic = kafka.topics().name(TopicKind::QueueState).to_owned();
            producer
                .send(
                    rdkafka::producer::FutureRecord::to(&topic)
                        .key(acme.as_str())
                        .payload(&payload),
                    Duration::from_secs(5),
                )
                .await
                .expect("queue state written");
        }
    };
    let start = || StartRun {
        tenant: acme.clone(),
        workflow: WorkflowId::new("order-sync").expect("id"),
        version: None,
        input: json!({"order_id": 1}),
        idempotency_key: None,
        source: TriggerSource::Api,
        parent_traceparent: None,
    };
    announce(true).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match e.runs.start(start(), Utc::now()).await {
            Err(StartError::QueueFull {
                tenant,
                queued,
                max,
            }) => break (tenant, queued, max),
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("never refused: {other:?}"),
        }
    };
    assert_eq!(refused, ("acme".to_owned(), 7, 7));
    // Another tenant is not refused.
    let globex = TenantId::new("globex").expect("id");
    assert!(e.runs.queues.full(&globex).is_none());
    announce(false).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match e.runs.start(start(), Utc::now()).await {
            Ok(_) => break,
            Err(StartError::QueueFull { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("never accepted again: {other:?}"),
        }
    }
}
