//! The worker's consume loop: bounded concurrency, results before commits.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiq_kafka::KafkaSettings;
use aiq_topics::{TaskMessage, TaskResult, TopicKind};
use chrono::Utc;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::worker::offsets::Pending;
use aiq_connectors::Connectors;

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

struct Metrics {
    tasks: IntCounterVec,
    seconds: HistogramVec,
}

impl Metrics {
    fn new(registry: &Registry) -> Self {
        let tasks = IntCounterVec::new(
            Opts::new(
                "aiq_worker_tasks_total",
                "Tasks run, by connector and outcome class",
            ),
            &["connector", "outcome"],
        )
        .unwrap_or_else(|e| unreachable!("constant metric: {e}"));
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "aiq_worker_task_seconds",
                "Time one task attempt took, by connector",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["connector"],
        )
        .unwrap_or_else(|e| unreachable!("constant metric: {e}"));
        let _ = registry.register(Box::new(tasks.clone()));
        let _ = registry.register(Box::new(seconds.clone()));
        Self { tasks, seconds }
    }
}

impl Worker {
    pub fn start(
        kafka_settings: &KafkaSettings,
        settings: WorkerSettings,
        connectors: Connectors,
        registry: &Registry,
    ) -> Result<Self, WorkerError> {
        let topics = kafka_settings.topics();
        let tasks_topic = topics.get(TopicKind::Tasks).name.clone();
        let results_topic = topics.get(TopicKind::Results).name.clone();
        let dead_letters = topics.get(TopicKind::DeadLetters).name.clone();
        let consumer: StreamConsumer = kafka_settings
            .client_config()
            .set(
                "group.id",
                format!("{}{}", kafka_settings.topic_prefix, settings.group_id),
            )
            .set("enable.auto.commit", "false")
            // Tasks are written in the orchestrator's transactions.
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            // The prefetch buffer is bounded too.
            .set("queued.max.messages.kbytes", "16384")
            .create()
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
        let metrics = Arc::new(Metrics::new(registry));
        let consumer = Arc::new(consumer);
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let slots = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
        let commit_every = Duration::from_millis(settings.commit_interval_ms.max(10));

        let task = tokio::spawn(async move {
            let committer = {
                let (consumer, pending) = (Arc::clone(&consumer), Arc::clone(&pending));
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(commit_every);
                    loop {
                        tick.tick().await;
                        commit(&consumer, &pending);
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
                let (topic, partition, offset) =
                    (msg.topic().to_owned(), msg.partition(), msg.offset());
                lock(&pending).started(&topic, partition, offset);
                let task: TaskMessage = match msg.payload().map(serde_json::from_slice) {
                    Some(Ok(t)) => t,
                    other => {
                        let reason = match other {
                            Some(Err(e)) => format!("task is not valid: {e}"),
                            _ => "task record has no value".to_owned(),
                        };
                        let mut record = FutureRecord::to(&dead_letters).headers(
                            OwnedHeaders::new()
                                .insert(header(
                                    aiq_topics::dead_letter::headers::KIND,
                                    "undecodable",
                                ))
                                .insert(header(aiq_topics::dead_letter::headers::REASON, &reason))
                                .insert(header(aiq_topics::dead_letter::headers::STAGE, "worker"))
                                .insert(header(aiq_topics::dead_letter::headers::TOPIC, &topic)),
                        );
                        let key = msg.key().unwrap_or_default().to_vec();
                        let payload = msg.payload().unwrap_or_default().to_vec();
                        record = record.key(&key).payload(&payload);
                        if let Err((e, _)) = producer.send(record, Duration::from_secs(30)).await {
                            tracing::error!(error = %e, "dead letter not written");
                            continue;
                        }
                        lock(&pending).finished(&topic, partition, offset);
                        drop(permit);
                        continue;
                    }
                };
                let (producer, pending, connectors, metrics, results) = (
                    producer.clone(),
                    Arc::clone(&pending),
                    connectors.clone(),
                    Arc::clone(&metrics),
                    results_topic.clone(),
                );
                tokio::spawn(async move {
                    let started_at = Utc::now();
                    let clock = Instant::now();
                    let outcome = connectors.call(&task).await;
                    let class = match &outcome {
                        aiq_topics::TaskOutcome::Ok { .. } => "ok",
                        aiq_topics::TaskOutcome::Error { class, .. } => class.as_str(),
                    };
                    metrics
                        .tasks
                        .with_label_values(&[task.connector.as_str(), class])
                        .inc();
                    metrics
                        .seconds
                        .with_label_values(&[task.connector.as_str()])
                        .observe(clock.elapsed().as_secs_f64());
                    let result = TaskResult {
                        tenant: task.tenant.clone(),
                        run: task.run,
                        step: task.step.clone(),
                        attempt: task.attempt,
                        outcome,
                        started_at,
                        finished_at: Utc::now(),
                    };
                    let payload = serde_json::to_vec(&result).unwrap_or_default();
                    let key = task.tenant.as_str().as_bytes();
                    // At least once: keep trying until Kafka has the result; only then
                    // may the task's offset be committed.
                    let mut backoff = Duration::from_millis(100);
                    loop {
                        let record = FutureRecord::to(&results).key(key).payload(&payload);
                        match producer.send(record, Duration::from_secs(30)).await {
                            Ok(_) => break,
                            Err((e, _)) => {
                                tracing::warn!(error = %e, run = %task.run, "result not written; retrying");
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(10));
                            }
                        }
                    }
                    lock(&pending).finished(&topic, partition, offset);
                    drop(permit);
                });
            }
            // Let running tasks finish (bounded by their timeouts), then commit.
            let all = u32::try_from(settings.max_in_flight.max(1)).unwrap_or(u32::MAX);
            let _ = tokio::time::timeout(Duration::from_secs(60), slots.acquire_many(all)).await;
            committer.abort();
            commit(&consumer, &pending);
            consumer.unsubscribe();
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

fn lock(p: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a [u8]> {
    Header {
        key,
        value: Some(value.as_bytes()),
    }
}

fn commit(consumer: &StreamConsumer, pending: &Mutex<Pending>) {
    let offsets = lock(pending).committable();
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p, o) in offsets {
        if tpl.add_partition_offset(&t, p, Offset::Offset(o)).is_err() {
            return;
        }
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::debug!(error = %e, "task offsets not committed (a rebalance?)");
    }
}
