//! What every running task shares: the result producer and its send that retries until
//! Kafka acknowledges, the offsets bookkeeping, the connectors and the metrics.

use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiq_connectors::Connectors;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::watch;

use crate::metrics::WorkerMetrics;
use crate::offsets::Pending;

/// What became of a record [`Shared::send_until_acked`] was given.
#[derive(Debug)]
pub(crate) enum Sent {
    Acked,
    /// The worker is stopping and gave up on its running tasks.
    Abandoned,
    /// Kafka (or librdkafka before it) will never take this record.
    Refused(KafkaError),
}

/// Errors that the same record would meet again however often it is sent.
fn refused_for_good(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// How long a send may wait for room in the producer's queue.
const SEND_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Shared {
    pub(crate) producer: FutureProducer,
    pub(crate) pending: Arc<Mutex<Pending>>,
    pub(crate) connectors: Connectors,
    pub(crate) metrics: Arc<WorkerMetrics>,
    pub(crate) results: String,
    pub(crate) dead_letters: String,
    /// The audit topic: every secret a task opened is recorded there.
    pub(crate) audit: String,
    /// A result encoding to more than this becomes a `too_large` error.
    pub(crate) max_result_bytes: usize,
    /// Set when a stop gives up waiting for running tasks: their sends stop retrying.
    pub(crate) abandon: watch::Sender<bool>,
    /// The tenants' data keys: arguments are opened before the call, outputs sealed.
    pub(crate) vault: Arc<aiq_vault::Vault>,
}

impl Shared {
    /// Sends until Kafka acknowledges, backing off between tries; gives up only when the
    /// worker abandons its tasks (leaving the offset uncommitted so that the task is done
    /// again) or when Kafka refuses the record for good (trying again cannot help).
    pub(crate) async fn send_until_acked(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<&OwnedHeaders>,
        subject: &(dyn Display + Sync),
    ) -> Sent {
        let mut abandon = self.abandon.subscribe();
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic);
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(p) = payload {
                record = record.payload(p);
            }
            if let Some(h) = headers {
                record = record.headers(h.clone());
            }
            let sent = tokio::select! {
                r = self.producer.send(record, SEND_QUEUE_TIMEOUT) => r,
                _ = abandon.wait_for(|a| *a) => return Sent::Abandoned,
            };
            match sent {
                Ok(_) => return Sent::Acked,
                Err((e, _)) if refused_for_good(&e) => return Sent::Refused(e),
                Err((e, _)) => {
                    tracing::warn!(error = %e, topic, %subject, "not written; retrying");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = abandon.wait_for(|a| *a) => return Sent::Abandoned,
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}
