//! Trace context on the triggers ingest publishes, read back from the real Kafka.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use aiq_ingest::publisher::Publisher;
use aiq_kafka::{KafkaSettings, apply_topics};
use aiq_testkit::{KAFKA, require_service, unique};
use aiq_topics::{
    PARENT_TRACEPARENT, RunId, TRACEPARENT, TenantId, TopicKind, TraceParent, TriggerEvent,
    TriggerSource, WorkflowId,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde_json::json;

const CALLER: &str = "00-4bf92f3577b34ed9a4e6f6263d7fb6ee-00f067aa0ba902b7-01";

fn trigger(run: Option<RunId>) -> TriggerEvent {
    let mut t = TriggerEvent::new(
        TenantId::new("acme").unwrap(),
        WorkflowId::new("order-sync").unwrap(),
        TriggerSource::Api,
        json!({"order_id": 1}),
    );
    t.run_id = run;
    t
}

/// The triggers topic's records as (run id, headers), `expect` of them.
async fn read(
    kafka: &KafkaSettings,
    expect: usize,
) -> Vec<(Option<RunId>, HashMap<String, String>)> {
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", unique("trace_reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer
        .subscribe(&[kafka.topics().name(TopicKind::Triggers)])
        .unwrap();
    let mut out = Vec::new();
    while out.len() < expect {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("the triggers arrive")
            .unwrap();
        let t = TriggerEvent::decode(m.key(), m.payload().unwrap()).unwrap();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let v = String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap();
                        (h.key.to_owned(), v)
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((t.run_id, headers));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn triggers_carry_the_runs_traceparent_and_the_callers_as_a_link() {
    let brokers = require_service!(KAFKA);
    // One partition, so the three records are read back in the order sent.
    let kafka = KafkaSettings::plaintext(brokers, format!("{}.", unique("trace")), 1, 1);
    apply_topics(&kafka, &kafka.topics()).await.unwrap();
    let publisher = Publisher::new(&kafka, Duration::from_secs(10)).unwrap();

    let (a, b) = (RunId::random(), RunId::random());
    publisher.trigger(&trigger(Some(a))).await.unwrap();
    publisher
        .trigger_from(&trigger(Some(b)), Some(CALLER))
        .await
        .unwrap();
    // No run id yet: the orchestrator derives it from the offset, so there is no trace
    // to name; a malformed caller value is dropped rather than passed on.
    publisher
        .trigger_from(&trigger(None), Some("00-not-a-traceparent"))
        .await
        .unwrap();

    let records = read(&kafka, 3).await;
    println!("{records:?}");
    let (run, h) = &records[0];
    assert_eq!(*run, Some(a));
    let tp: TraceParent = h[TRACEPARENT].parse().unwrap();
    assert_eq!(tp, TraceParent::of_trigger(a));
    assert_eq!(
        h[TRACEPARENT],
        format!("00-{}-{}-01", a.as_uuid().simple(), tp.span_id)
    );
    assert!(!h.contains_key(PARENT_TRACEPARENT));

    let (run, h) = &records[1];
    assert_eq!(*run, Some(b));
    assert_eq!(h[TRACEPARENT], TraceParent::of_trigger(b).to_string());
    assert_eq!(h[PARENT_TRACEPARENT], CALLER);

    let (run, h) = &records[2];
    assert_eq!(*run, None);
    assert!(h.is_empty(), "unexpected headers {h:?}");
}
