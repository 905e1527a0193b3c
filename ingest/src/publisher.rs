//! Writes to Kafka and waits for the acknowledgement: ingest answers a caller only after
//! the brokers hold the record (acks=all, idempotent producer).

use std::time::Duration;

use aiq_kafka::KafkaSettings;
use aiq_topics::{PARENT_TRACEPARENT, TRACEPARENT, TopicKind, TopicSet, TraceParent, TriggerEvent};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(#[source] rdkafka::error::KafkaError),
    #[error("Kafka did not acknowledge the record for {topic}: {source}")]
    NotAcknowledged {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("the payload could not be sealed under the tenant's data key: {0}")]
    Sealing(#[from] aiq_vault::VaultError),
}

/// A record as it is to be written, byte for byte: a dead letter's replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub topic: String,
    /// None: the partitioner chooses from the key.
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    topics: TopicSet,
    timeout: Duration,
    /// Seals trigger inputs and signal payloads (off: they go as they are).
    vault: std::sync::Arc<aiq_vault::Vault>,
}

impl Publisher {
    /// `ack_timeout` bounds how long a caller waits when the brokers are down before it
    /// gets a 503; the record is then dropped, never delivered later behind its back.
    pub fn new(settings: &KafkaSettings, ack_timeout: Duration) -> Result<Self, PublishError> {
        let producer: FutureProducer = settings
            .producer_config()
            .set("message.timeout.ms", ack_timeout.as_millis().to_string())
            .set("linger.ms", "2")
            .create()
            .map_err(PublishError::Create)?;
        Ok(Self {
            producer,
            topics: settings.topics(),
            timeout: ack_timeout,
            vault: aiq_vault::Vault::off(),
        })
    }

    /// The same publisher sealing payloads with `vault`.
    pub fn with_vault(mut self, vault: std::sync::Arc<aiq_vault::Vault>) -> Self {
        self.vault = vault;
        self
    }

    /// A signal, its payload sealed under the tenant's data key.
    pub async fn signal(&self, event: &aiq_topics::SignalEvent) -> Result<Delivery, PublishError> {
        let mut event = event.clone();
        if let aiq_topics::SignalAction::Signal { payload, .. } = &mut event.action {
            *payload = self
                .vault
                .seal_field(&event.tenant, "payload", payload)
                .await?;
        }
        self.send(TopicKind::Signals, event.tenant.as_str(), &event.encode())
            .await
    }

    pub fn topics(&self) -> &TopicSet {
        &self.topics
    }

    pub async fn send(
        &self,
        kind: TopicKind,
        key: &str,
        payload: &[u8],
    ) -> Result<Delivery, PublishError> {
        self.send_with(kind, key, payload, None).await
    }

    async fn send_with(
        &self,
        kind: TopicKind,
        key: &str,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<Delivery, PublishError> {
        let topic = self.topics.name(kind);
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        let delivery = self
            .producer
            .send(record, self.timeout)
            .await
            .map_err(|(source, _)| PublishError::NotAcknowledged {
                topic: topic.to_owned(),
                source,
            })?;
        Ok(Delivery {
            partition: delivery.partition,
            offset: delivery.offset,
        })
    }

    /// A record as given, to the topic and partition it names.
    pub async fn send_raw(&self, r: &RawRecord) -> Result<Delivery, PublishError> {
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
        for (key, value) in &r.headers {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&r.topic)
            .payload(&r.value)
            .headers(headers);
        if let Some(k) = &r.key {
            record = record.key(k);
        }
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        let delivery = self
            .producer
            .send(record, self.timeout)
            .await
            .map_err(|(source, _)| PublishError::NotAcknowledged {
                topic: r.topic.clone(),
                source,
            })?;
        Ok(Delivery {
            partition: delivery.partition,
            offset: delivery.offset,
        })
    }

    /// A record with a key and no value: deletes the key from a compacted topic.
    pub async fn tombstone(&self, kind: TopicKind, key: &str) -> Result<Delivery, PublishError> {
        let topic = self.topics.name(kind);
        let delivery = self
            .producer
            .send(FutureRecord::<str, [u8]>::to(topic).key(key), self.timeout)
            .await
            .map_err(|(source, _)| PublishError::NotAcknowledged {
                topic: topic.to_owned(),
                source,
            })?;
        Ok(Delivery {
            partition: delivery.partition,
            offset: delivery.offset,
        })
    }

    /// A trigger, keyed by its tenant.
    pub async fn trigger(&self, t: &TriggerEvent) -> Result<Delivery, PublishError> {
        self.trigger_from(t, None).await
    }

    /// A trigger carrying its run's `traceparent` (when ingest chose the run id) and,
    /// when `caller` is a valid traceparent from the request, that as a link in
    /// `aiq-parent-traceparent`: the run keeps its own trace (see `aiq_topics::trace`).
    /// An invalid `caller` is ignored, as the W3C spec asks.
    pub async fn trigger_from(
        &self,
        t: &TriggerEvent,
        caller: Option<&str>,
    ) -> Result<Delivery, PublishError> {
        let own = t.run_id.map(|run| TraceParent::of_trigger(run).to_string());
        let parent = caller
            .and_then(|c| c.trim().parse::<TraceParent>().ok())
            .map(|p| p.to_string());
        let mut headers = OwnedHeaders::new_with_capacity(2);
        for (key, value) in [(TRACEPARENT, &own), (PARENT_TRACEPARENT, &parent)] {
            if let Some(v) = value {
                headers = headers.insert(Header {
                    key,
                    value: Some(v.as_bytes()),
                });
            }
        }
        let payload = if self.vault.is_on() {
            let mut sealed = t.clone();
            sealed.input = self.vault.seal_field(&t.tenant, "input", &t.input).await?;
            sealed.encode()
        } else {
            t.encode()
        };
        self.send_with(
            TopicKind::Triggers,
            t.tenant.as_str(),
            &payload,
            Some(headers),
        )
        .await
    }

    /// Whether the brokers answer a metadata request within `timeout`.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let producer = self.producer.clone();
        let topic = self.topics.name(TopicKind::Triggers).to_owned();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .is_ok_and(|md| md.topics().iter().any(|t| t.error().is_none()))
        })
        .await
        .unwrap_or(false)
    }
}
