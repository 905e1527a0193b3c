//! The definitions follower against the real broker: what the topic held at start is in
//! the catalog once it has caught up, a bad record is passed over, and the stage ends
//! cleanly when stopped.

use std::time::Duration;

use aiq_kafka::{KafkaSettings, apply_topics};
use aiq_testkit::{KAFKA, require_service, unique};
use aiq_topics::{DefinitionRecord, TenantId, TopicKind, WorkflowId};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn record(workflow: &str, version: u32) -> DefinitionRecord {
    DefinitionRecord {
        tenant: TenantId::new("acme").expect("tenant"),
        workflow: WorkflowId::new(workflow).expect("workflow"),
        version,
        content_hash: format!("h{version}"),
        created_at: chrono::DateTime::from_timestamp(0, 0).expect("epoch"),
        definition: serde_json::json!({"id": workflow, "steps": [{"id": "a", "succeed": {}}]}),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalog_holds_the_topic_and_the_stage_stops() {
    let brokers = require_service!(KAFKA);
    let kafka = KafkaSettings::plaintext(brokers, format!("{}.", unique("catalog")), 1, 2);
    apply_topics(&kafka, &kafka.topics()).await.expect("apply");
    let topic = kafka.topics().name(TopicKind::Definitions).to_owned();
    let producer: FutureProducer = kafka.producer_config().create().expect("producer");
    let good = record("sync", 1);
    let payloads = [
        (good.key(), good.encode()),
        ("acme/bad/1".to_owned(), b"not json".to_vec()),
        (record("sync", 2).key(), record("sync", 2).encode()),
    ];
    for (key, payload) in &payloads {
        producer
            .send(
                FutureRecord::to(&topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("sent");
    }

    let definitions = aiq_catalog::spawn(&kafka).await.expect("follows");
    let handle = definitions.handle();
    assert_eq!(handle.name(), "definitions");
    tokio::time::timeout(
        Duration::from_secs(30),
        definitions.tail.watch().wait_for(|c| *c),
    )
    .await
    .expect("catches up within 30 s")
    .expect("the follower runs");
    let latest = definitions
        .catalog
        .latest(
            &TenantId::new("acme").expect("tenant"),
            &WorkflowId::new("sync").expect("workflow"),
        )
        .expect("sync is known");
    assert_eq!(latest.record.version, 2);
    assert!(
        !handle.is_finished(),
        "a bad record does not end the follower"
    );

    tokio::time::timeout(Duration::from_secs(10), handle.shutdown())
        .await
        .expect("stops within 10 s")
        .expect("stops cleanly");
    assert!(definitions.tail.handle().is_finished());
}
