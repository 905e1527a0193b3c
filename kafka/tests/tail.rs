//! Tailing a topic against the real broker: everything present at start arrives before
//! the caught-up signal, and later records keep arriving.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiq_kafka::{KafkaSettings, apply_topics, tail_topic};
use aiq_testkit::{KAFKA, require_service, unique};
use aiq_topics::TopicKind;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test(flavor = "multi_thread")]
async fn reads_everything_then_follows() {
    let brokers = require_service!(KAFKA);
    let s = KafkaSettings::plaintext(brokers, format!("{}.", unique("tail")), 2, 2);
    let set = s.topics();
    apply_topics(&s, &set).await.expect("apply");
    let topic = set.name(TopicKind::Definitions).to_owned();
    let producer: FutureProducer = s.producer_config().create().expect("producer");
    for i in 0..50 {
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&format!("k{i}"))
                    .payload(&format!("v{i}")),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("sent");
    }

    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let mut tail = tail_topic(&s, &topic, move |r| {
        let k = String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned();
        let v = String::from_utf8_lossy(r.payload.unwrap_or_default()).into_owned();
        sink.lock().expect("lock").push((k, v));
    })
    .await
    .expect("tail starts");
    tokio::time::timeout(Duration::from_secs(30), tail.caught_up())
        .await
        .expect("catches up within 30 s");
    {
        let got = seen.lock().expect("lock");
        assert_eq!(
            got.len(),
            50,
            "all records present at start arrive before caught-up"
        );
        assert_eq!(got[0], ("k0".to_owned(), "v0".to_owned()));
        assert_eq!(got[49], ("k49".to_owned(), "v49".to_owned()));
    }

    producer
        .send(
            FutureRecord::to(&topic).key("late").payload("after"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("sent");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if seen.lock().expect("lock").iter().any(|(k, _)| k == "late") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a later record did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_topic_is_caught_up_at_once_and_a_missing_one_is_an_error() {
    let brokers = require_service!(KAFKA);
    let s = KafkaSettings::plaintext(brokers, format!("{}.", unique("tail-empty")), 1, 1);
    let missing = tail_topic(&s, &format!("{}definitions", s.topic_prefix), |_| {}).await;
    let err = missing.err().expect("missing topic refused").to_string();
    assert!(err.contains("topic does not exist"), "{err}");

    let set = s.topics();
    apply_topics(&s, &set).await.expect("apply");
    let tail = tail_topic(&s, set.name(TopicKind::Definitions), |_| {})
        .await
        .expect("tail");
    assert!(tail.is_caught_up());
}
