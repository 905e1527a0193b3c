//! The `kafka` connector: publishes one message to one of the tenant's own topics,
//! `<prefix>tenant.<tenant>.<topic>`; a step can name no other.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use aiq_topics::{ErrorClass, TaskMessage, TaskOutcome};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::call::{CallContext, CallFuture, Connector};
use crate::outcome::{fatal, parse_args, retryable};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaArgs {
    /// The topic's own part of the name: 1 to 100 of `a-z A-Z 0-9 . _ -`.
    topic: String,
    #[serde(default)]
    key: Option<String>,
    /// Sent as JSON; a string is sent as its bare text.
    value: Value,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

pub struct KafkaConnector {
    producer: FutureProducer,
    prefix: String,
    /// Topics seen to exist, so metadata is asked once per topic, not per message.
    known: Mutex<HashSet<String>>,
}

impl KafkaConnector {
    pub fn new(producer: FutureProducer, topic_prefix: String) -> Self {
        Self {
            producer,
            prefix: topic_prefix,
            known: Mutex::new(HashSet::new()),
        }
    }

    /// The full topic name a tenant's step publishes to.
    pub fn topic_for(prefix: &str, tenant: &str, topic: &str) -> String {
        format!("{prefix}tenant.{tenant}.{topic}")
    }

    async fn run(
        &self,
        task: &TaskMessage,
        ctx: &CallContext<'_>,
    ) -> Result<TaskOutcome, TaskOutcome> {
        let args: KafkaArgs = parse_args("kafka", &task.args)?;
        if args.topic.is_empty()
            || args.topic.len() > 100
            || !args
                .topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(fatal(format!(
                "kafka connector: `args.topic`: {:?} must be 1 to 100 of letters, digits, \
                 `.`, `_` and `-`",
                args.topic
            )));
        }
        let topic = Self::topic_for(&self.prefix, task.tenant.as_str(), &args.topic);
        let left = ctx.time_left();
        self.exists(&topic, left).await?;
        let payload = match &args.value {
            Value::String(s) => s.clone().into_bytes(),
            v => v.to_string().into_bytes(),
        };
        let mut headers = OwnedHeaders::new();
        for (k, v) in &args.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = FutureRecord::<str, [u8]>::to(&topic)
            .payload(&payload)
            .headers(headers);
        if let Some(k) = &args.key {
            record = record.key(k.as_str());
        }
        let left = ctx.time_left();
        let delivery = self
            .producer
            .send(record, left)
            .await
            .map_err(|(e, _)| classify(&topic, &e))?;
        Ok(TaskOutcome::Ok {
            output: json!({
                "topic": topic,
                "partition": delivery.partition,
                "offset": delivery.offset,
            }),
        })
    }
}

impl KafkaConnector {
    /// A missing topic is the definition's mistake: say so at once rather than let the
    /// producer wait out its timeout for a topic that will not appear.
    async fn exists(&self, topic: &str, left: Duration) -> Result<(), TaskOutcome> {
        if self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(topic)
        {
            return Ok(());
        }
        let client = self.producer.clone();
        let name = topic.to_owned();
        let wait = left.min(Duration::from_secs(5));
        let found = tokio::task::spawn_blocking(move || {
            client.client().fetch_metadata(Some(&name), wait).map(|md| {
                md.topics()
                    .iter()
                    .find(|t| t.name() == name)
                    .map(|t| (t.error(), t.partitions().len()))
            })
        })
        .await;
        match found {
            Ok(Ok(Some((None, n)))) if n > 0 => {
                self.known
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(topic.to_owned());
                Ok(())
            }
            // Absent, or present with an error (unknown topic) or no partitions.
            Ok(Ok(_)) => Err(fatal(format!(
                "kafka connector: topic {topic} does not exist; an operator creates a tenant's \
                 topics"
            ))),
            Ok(Err(e)) => Err(retryable(format!(
                "kafka connector: asking for {topic}'s metadata: {e}"
            ))),
            Err(e) => Err(retryable(format!("kafka connector: {e}"))),
        }
    }
}

fn classify(topic: &str, e: &KafkaError) -> TaskOutcome {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            fatal(format!(
                "kafka connector: topic {topic} does not exist; an operator creates a tenant's \
                 topics"
            ))
        }
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => fatal(format!(
            "kafka connector: not authorised to write to {topic}"
        )),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => {
            fatal(format!(
                "kafka connector: the message is too large for {topic}"
            ))
        }
        Some(RDKafkaErrorCode::MessageTimedOut) => TaskOutcome::Error {
            class: ErrorClass::Timeout,
            message: format!("kafka connector: {topic}: not acknowledged in time"),
        },
        _ => retryable(format!("kafka connector: {topic}: {e}")),
    }
}

impl Connector for KafkaConnector {
    fn call<'a>(&'a self, task: &'a TaskMessage, ctx: &'a CallContext<'a>) -> CallFuture<'a> {
        Box::pin(async move { self.run(task, ctx).await.unwrap_or_else(|e| e) })
    }
}

/// Whether `args` have the shape this connector takes (templates not yet filled in).
pub(crate) fn check_args(args: &serde_json::Value) -> Result<(), aiq_topics::TaskOutcome> {
    parse_args::<KafkaArgs>("kafka", args).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_can_name_only_its_tenants_topics() {
        assert_eq!(
            KafkaConnector::topic_for("aiq.", "acme", "orders"),
            "aiq.tenant.acme.orders"
        );
    }
}
