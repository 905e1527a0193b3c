//! Reads a (compacted) topic from its beginning into memory and keeps following it.
//!
//! Used for state every instance holds whole, such as workflow definitions and sealed
//! secrets. It reports when it has caught up with the end the topic had at start, so
//! that a process can say it is ready only once it knows everything that was there.
//!
//! A tail is a stage like any other: [`tail_topic_named`] (or [`tail_topic`], which
//! names it "tail") starts it and the returned [`Tail`] holds its
//! [`StageHandle`](aiq_stage::StageHandle). The loop ends cleanly once the stage is
//! stopped, through [`Tail::handle`] or by dropping the `Tail` and every handle taken
//! from it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiq_stage::{StageHandle, StopSignal};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::settings::{Isolation, KafkaError, KafkaSettings};

/// One record as read: key and payload (a tombstone has no payload).
pub struct TailRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub partition: i32,
    pub offset: i64,
}

/// A running tail: whether it has caught up, a way to wait for the topic's present end,
/// and its stage.
pub struct Tail {
    caught_up: watch::Receiver<bool>,
    stage: StageHandle,
    sync: TailSync,
}

/// Lets a thread wait until the tail has read everything the topic holds *now*: a
/// reader that misses a key asks this before concluding that the key does not exist.
#[derive(Clone)]
pub struct TailSync {
    topic: String,
    /// The topic's partitions when the tail started: the ones it reads.
    partitions: Arc<[i32]>,
    /// The next offset to be handed over, per partition.
    consumed: Arc<Mutex<HashMap<i32, i64>>>,
    watermarks: Arc<BaseConsumer>,
}

impl TailSync {
    /// Blocks until every record present when called has been handed over, or until
    /// `timeout`; returns whether it caught up. The whole call, asking the brokers
    /// where each partition ends included, stays within `timeout`.
    pub fn catch_up_blocking(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut ends = Vec::with_capacity(self.partitions.len());
        for &p in self.partitions.iter() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.watermarks.fetch_watermarks(&self.topic, p, left) {
                Ok((low, high)) if high > low => ends.push((p, high)),
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        loop {
            let done = {
                let consumed = self.consumed.lock().unwrap_or_else(|p| p.into_inner());
                ends.iter()
                    .all(|(p, end)| consumed.get(p).is_some_and(|c| c >= end))
            };
            if done {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Tail {
    /// Waits until every record present at start has been handed over.
    pub async fn caught_up(&mut self) {
        // The sender lives as long as the loop; if the loop ended, nothing more comes.
        let _ = self.caught_up.wait_for(|c| *c).await;
    }

    pub fn is_caught_up(&self) -> bool {
        *self.caught_up.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<bool> {
        self.caught_up.clone()
    }

    pub fn sync(&self) -> TailSync {
        self.sync.clone()
    }

    /// The tail's stage. A clone keeps the tail running after the `Tail` is dropped.
    pub fn handle(&self) -> StageHandle {
        self.stage.clone()
    }
}

const META_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the loop waits for a record before asking where the consumer stands.
const IDLE: Duration = Duration::from_millis(200);

/// [`tail_topic_named`] with the stage named "tail".
pub async fn tail_topic<F>(
    settings: &KafkaSettings,
    topic: &str,
    on_record: F,
) -> Result<Tail, KafkaError>
where
    F: FnMut(TailRecord<'_>) + Send + 'static,
{
    tail_topic_named("tail", settings, topic, on_record).await
}

/// Starts following `topic` as the stage `name`, calling `on_record` for every record in
/// offset order per partition.
pub async fn tail_topic_named<F>(
    name: &'static str,
    settings: &KafkaSettings,
    topic: &str,
    on_record: F,
) -> Result<Tail, KafkaError>
where
    F: FnMut(TailRecord<'_>) + Send + 'static,
{
    let consumer: StreamConsumer = settings
        .client_config()
        // No group coordination: every instance reads everything and commits nothing.
        .set("group.id", format!("aiq-tail-{}", uuid_like()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|source| KafkaError::Client {
            what: "tail consumer",
            brokers: settings.brokers.clone(),
            source,
        })?;

    let watermarks = settings
        .watermark_client(
            &format!("aiq-tail-{}", uuid_like()),
            Isolation::ReadCommitted,
        )
        .map_err(|source| KafkaError::Client {
            what: "tail watermark client",
            brokers: settings.brokers.clone(),
            source,
        })?;
    let topic_name = topic.to_owned();
    let (consumer, ends, partitions) = tokio::task::spawn_blocking(move || {
        let md = consumer
            .fetch_metadata(Some(&topic_name), META_TIMEOUT)
            .map_err(|source| KafkaError::Admin {
                op: "metadata",
                source,
            })?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic_name && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(KafkaError::AdminItem {
                op: "tail",
                resource: topic_name.clone(),
                code: "topic does not exist (run `aiq topics apply`)".into(),
            });
        }
        let mut ends = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            let ends_of = settled_watermarks(&consumer, &topic_name, p, META_TIMEOUT);
            let (low, high) = ends_of.map_err(|source| KafkaError::Admin {
                op: "watermarks",
                source,
            })?;
            if high > low {
                ends.insert(p, high);
            }
            tpl.add_partition_offset(&topic_name, p, Offset::Beginning)
                .map_err(|source| KafkaError::Admin {
                    op: "assign",
                    source,
                })?;
        }
        consumer.assign(&tpl).map_err(|source| KafkaError::Admin {
            op: "assign",
            source,
        })?;
        Ok((consumer, ends, partitions))
    })
    .await
    .map_err(|e| KafkaError::AdminItem {
        op: "tail",
        resource: topic.to_owned(),
        code: e.to_string(),
    })??;

    let consumed: Arc<Mutex<HashMap<i32, i64>>> = Arc::default();
    let sync = TailSync {
        topic: topic.to_owned(),
        partitions: partitions.into(),
        consumed: Arc::clone(&consumed),
        watermarks: Arc::new(watermarks),
    };
    let (tx, rx) = watch::channel(ends.is_empty());
    let run = Follow {
        consumer,
        topic: topic.to_owned(),
        on_record,
        consumed,
        pending: ends,
        caught_up: tx,
    };
    let stage = aiq_stage::spawn_task(name, move |stop| run.run(stop));
    Ok(Tail {
        caught_up: rx,
        stage,
        sync,
    })
}

/// The tail's loop and what it owns.
struct Follow<F> {
    consumer: StreamConsumer,
    topic: String,
    on_record: F,
    consumed: Arc<Mutex<HashMap<i32, i64>>>,
    /// Partitions not yet read to the end they had at start, with that end.
    pending: HashMap<i32, i64>,
    caught_up: watch::Sender<bool>,
}

impl<F> Follow<F>
where
    F: FnMut(TailRecord<'_>) + Send + 'static,
{
    /// Follows until stopped. Consumer errors are retried, never fatal: a tail that gave
    /// up would leave the process serving from state that no longer moves.
    async fn run(mut self, stop: StopSignal) -> Result<(), std::convert::Infallible> {
        loop {
            let next = tokio::select! {
                biased;
                () = stop.stopped() => break,
                m = tokio::time::timeout(IDLE, self.consumer.recv()) => m,
            };
            match next {
                Ok(Ok(msg)) => {
                    (self.on_record)(TailRecord {
                        key: msg.key(),
                        payload: msg.payload(),
                        partition: msg.partition(),
                        offset: msg.offset(),
                    });
                    let (partition, next_offset) = (msg.partition(), msg.offset() + 1);
                    drop(msg);
                    self.reached(partition, next_offset);
                }
                Ok(Err(e)) => {
                    tracing::warn!(topic = self.topic, error = %e, "tail consumer error; retrying");
                }
                Err(_) => {
                    // Idle: transaction markers and compaction leave offsets that no
                    // record carries, so ask where the consumer stands.
                    if let Ok(pos) = self.consumer.position() {
                        for e in pos.elements() {
                            if let Offset::Offset(o) = e.offset() {
                                self.reached(e.partition(), o);
                            }
                        }
                    }
                }
            }
            if self.pending.is_empty() && !*self.caught_up.borrow() {
                self.caught_up.send_replace(true);
            }
        }
        Ok(())
    }

    /// Everything of `partition` before `next` has been handed over.
    fn reached(&mut self, partition: i32, next: i64) {
        self.consumed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition, next);
        if self.pending.get(&partition).is_some_and(|end| next >= *end) {
            self.pending.remove(&partition);
        }
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", std::process::id())
}

/// The partition's watermarks, asked again while a just-created topic's leadership is
/// still settling (the broker answers "not leader" or "leader not available" for a
/// moment after creation); any other error, or `timeout` running out, is returned.
fn settled_watermarks<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<(i64, i64), rdkafka::error::KafkaError> {
    use rdkafka::types::RDKafkaErrorCode as Code;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match consumer.fetch_watermarks(topic, partition, left) {
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        Code::NotLeaderForPartition
                            | Code::LeaderNotAvailable
                            | Code::UnknownTopicOrPartition
                    )
                ) && left > Duration::from_millis(200) =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Nothing answers: the call as a whole still ends at its timeout, not after one
    /// full timeout per partition.
    #[test]
    fn catching_up_stays_within_its_timeout_when_the_brokers_do_not_answer() {
        let settings = KafkaSettings::plaintext("127.0.0.1:1", "t.", 1, 1);
        let watermarks: BaseConsumer = settings
            .client_config()
            .set("group.id", "aiq-tail-test")
            .create()
            .unwrap();
        let sync = TailSync {
            topic: "t.definitions".into(),
            partitions: vec![0, 1, 2, 3].into(),
            consumed: Arc::default(),
            watermarks: Arc::new(watermarks),
        };
        let started = Instant::now();
        assert!(!sync.catch_up_blocking(Duration::from_millis(300)));
        let took = started.elapsed();
        assert!(took < Duration::from_millis(900), "took {took:?}");
    }

    /// Stopping ends the loop cleanly, and so does dropping the last handle: nothing
    /// keeps reading a topic nobody follows any more.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_tail_ends_when_stopped_or_dropped() {
        let brokers = aiq_testkit::require_service!(aiq_testkit::KAFKA);
        let s = KafkaSettings::plaintext(
            brokers,
            format!("{}.", aiq_testkit::unique("tail-stop")),
            1,
            1,
        );
        let set = s.topics();
        crate::apply_topics(&s, &set).await.unwrap();
        let topic = set.name(aiq_topics::TopicKind::Definitions);

        let tail = tail_topic_named("definitions", &s, topic, |_| {})
            .await
            .unwrap();
        let handle = tail.handle();
        assert_eq!(handle.name(), "definitions");
        assert!(!handle.is_finished());
        tokio::time::timeout(Duration::from_secs(10), handle.shutdown())
            .await
            .expect("ends within 10 s")
            .unwrap();

        let tail = tail_topic(&s, topic, |_| {}).await.unwrap();
        assert_eq!(tail.handle().name(), "tail");
        let mut caught_up = tail.watch();
        drop(tail);
        // The loop owns the sender: the channel closes once the loop has ended.
        let closed = tokio::time::timeout(Duration::from_secs(10), caught_up.changed()).await;
        assert!(closed.expect("ends within 10 s").is_err());
    }
}
