//! A record Cassandra refuses for good (a mutation past its size limit) goes to the
//! dead-letter topic with headers naming where it was read, and the partition goes on:
//! the records after it are stored and the committed offset moves past it.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use aiq_topics::{
    Event, RunEvent, RunId, RunStatus, TenantId, TopicKind, TriggerSource, WorkflowId,
};
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

fn run_event(run: RunId, status: RunStatus, when: i64, output: Option<serde_json::Value>) -> Event {
    Event::Run(RunEvent {
        tenant: TenantId::new("acme").unwrap(),
        run,
        workflow: WorkflowId::new("wf").unwrap(),
        version: 1,
        status,
        at: at(when),
        input: (status == RunStatus::Running).then(|| json!({"n": 1})),
        output,
        error: None,
        started_at: (status != RunStatus::Running).then(|| at(1_780_000_000_000)),
        source: (status == RunStatus::Running).then_some(TriggerSource::Api),
        scheduled_at: None,
    })
}

/// A record's key, value and headers.
type Record = (Vec<u8>, Vec<u8>, HashMap<String, String>);

/// Every record on the dead-letter topic, read to its end.
fn dead_letters(env: &common::Env) -> Vec<Record> {
    let topic = env.topic(TopicKind::DeadLetters);
    let consumer: BaseConsumer = env
        .kafka
        .client_config()
        .set("group.id", aiq_testkit::unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                            (h.key.to_owned(), v.unwrap_or_default())
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
                headers,
            ));
        } else if !out.is_empty() {
            break;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_the_store_refuses_is_dead_lettered_and_the_partition_goes_on() {
    let Some(env) = common::env("sink_poison", 1).await else {
        return;
    };
    let events_topic = env.topic(TopicKind::Events);
    let (good, poison, after) = (RunId::random(), RunId::random(), RunId::random());
    let base = 1_780_000_000_000_i64;
    env.event(&run_event(good, RunStatus::Running, base, None))
        .await;
    // 17 MiB of output: past Cassandra's largest mutation (half the 32 MiB commit-log
    // segment) and its 16 MiB frame, yet one small compressed Kafka record.
    let huge = json!("x".repeat(17 * 1024 * 1024));
    let payload = run_event(poison, RunStatus::Succeeded, base + 5, Some(huge)).encode();
    let big: FutureProducer = env
        .kafka
        .producer_config()
        .set("compression.type", "lz4")
        .set("message.max.bytes", "100000000")
        .create()
        .unwrap();
    big.send(
        FutureRecord::to(&events_topic)
            .key("acme")
            .payload(&payload),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
    env.event(&run_event(
        good,
        RunStatus::Succeeded,
        base + 10,
        Some(json!(1)),
    ))
    .await;
    env.event(&run_event(after, RunStatus::Running, base + 20, None))
        .await;
    env.event(&run_event(
        after,
        RunStatus::Succeeded,
        base + 30,
        Some(json!(2)),
    ))
    .await;

    let root = std::env::temp_dir().join(aiq_testkit::unique("sink-poison"));
    let sink = env
        .start(env.settings("poison", &root), env.session.clone())
        .await;
    env.wait_drained("poison", Duration::from_secs(120)).await;
    let committed = env.committed("poison").await;
    assert_eq!(committed.get(&(events_topic.clone(), 0)), Some(&5));

    // The good runs are stored, finished; the poison's own row never was.
    let rows = env
        .rows("SELECT run_id, status FROM {ks}.runs")
        .await
        .join("\n");
    for run in [good, after] {
        let line = rows
            .lines()
            .find(|l| l.contains(&run.to_string()))
            .unwrap_or_else(|| panic!("run {run} not stored: {rows}"));
        assert!(line.contains("succeeded"), "{line}");
    }
    assert!(!rows.contains(&poison.to_string()), "{rows}");

    let dlq = dead_letters(&env);
    assert_eq!(
        dlq.len(),
        1,
        "{:?}",
        dlq.iter().map(|d| &d.2).collect::<Vec<_>>()
    );
    let (key, _, h) = &dlq[0];
    eprintln!("dead letter reason: {:?}", h.get("aiq-dlq-reason"));
    assert_eq!(key.as_slice(), b"acme");
    assert_eq!(h.get("aiq-dlq-stage").map(String::as_str), Some("sink"));
    assert_eq!(h.get("aiq-dlq-topic"), Some(&events_topic));
    assert_eq!(h.get("aiq-dlq-partition").map(String::as_str), Some("0"));
    assert_eq!(h.get("aiq-dlq-offset").map(String::as_str), Some("1"));
    assert_eq!(
        h.get("aiq-dlq-kind").map(String::as_str),
        Some("too_large"),
        "{h:?}"
    );
    assert!(
        h.get("aiq-dlq-reason").is_some_and(|r| r.contains("runs")),
        "{h:?}"
    );

    sink.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&root);
}
