//! Starting the worker stage: its consumer, its producer, and the loop as a task.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiq_connectors::Connectors;
use aiq_kafka::KafkaSettings;
use aiq_stage::StageHandle;
use aiq_topics::TopicKind;
use prometheus::Registry;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureProducer;
use tokio::sync::{Semaphore, watch};

use crate::commits::{TaskConsumer, WorkerContext};
use crate::error::{WorkerError, kafka};
use crate::metrics::{STAGE, WorkerMetrics};
use crate::notifier::Notifier;
use crate::offsets::Pending;
use crate::settings::WorkerSettings;
use crate::shared::Shared;
use crate::worker_loop::WorkerLoop;

/// Starts a worker on the current tokio runtime; the handle's stage is named "worker".
/// Stopping it stops taking tasks, lets the running ones finish, commits and leaves.
pub fn spawn(
    kafka_settings: &KafkaSettings,
    settings: WorkerSettings,
    connectors: Connectors,
    vault: Arc<aiq_vault::Vault>,
    registry: &Registry,
) -> Result<StageHandle, WorkerError> {
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
        .group_member_config()
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
            aiq_kafka::lag::SAMPLE_INTERVAL_MS.to_string(),
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
    let notifier = notifier(
        kafka_settings,
        &settings,
        &connectors,
        &producer,
        &metrics,
        &vault,
    )?;
    // What every task needs, shared once rather than copied per task.
    let shared = Arc::new(Shared {
        producer,
        pending,
        connectors,
        metrics,
        results: topics.get(TopicKind::Results).name.clone(),
        dead_letters: topics.get(TopicKind::DeadLetters).name.clone(),
        audit: topics.get(TopicKind::Audit).name.clone(),
        max_result_bytes: settings.max_result_bytes,
        abandon: watch::Sender::new(false),
        vault,
    });
    let worker = WorkerLoop {
        consumer: Arc::new(consumer),
        shared,
        slots: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
        max_in_flight: settings.max_in_flight,
        // Stored twice per commit interval, so a finished offset waits at most about
        // one and a half intervals to be committed.
        store_every: Duration::from_millis(settings.commit_interval_ms.max(10) / 2),
    };
    Ok(aiq_stage::spawn_task(STAGE, move |stop| async move {
        let notifying = tokio::spawn(notifier.run(stop.clone()));
        let worked = worker.run(stop).await;
        if let Err(e) = notifying.await {
            tracing::warn!(error = %e, "the notifier did not end cleanly");
        }
        worked
    }))
}

/// The notifier (`crate::notifier`): its own consumer group on the notifications
/// topic, the worker's connectors, and its producer for the outcome events.
fn notifier(
    kafka_settings: &KafkaSettings,
    settings: &WorkerSettings,
    connectors: &Connectors,
    producer: &FutureProducer,
    metrics: &Arc<WorkerMetrics>,
    vault: &Arc<aiq_vault::Vault>,
) -> Result<Notifier, WorkerError> {
    let topics = kafka_settings.topics();
    let topic: Arc<str> = topics.name(TopicKind::Notifications).into();
    let pending: Arc<Mutex<Pending>> = Arc::default();
    let context = WorkerContext {
        topic: Arc::clone(&topic),
        pending: Arc::clone(&pending),
        metrics: Arc::clone(metrics),
    };
    let consumer: TaskConsumer = kafka_settings
        .group_member_config()
        .set(
            "group.id",
            format!(
                "{}{}-notifier",
                kafka_settings.topic_prefix, settings.group_id
            ),
        )
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.commit.interval.ms",
            settings.commit_interval_ms.max(10).to_string(),
        )
        // Written in the orchestrator's transactions.
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("queued.max.messages.kbytes", "4096")
        .create_with_context(context)
        .map_err(kafka("create the notification consumer"))?;
    consumer
        .subscribe(&[&topic])
        .map_err(kafka("subscribe to notifications"))?;
    Ok(Notifier {
        consumer: Arc::new(consumer),
        pending,
        connectors: connectors.clone(),
        producer: producer.clone(),
        events: topics.name(TopicKind::Events).to_owned(),
        store_every: Duration::from_millis(settings.commit_interval_ms.max(10) / 2),
        vault: Arc::clone(vault),
    })
}
