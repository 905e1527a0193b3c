//! Throughput of the worker stage alone through Kafka: a backlog of N no-op tasks is
//! written to the tasks topic first, then one worker (in this process) is started, and
//! the clock runs until N results are on the results topic. No orchestrator: this is the
//! ceiling of one worker process, consume → connector → produce result → commit.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aiq_topics::{RunId, StepId, TaskMessage, TaskResult, TenantId, TopicKind, WorkflowId};
use aiq_worker::WorkerSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::backlog::{Backlog, DRAIN_LIMIT, fresh_topics, noop_connectors};

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
    let kafka = fresh_topics(brokers, "wload").await?;
    let topic = |k: TopicKind| kafka.topics().get(k).name.clone();
    let backlog = Backlog::new(&kafka)?;
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
            expires_at: None,
        };
        let key = format!("{}/{}", task.tenant, task.run);
        let payload = serde_json::to_vec(&task)?;
        backlog.send(&tasks_topic, key.as_bytes(), &payload);
    }
    backlog.flush()?;

    let results: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("{}reader", kafka.topic_prefix))
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
    let worker = aiq_worker::spawn(
        &kafka,
        WorkerSettings {
            max_in_flight,
            ..WorkerSettings::default()
        },
        noop_connectors(&registry)?,
        std::sync::Arc::default(),
        &registry,
    )?;
    let seen = tokio::task::spawn_blocking(move || {
        // Distinct (run, attempt): a redelivered task would answer twice.
        let mut seen = HashSet::new();
        let deadline = Instant::now() + DRAIN_LIMIT;
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
    worker.shutdown().await?;
    anyhow::ensure!(seen == tasks, "only {seen} of {tasks} tasks answered");
    Ok(Report {
        tasks,
        max_in_flight,
        seconds,
    })
}
