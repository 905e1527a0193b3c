//! What the Kafka benchmarks share: fresh topics under a prefix of their own, a producer
//! that writes a backlog as fast as the client takes it, and a worker's no-op connectors.

use std::sync::Arc;
use std::time::Duration;

use aiq_connectors::{ConnectorSettings, Connectors, SecretStore};
use aiq_kafka::{KafkaSettings, apply_topics};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};

/// Settings for topics no earlier run used (`<label>-<ms>.`), with the topics created.
pub async fn fresh_topics(brokers: &str, label: &str) -> anyhow::Result<KafkaSettings> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let kafka = KafkaSettings::plaintext(brokers, format!("{label}-{stamp}."), 12, 12);
    apply_topics(&kafka, &kafka.topics()).await?;
    Ok(kafka)
}

pub struct Backlog {
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl Backlog {
    pub fn new(kafka: &KafkaSettings) -> anyhow::Result<Self> {
        Ok(Self {
            producer: kafka.producer_config().set("linger.ms", "5").create()?,
        })
    }

    /// Queues one record, waiting while the client's queue is full.
    pub fn send(&self, topic: &str, key: &[u8], payload: &[u8]) {
        let mut r = BaseRecord::<[u8], [u8]>::to(topic)
            .key(key)
            .payload(payload);
        while let Err((_, back)) = self.producer.send(r) {
            r = back;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Queues one record for an explicit partition (changelog entries are placed by
    /// their owner's partition, not by key).
    pub fn send_to(&self, topic: &str, partition: i32, key: &[u8], payload: &[u8]) {
        let mut r = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .key(key)
            .payload(payload);
        while let Err((_, back)) = self.producer.send(r) {
            r = back;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn flush(&self) -> anyhow::Result<()> {
        use rdkafka::producer::Producer as _;
        self.producer.flush(Duration::from_secs(60))?;
        Ok(())
    }
}

/// The connectors a benchmark worker needs: `noop` (and the rest, unused).
pub fn noop_connectors(registry: &prometheus::Registry) -> anyhow::Result<Connectors> {
    Ok(Connectors::builtin(
        &ConnectorSettings::default(),
        Arc::new(SecretStore::fixed(None, Vec::new())),
        None,
        registry,
    )?)
}

/// How long a benchmark waits for its backlog to drain before it gives up.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(1800);
