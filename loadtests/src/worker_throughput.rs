//! Throughput of the worker stage alone through Kafka: a backlog of N no-op tasks is
//! written to the tasks topic first, then one worker (in this process) is started, and
//! the clock runs until N results are on the results topic. No orchestrator: this is the
//! ceiling of one worker process, consume → connector → produce result → commit.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiq_connectors::{ConnectorSettings, Connectors, SecretStore};
use aiq_kafka::{KafkaSettings, apply_topics};
use aiq_pipeline::worker::{Worker, WorkerSettings};
use aiq_topics::{RunId, StepId, TaskMessage, TaskResult, TenantId, TopicKind, WorkflowId};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

pub struct Report {
    pub tasks: usize,
    pub max_in_flight: usize,
    pub seconds: f64,
}

pub async fn measure(
    brokers: &str,
    tasks: usize,
    tenants: usize,
    max_in_flight: usize,
) -> anyhow::Result<Report> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let kafka = KafkaSettings::plaintext(brokers, format!("wload-{stamp}."), 12, 12);
    apply_topics(&kafka, &kafka.topics()).await?;
    let topic = |k: TopicKind| kafka.topics().get(k).name.clone();
    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka.producer_config().set("linger.ms", "5").create()?;
    let tasks_topic = topic(TopicKind::Tasks);
    let wf = WorkflowId::new("bench").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let step = StepId::new("s").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for i in 0..tasks {
        let tenant =
            TenantId::new(format!("t{}", i % tenants)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let task = TaskMessage {
            run: RunId::from_idempotency_key(&tenant, &wf, &i.to_string()),
            tenant: tenant.clone(),
            step: step.clone(),
            attempt: 1,
            connector: "noop".into(),
            args: json!({"output": i}),
            timeout_ms: 60_000,
            dispatched_at: chrono::Utc::now(),
        };
        let key = format!("{}/{}", task.tenant, task.run);
        let payload = serde_json::to_vec(&task)?;
        let mut r = BaseRecord::<[u8], [u8]>::to(&tasks_topic)
            .key(key.as_bytes())
            .payload(&payload);
        loop {
            match producer.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;

    let results: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("wload-reader-{stamp}"))
        .set("enable.auto.commit", "false")
        .create()?;
    let results_topic = topic(TopicKind::Results);
    let md = results.fetch_metadata(Some(&results_topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(&results_topic, p.id(), Offset::Beginning)?;
        }
    }
    results.assign(&tpl)?;

    let registry = prometheus::Registry::new();
    let started = Instant::now();
    let worker = Worker::start(
        &kafka,
        WorkerSettings {
            max_in_flight,
            ..WorkerSettings::default()
        },
        Connectors::builtin(
            &ConnectorSettings::default(),
            Arc::new(SecretStore::fixed(None, Vec::new())),
            None,
            &registry,
        )?,
        &registry,
    )?;
    let seen = tokio::task::spawn_blocking(move || {
        // Distinct (run, attempt): a redelivered task would answer twice.
        let mut seen = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(1800);
        while seen.len() < tasks && Instant::now() < deadline {
            if let Some(Ok(m)) = results.poll(Duration::from_millis(100))
                && let Some(Ok(r)) = m.payload().map(serde_json::from_slice::<TaskResult>)
            {
                seen.insert((r.run, r.attempt));
            }
        }
        seen.len()
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    worker.stop().await?;
    anyhow::ensure!(seen == tasks, "only {seen} of {tasks} tasks answered");
    Ok(Report {
        tasks,
        max_in_flight,
        seconds,
    })
}
