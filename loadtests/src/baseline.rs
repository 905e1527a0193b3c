//! The ceiling the engine is compared with: the same broker moving bare messages of a
//! trigger's size, produced as ingest produces (acks=all, idempotent, linger 2 ms) to a
//! fresh topic with the triggers topic's partition count, and consumed back as the
//! orchestrator consumes (read_committed) while they are being produced.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aiq_kafka::KafkaSettings;
use aiq_topics::{RunId, TenantId, TriggerEvent, TriggerSource, WorkflowId};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::loadgen::LoadError;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Gives up on consuming when nothing arrived for this long.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub messages: u64,
    pub message_bytes: usize,
    pub partitions: i32,
    pub produced: u64,
    pub failed: u64,
    pub consumed: u64,
    /// Until every message was acknowledged.
    pub produce_seconds: f64,
    /// Until every message was consumed back.
    pub total_seconds: f64,
}

impl Baseline {
    pub fn produce_per_sec(&self) -> f64 {
        self.produced as f64 / self.produce_seconds.max(1e-9)
    }

    /// Messages produced and consumed back per second: the figure runs/s is compared with.
    pub fn round_trip_per_sec(&self) -> f64 {
        self.consumed as f64 / self.total_seconds.max(1e-9)
    }

    pub fn markdown(&self) -> String {
        format!(
            "| messages | bytes each | partitions | produced | consumed | produce msg/s | produce+consume msg/s |\n\
             | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n\
             | {} | {} | {} | {} | {} | {:.0} | {:.0} |\n",
            self.messages,
            self.message_bytes,
            self.partitions,
            self.produced,
            self.consumed,
            self.produce_per_sec(),
            self.round_trip_per_sec()
        )
    }
}

/// A trigger as ingest writes it, to size the baseline's messages.
pub fn trigger_sample() -> Vec<u8> {
    let (Ok(tenant), Ok(workflow)) = (
        TenantId::new("load1764400000-12"),
        WorkflowId::new("ten-steps"),
    ) else {
        unreachable!("valid sample ids")
    };
    let mut t = TriggerEvent::new(tenant, workflow, TriggerSource::Api, json!({"n": 123_456}));
    t.run_id = Some(RunId::random());
    t.occurred_at = Some(chrono::Utc::now());
    t.encode()
}

#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    /// When the newest acknowledgement came: flush() returns only at its next poll tick.
    last: Mutex<Option<Instant>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let n = if result.is_ok() {
            &self.ok
        } else {
            &self.failed
        };
        n.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Instant::now());
        }
    }
}

/// The partition count of `<prefix>triggers`, when it exists.
pub fn triggers_partitions(brokers: &str, topic_prefix: &str) -> Result<Option<i32>, LoadError> {
    let topic = format!("{topic_prefix}triggers");
    let consumer: BaseConsumer = settings(brokers)
        .client_config()
        .create()
        .map_err(LoadError::kafka("metadata client"))?;
    let md = consumer
        .fetch_metadata(Some(&topic), TIMEOUT)
        .map_err(LoadError::kafka(format!("metadata of {topic}")))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

fn settings(brokers: &str) -> KafkaSettings {
    KafkaSettings::plaintext(brokers, "", 1, 1)
}

/// Produces `messages` copies of a trigger-sized record to a fresh topic of `partitions`
/// partitions and consumes them back concurrently; deletes the topic afterwards.
pub async fn measure(brokers: &str, partitions: i32, messages: u64) -> Result<Baseline, LoadError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let topic = format!("aiq-load-baseline-{stamp:x}");
    let kafka = settings(brokers);
    let admin: AdminClient<DefaultClientContext> = kafka
        .client_config()
        .create()
        .map_err(LoadError::kafka("admin client"))?;
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    for r in admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &opts,
        )
        .await
        .map_err(LoadError::kafka(format!("creating {topic}")))?
    {
        r.map_err(|(t, code)| LoadError::Broker(format!("creating {t}: {code}")))?;
    }
    let run = {
        let (kafka, topic) = (kafka.clone(), topic.clone());
        tokio::task::spawn_blocking(move || round_trip(&kafka, &topic, partitions, messages)).await
    };
    // The topic goes whatever happened; a failed delete only leaves litter.
    let _ = admin.delete_topics(&[&topic], &opts).await;
    run?
}

fn round_trip(
    kafka: &KafkaSettings,
    topic: &str,
    partitions: i32,
    messages: u64,
) -> Result<Baseline, LoadError> {
    let payload = trigger_sample();
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(LoadError::kafka("baseline consumer"))?;
    wait_for_leaders(&consumer, topic, partitions)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(LoadError::kafka("assignment"))?;
    }
    consumer
        .assign(&tpl)
        .map_err(LoadError::kafka("assigning the baseline topic"))?;
    let producer: ThreadedProducer<Deliveries> = kafka
        .producer_config()
        .set("linger.ms", "2")
        .create_with_context(Deliveries::default())
        .map_err(LoadError::kafka("baseline producer"))?;

    let keys: Vec<String> = (0..100).map(|k| format!("load-t{k}")).collect();
    // Start-up is not throughput: the idempotent producer fetches its id and the consumer
    // makes its first fetch with one record before the clock starts.
    send(&producer, topic, &keys[0], &payload)?;
    producer
        .flush(TIMEOUT)
        .map_err(LoadError::kafka("flushing the warm-up record"))?;
    let warm_until = Instant::now() + TIMEOUT;
    while !matches!(consumer.poll(Duration::from_millis(100)), Some(Ok(_))) {
        if Instant::now() > warm_until {
            return Err(LoadError::Broker(format!(
                "the warm-up record did not come back from {topic} within {TIMEOUT:?}"
            )));
        }
    }
    let warm_up_records = producer.context().ok.load(Ordering::Relaxed);

    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut consumed = 0u64;
        let mut last = Instant::now();
        let mut done_at = Duration::ZERO;
        while consumed < messages && last.elapsed() < IDLE_LIMIT {
            if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                consumed += 1;
                last = Instant::now();
                done_at = start.elapsed();
            }
        }
        (consumed, done_at)
    });
    for i in 0..messages {
        send(&producer, topic, &keys[(i % 100) as usize], &payload)?;
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(LoadError::kafka("flushing the baseline producer"))?;
    let (consumed, done_at) = reader
        .join()
        .map_err(|_| LoadError::Broker("the baseline reader panicked".into()))?;
    let ctx = producer.context();
    let acknowledged = ctx.last.lock().ok().and_then(|l| *l);
    let produce_seconds = acknowledged.map_or(0.0, |at| at.duration_since(start).as_secs_f64());
    Ok(Baseline {
        messages,
        message_bytes: payload.len(),
        partitions,
        produced: ctx.ok.load(Ordering::Relaxed) - warm_up_records,
        failed: ctx.failed.load(Ordering::Relaxed),
        consumed,
        produce_seconds,
        total_seconds: done_at.as_secs_f64(),
    })
}

/// Queues one record, waiting while the client's queue is full.
fn send(
    producer: &ThreadedProducer<Deliveries>,
    topic: &str,
    key: &str,
    payload: &[u8],
) -> Result<(), LoadError> {
    let mut r = BaseRecord::to(topic).key(key.as_bytes()).payload(payload);
    while let Err((e, back)) = producer.send(r) {
        if e.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
            return Err(LoadError::kafka("producing")(e));
        }
        r = back;
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn wait_for_leaders(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> Result<(), LoadError> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let md = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(LoadError::kafka(format!("metadata of {topic}")))?;
        let ready = md.topics().iter().any(|t| {
            t.name() == topic
                && t.error().is_none()
                && t.partitions().len() == partitions as usize
                && t.partitions().iter().all(|p| p.leader() >= 0)
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(LoadError::Broker(format!(
                "{topic} has no leaders after {TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_counts_and_seconds() {
        let b = Baseline {
            messages: 1000,
            message_bytes: 200,
            partitions: 12,
            produced: 1000,
            failed: 0,
            consumed: 1000,
            produce_seconds: 0.5,
            total_seconds: 2.0,
        };
        assert!((b.produce_per_sec() - 2000.0).abs() < 1e-9);
        assert!((b.round_trip_per_sec() - 500.0).abs() < 1e-9);
        assert!(
            b.markdown()
                .contains("| 1000 | 200 | 12 | 1000 | 1000 | 2000 | 500 |")
        );
        let sample = trigger_sample();
        assert!(sample.len() > 100, "{}", sample.len());
    }
}
