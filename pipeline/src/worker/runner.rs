//! The worker's consume loop: bounded concurrency, results before commits.
//!
//! Offsets are committed only for partitions this worker owns. Finished offsets go to
//! librdkafka's offset store, which takes them only for assigned partitions; its
//! auto-commit sends those that moved, retries failed commits, and commits a
//! partition's last stored offset when it is revoked. A rebalance callback drops a
//! partition's state when it is revoked (storing what it had reached first, while still
//! owned), so a worker can never move another one's committed offset backwards. Tasks
//! still running for a revoked partition still write their results (at least once);
//! their offsets are the new owner's to commit.

use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiq_kafka::{DeadLetterOrigin, KafkaSettings};
use aiq_topics::{DeadLetterKind, TRACEPARENT, TaskMessage, TaskResult, TopicKind, TraceParent};
use chrono::Utc;
use prometheus::Registry;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::worker::metrics::{STAGE, WorkerMetrics};
use crate::worker::offsets::Pending;
use aiq_connectors::Connectors;

/// How long a send may wait for room in the producer's queue.
const SEND_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` lets running tasks finish before abandoning them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// The consumer group of all workers, after the topic prefix (`aiq.worker`).
    pub group_id: String,
    /// Tasks run at once by this process; beyond it, consumption pauses.
    pub max_in_flight: usize,
    /// How often finished tasks' offsets are committed.
    pub commit_interval_ms: u64,
}

impl Default for WorkerSettings {
    /// The values of `config/aiq.toml`.
    fn default() -> Self {
        Self {
            group_id: "worker".into(),
            max_in_flight: 256,
            commit_interval_ms: 200,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("Kafka: {op}: {source}")]
    Kafka {
        op: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("the worker task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

fn kafka(op: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> WorkerError {
    move |source| WorkerError::Kafka { op, source }
}

pub struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), WorkerError>>,
}

impl Worker {
    pub fn start(
        kafka_settings: &KafkaSettings,
        settings: WorkerSettings,
        connectors: Connectors,
        registry: &Registry,
    ) -> Result<Self, WorkerError> {
        let topics = kafka_settings.topics();
        let tasks_topic: Arc<str> = topics.get(TopicKind::Tasks).name.as_str().into();
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let metrics = Arc::new(WorkerMetrics::new(registry));
        let context = WorkerContext {
            topic: Arc::clone(&tasks_topic),
            pending: Arc::clone(&pending),
            metrics: Arc::clone(&metrics),
        };
        let consumer: TaskConsumer = kafka_settings
            .client_config()
            .set(
                "group.id",
                format!("{}{}", kafka_settings.topic_prefix, settings.group_id),
            )
            // librdkafka commits what the worker stores, once its task is done.
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.commit.interval.ms",
                settings.commit_interval_ms.max(10).to_string(),
            )
            // Tasks are written in the orchestrator's transactions.
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            // The prefetch buffer is bounded too.
            .set("queued.max.messages.kbytes", "16384")
            .set(
                "statistics.interval.ms",
                crate::lag::SAMPLE_INTERVAL_MS.to_string(),
            )
            .create_with_context(context)
            .map_err(kafka("create the task consumer"))?;
        consumer
            .subscribe(&[&tasks_topic])
            .map_err(kafka("subscribe to tasks"))?;
        let producer: FutureProducer = kafka_settings
            .producer_config()
            .set("linger.ms", "2")
            .create()
            .map_err(kafka("create the result producer"))?;
        let (stop, mut stop_rx) = watch::channel(false);
        // What every task needs, shared once rather than copied per task.
        let shared = Arc::new(Shared {
            producer,
            pending,
            connectors,
            metrics,
            results: topics.get(TopicKind::Results).name.clone(),
            dead_letters: topics.get(TopicKind::DeadLetters).name.clone(),
            abandon: watch::Sender::new(false),
        });
        let consumer = Arc::new(consumer);
        let slots = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
        // Stored twice per commit interval, so a finished offset waits at most about
        // one and a half intervals to be committed.
        let store_every = Duration::from_millis(settings.commit_interval_ms.max(10) / 2);

        let task = tokio::spawn(async move {
            let storer = {
                let (consumer, shared) = (Arc::clone(&consumer), Arc::clone(&shared));
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(store_every);
                    loop {
                        tick.tick().await;
                        store(&consumer, &shared.pending);
                    }
                })
            };
            loop {
                let permit = tokio::select! {
                    p = Arc::clone(&slots).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = stop_rx.changed() => break,
                };
                // Rebalance callbacks run in here, on this task.
                let msg = tokio::select! {
                    m = consumer.recv() => m,
                    _ = stop_rx.changed() => break,
                };
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "task consumer error");
                        continue;
                    }
                };
                let ticket = lock(&shared.pending).started(msg.partition(), msg.offset());
                let task: TaskMessage = match msg.payload().map(serde_json::from_slice) {
                    Some(Ok(t)) => t,
                    other => {
                        let reason = match other {
                            Some(Err(e)) => format!("task is not valid: {e}"),
                            _ => "task record has no value".to_owned(),
                        };
                        let origin = DeadLetterOrigin {
                            kind: DeadLetterKind::Undecodable,
                            reason: &reason,
                            stage: STAGE,
                            topic: msg.topic(),
                            partition: msg.partition(),
                            offset: msg.offset(),
                        };
                        let headers = match msg.headers() {
                            Some(original) => origin.headers_after(original),
                            None => origin.headers(),
                        };
                        shared
                            .metrics
                            .dead_letters
                            .with_label_values(&[DeadLetterKind::Undecodable.as_str()])
                            .inc();
                        let at = format!("{}/{}@{}", msg.topic(), msg.partition(), msg.offset());
                        tracing::warn!(record = %at, %reason, "task record dead-lettered");
                        let key = msg.key().map(<[u8]>::to_vec);
                        let payload = msg.payload().map(<[u8]>::to_vec);
                        let shared = Arc::clone(&shared);
                        // Like a result: the offset is done only once Kafka has the
                        // dead letter, so keep trying (off this loop, which must keep
                        // serving rebalances).
                        tokio::spawn(async move {
                            let sent = shared.send_until_acked(
                                &shared.dead_letters,
                                key.as_deref(),
                                payload.as_deref(),
                                Some(&headers),
                                &at,
                            );
                            if sent.await {
                                lock(&shared.pending).finished(ticket);
                            }
                            drop(permit);
                        });
                        continue;
                    }
                };
                let shared = Arc::clone(&shared);
                shared.metrics.in_flight.inc();
                // Every log line of the task, connectors' included, names what it is.
                let span = tracing::error_span!(
                    "task",
                    tenant = %task.tenant,
                    run_id = %task.run,
                    step = %task.step,
                    attempt = task.attempt,
                    trace_id = %TraceParent::of_task(&task).trace_id,
                );
                let work = async move {
                    let started_at = Utc::now();
                    let clock = Instant::now();
                    let outcome = shared.connectors.call(&task).await;
                    let class = match &outcome {
                        aiq_topics::TaskOutcome::Ok { .. } => "ok",
                        aiq_topics::TaskOutcome::Error { class, .. } => class.as_str(),
                    };
                    let seconds = clock.elapsed().as_secs_f64();
                    let class = class.to_owned();
                    let TaskMessage {
                        tenant,
                        run,
                        step,
                        attempt,
                        ..
                    } = task;
                    let result = TaskResult {
                        tenant,
                        run,
                        step,
                        attempt,
                        outcome,
                        started_at,
                        finished_at: Utc::now(),
                    };
                    let payload = serde_json::to_vec(&result).unwrap_or_default();
                    shared.metrics.task_done(
                        &result.tenant,
                        &task.connector,
                        &class,
                        seconds,
                        payload.len(),
                    );
                    shared.metrics.in_flight.dec();
                    let key = result.tenant.as_str().as_bytes();
                    let traceparent = TraceParent::of_result(&result).to_string();
                    let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
                        key: TRACEPARENT,
                        value: Some(traceparent.as_bytes()),
                    });
                    // At least once: only once Kafka has the result may the task's
                    // offset be committed.
                    let sent = shared.send_until_acked(
                        &shared.results,
                        Some(key),
                        Some(&payload),
                        Some(&headers),
                        &result.run,
                    );
                    if sent.await {
                        lock(&shared.pending).finished(ticket);
                    }
                    drop(permit);
                };
                tokio::spawn(work.instrument(span));
            }
            // Let running tasks finish (bounded by their timeouts), then commit.
            let all = u32::try_from(settings.max_in_flight.max(1)).unwrap_or(u32::MAX);
            if tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all))
                .await
                .is_err()
            {
                tracing::warn!(
                    "tasks still running at stop are abandoned; their offsets stay uncommitted"
                );
                shared.abandon.send_replace(true);
            }
            storer.abort();
            let _ = storer.await;
            store(&consumer, &shared.pending);
            // Leave the group now, not whenever the last reference happens to go:
            // closing serves the revocation, commits what is stored and waits for
            // that commit. It blocks.
            let _ = tokio::task::spawn_blocking(move || {
                consumer.unsubscribe();
                drop(consumer);
            })
            .await;
            Ok(())
        });
        Ok(Self { stop, task })
    }

    /// Stops taking tasks, lets the running ones finish, commits and leaves.
    pub async fn stop(self) -> Result<(), WorkerError> {
        let _ = self.stop.send(true);
        self.task.await?
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

type TaskConsumer = StreamConsumer<WorkerContext>;

struct Shared {
    producer: FutureProducer,
    pending: Arc<Mutex<Pending>>,
    connectors: Connectors,
    metrics: Arc<WorkerMetrics>,
    results: String,
    dead_letters: String,
    /// Set when `stop` gives up waiting for running tasks: their sends stop retrying.
    abandon: watch::Sender<bool>,
}

impl Shared {
    /// Sends until Kafka acknowledges (true), backing off between tries; gives up
    /// (false) only when the worker abandons its tasks, leaving the offset uncommitted
    /// so that the task is done again.
    async fn send_until_acked(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<&OwnedHeaders>,
        subject: &(dyn Display + Sync),
    ) -> bool {
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
                _ = abandon.wait_for(|a| *a) => return false,
            };
            match sent {
                Ok(_) => return true,
                Err((e, _)) => {
                    tracing::warn!(error = %e, topic, %subject, "not written; retrying");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = abandon.wait_for(|a| *a) => return false,
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

/// Keeps the committable offsets to the partitions the worker owns: runs inside the
/// consumer's poll (`recv`), before and after librdkafka changes the assignment.
struct WorkerContext {
    topic: Arc<str>,
    pending: Arc<Mutex<Pending>>,
    metrics: Arc<WorkerMetrics>,
}

impl WorkerContext {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == &*self.topic)
            .map(|e| e.partition())
            .collect()
    }
}

impl ClientContext for WorkerContext {
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        self.metrics.lag.observe(&statistics);
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let revoked = self.partitions(tpl);
        let mut pending = lock(&self.pending);
        let last = pending.revoke(&revoked);
        if consumer.assignment_lost() {
            // Someone else may own them already: librdkafka commits nothing for them.
            tracing::warn!(partitions = ?revoked, "task partitions lost");
            return;
        }
        // Still assigned until this callback returns: librdkafka commits what is
        // stored now as it removes the partitions, and waits for that commit before
        // rejoining the group.
        if !last.is_empty() {
            let (_, failed) = store_offsets(consumer, &self.topic, &last);
            if let Some(e) = failed {
                tracing::debug!(error = %e, "offsets of revoked task partitions not stored");
            }
        }
        tracing::info!(partitions = ?revoked, "task partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Error(e) = rebalance {
            tracing::warn!(error = %e, "task consumer rebalance error");
        }
        // Whatever happened, own exactly what librdkafka now says is assigned.
        match consumer.assignment() {
            Ok(tpl) => {
                let assigned = self.partitions(&tpl);
                lock(&self.pending).set_assignment(&assigned);
                if let Rebalance::Assign(_) = rebalance {
                    tracing::info!(partitions = ?assigned, "task partitions assigned");
                }
            }
            Err(e) => {
                // Nothing owned means nothing committed: tasks are redone, not lost.
                tracing::warn!(error = %e, "task assignment unknown; committing nothing");
                lock(&self.pending).set_assignment(&[]);
            }
        }
    }

    /// The auto-commits' outcome; a failed one is retried by the next.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Err(e) => tracing::debug!(error = %e, "task offsets not committed; retrying"),
            Ok(()) => {
                for e in offsets.elements() {
                    if let Err(err) = e.error() {
                        tracing::debug!(error = %err, partition = e.partition(), "task offset not committed; retrying");
                    }
                }
            }
        }
    }
}

fn lock(p: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands the offsets that moved to librdkafka's store, for its auto-commit.
fn store(consumer: &TaskConsumer, pending: &Mutex<Pending>) {
    // Under the lock until librdkafka has the offsets: a revocation (whose callback
    // takes the lock too) cannot come between reading them and storing them.
    let mut pending = lock(pending);
    let offsets = pending.take_changed();
    if offsets.is_empty() {
        return;
    }
    let (refused, failed) = store_offsets(consumer, &consumer.context().topic, &offsets);
    if let Some(e) = failed {
        tracing::debug!(error = %e, "task offsets not stored (a rebalance?)");
    }
    for (p, o) in refused {
        pending.hand_over_failed(p, o);
    }
}

/// Stores `offsets`; returns the ones librdkafka refused (a partition no longer
/// assigned) and the error, if any.
fn store_offsets(
    consumer: &impl Consumer<WorkerContext>,
    topic: &str,
    offsets: &[(i32, i64)],
) -> (Vec<(i32, i64)>, Option<KafkaError>) {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for &(p, o) in offsets {
        if let Err(e) = tpl.add_partition_offset(topic, p, Offset::Offset(o)) {
            return (offsets.to_vec(), Some(e));
        }
    }
    match consumer.store_offsets(&tpl) {
        // librdkafka marks each partition it refused.
        Ok(()) => {
            let mut refused = Vec::new();
            let mut failed = None;
            for e in tpl.elements() {
                if let (Err(err), Offset::Offset(o)) = (e.error(), e.offset()) {
                    refused.push((e.partition(), o));
                    failed = Some(err);
                }
            }
            (refused, failed)
        }
        Err(e) => (offsets.to_vec(), Some(e)),
    }
}
