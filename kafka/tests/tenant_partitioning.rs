//! 1,000 events keyed by 100 tenants through the real broker: every tenant's events land
//! in one partition, the one our partitioner predicts, in the order they were produced.

use std::collections::HashMap;
use std::time::Duration;

use aiq_kafka::{KafkaSettings, apply_topics};
use aiq_testkit::{KAFKA, require_service, unique};
use aiq_topics::{TenantId, TopicKind, TriggerEvent, TriggerSource, WorkflowId, partition_for_key};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test(flavor = "multi_thread")]
async fn each_tenants_events_land_in_one_partition_in_order() {
    let brokers = require_service!(KAFKA);
    let s = KafkaSettings::plaintext(brokers, format!("{}.", unique("part")), 6, 2);
    let set = s.topics();
    apply_topics(&s, &set).await.expect("apply");
    let topic = set.name(TopicKind::Triggers).to_owned();

    let producer: FutureProducer = s.producer_config().create().expect("producer");
    let workflow = WorkflowId::new("wf").expect("id");
    let mut sends = Vec::new();
    for i in 0..1000u32 {
        let tenant = TenantId::new(format!("tenant-{}", i % 100)).expect("id");
        let mut t = TriggerEvent::new(
            tenant.clone(),
            workflow.clone(),
            TriggerSource::Kafka,
            serde_json::json!({ "seq": i }),
        );
        t.idempotency_key = Some(format!("k{i}"));
        let payload = t.encode();
        let key = tenant.to_string();
        let p = producer.clone();
        let topic = topic.clone();
        // Sends are pipelined; the idempotent producer keeps per-partition order.
        sends.push(tokio::spawn(async move {
            p.send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
        }));
        if i % 100 == 99 {
            // Keep the send order per tenant well-defined: finish one round before the next.
            for h in sends.drain(..) {
                h.await.expect("join").expect("delivered");
            }
        }
    }

    let consumer: StreamConsumer = s
        .client_config()
        .set("group.id", unique("part-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut seen: HashMap<String, Vec<(i32, u64)>> = HashMap::new();
    let mut total = 0;
    while total < 1000 {
        let msg = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("all 1000 events arrive within 60 s")
            .expect("message");
        let key = String::from_utf8(msg.key().expect("key").to_vec()).expect("utf8");
        let event =
            TriggerEvent::decode(msg.key(), msg.payload().expect("payload")).expect("decodes");
        assert_eq!(event.tenant.as_str(), key);
        let seq = event.input["seq"].as_u64().expect("seq");
        seen.entry(key).or_default().push((msg.partition(), seq));
        total += 1;
    }
    assert_eq!(seen.len(), 100);
    for (tenant, events) in &seen {
        assert_eq!(events.len(), 10, "{tenant}");
        let expected = partition_for_key(tenant.as_bytes(), 6) as i32;
        assert!(
            events.iter().all(|(p, _)| *p == expected),
            "{tenant}: {events:?}, expected partition {expected}"
        );
        let seqs: Vec<u64> = events.iter().map(|(_, s)| *s).collect();
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "{tenant}'s events out of order");
    }
    let used: std::collections::BTreeSet<i32> = seen.values().map(|v| v[0].0).collect();
    assert!(
        used.len() > 1,
        "100 tenants should spread over several of 6 partitions"
    );
}
