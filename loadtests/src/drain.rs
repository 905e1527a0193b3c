//! Throughput of the orchestrator and the worker through Kafka: a backlog of N triggers
//! is written first, then one orchestrator and one worker (in this process) are started,
//! and the clock runs until N runs have ended on the committed events topic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiq_engine::Catalog;
use aiq_kafka::tail_topic;
use aiq_orchestrator::{OrchestratorMetrics, OrchestratorSettings};
use aiq_topics::{
    DefinitionRecord, Event, TenantId, TopicKind, TriggerEvent, TriggerSource, WorkflowId,
};
use aiq_worker::WorkerSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::backlog::{Backlog, DRAIN_LIMIT, fresh_topics, noop_connectors};

pub struct Report {
    pub runs: usize,
    pub steps: usize,
    pub seconds: f64,
}

pub async fn measure(
    brokers: &str,
    runs: usize,
    steps: usize,
    tenants: usize,
) -> anyhow::Result<Report> {
    let kafka = fresh_topics(brokers, "load").await?;
    let run_id = kafka.topic_prefix.trim_end_matches('.').to_owned();
    let topic = |k: TopicKind| kafka.topics().get(k).name.clone();
    let backlog = Backlog::new(&kafka)?;
    let step_defs: Vec<_> = (0..steps)
        .map(|i| json!({"id": format!("s{i}"), "task": {"connector": "noop", "args": {"output": i}}}))
        .collect();
    let tenant_ids: Vec<TenantId> = (0..tenants)
        .map(|i| TenantId::new(format!("t{i}")))
        .collect::<Result<_, _>>()?;
    for t in &tenant_ids {
        let def = json!({"id": "load", "steps": step_defs});
        let wf = aiq_engine::validate_source("load.json", &def.to_string())
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let rec = DefinitionRecord {
            tenant: t.clone(),
            workflow: WorkflowId::new("load")?,
            version: 1,
            content_hash: wf.content_hash().to_owned(),
            created_at: chrono::Utc::now(),
            definition: def,
        };
        backlog.send(
            &topic(TopicKind::Definitions),
            rec.key().as_bytes(),
            &rec.encode(),
        );
    }
    for i in 0..runs {
        let t = &tenant_ids[i % tenant_ids.len()];
        let trig = TriggerEvent::new(
            t.clone(),
            WorkflowId::new("load")?,
            TriggerSource::Api,
            json!({"i": i}),
        );
        backlog.send(
            &topic(TopicKind::Triggers),
            t.as_str().as_bytes(),
            &trig.encode(),
        );
    }
    backlog.flush()?;

    let catalog = Arc::new(Catalog::default());
    let feed = Arc::clone(&catalog);
    let mut tail = tail_topic(&kafka, &topic(TopicKind::Definitions), move |r| {
        if let Some(p) = r.payload {
            let _ = feed.apply_bytes(p);
        }
    })
    .await?;
    tail.caught_up().await;

    let events: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("{run_id}-reader"))
        .set("isolation.level", "read_committed")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..12 {
        tpl.add_partition_offset(&topic(TopicKind::Events), p, Offset::Beginning)?;
    }
    events.assign(&tpl)?;

    let registry = prometheus::Registry::new();
    let started = Instant::now();
    let orch = aiq_orchestrator::spawn(
        kafka.clone(),
        OrchestratorSettings {
            instance_id: run_id.clone(),
            ..OrchestratorSettings::default()
        },
        catalog,
        tail.sync(),
        Arc::default(),
        Arc::default(),
        Arc::new(OrchestratorMetrics::new(&registry)),
    )?;
    let worker = aiq_worker::spawn(
        &kafka,
        WorkerSettings::default(),
        noop_connectors(&registry)?,
        Arc::default(),
        &registry,
    )?;
    let ended = tokio::task::spawn_blocking(move || {
        let mut ended = 0usize;
        let deadline = Instant::now() + DRAIN_LIMIT;
        while ended < runs && Instant::now() < deadline {
            if let Some(Ok(m)) = events.poll(Duration::from_millis(100))
                && let Some(Ok(Event::Run(e))) = m.payload().map(Event::decode)
                && e.status.is_terminal()
            {
                ended += 1;
            }
        }
        ended
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    worker.shutdown().await?;
    orch.shutdown().await?;
    anyhow::ensure!(ended == runs, "only {ended} of {runs} runs ended");
    Ok(Report {
        runs,
        steps,
        seconds,
    })
}
