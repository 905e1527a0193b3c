//! Throughput of the orchestrator and the worker through Kafka: a backlog of N triggers
//! is written first, then one orchestrator and one worker (in this process) are started,
//! and the clock runs until N runs have ended on the committed events topic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiq_connectors::{ConnectorSettings, Connectors, SecretStore};
use aiq_engine::Catalog;
use aiq_kafka::{KafkaSettings, apply_topics, tail_topic};
use aiq_pipeline::orchestrator::{Orchestrator, OrchestratorMetrics, OrchestratorSettings};
use aiq_pipeline::worker::{Worker, WorkerSettings};
use aiq_topics::{
    DefinitionRecord, Event, TenantId, TopicKind, TriggerEvent, TriggerSource, WorkflowId,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

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
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let kafka = KafkaSettings::plaintext(brokers, format!("load-{stamp}."), 12, 12);
    apply_topics(&kafka, &kafka.topics()).await?;
    let topic = |k: TopicKind| kafka.topics().get(k).name.clone();
    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka.producer_config().set("linger.ms", "5").create()?;
    let send = |topic: &str, key: &[u8], payload: &[u8]| {
        let mut r = BaseRecord::<[u8], [u8]>::to(topic)
            .key(key)
            .payload(payload);
        loop {
            match producer.send(r) {
                Ok(()) => return,
                Err((_, back)) => {
                    r = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    };
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
        send(
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
        send(
            &topic(TopicKind::Triggers),
            t.as_str().as_bytes(),
            &trig.encode(),
        );
    }
    producer.flush(Duration::from_secs(60))?;

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
        .set("group.id", format!("load-reader-{stamp}"))
        .set("isolation.level", "read_committed")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..12 {
        tpl.add_partition_offset(&topic(TopicKind::Events), p, Offset::Beginning)?;
    }
    events.assign(&tpl)?;

    let registry = prometheus::Registry::new();
    let started = Instant::now();
    let orch = Orchestrator::spawn(
        kafka.clone(),
        OrchestratorSettings {
            instance_id: format!("load-{stamp}"),
            ..OrchestratorSettings::default()
        },
        catalog,
        tail.sync(),
        Arc::new(OrchestratorMetrics::new(&registry)),
    )?;
    let worker = Worker::start(
        &kafka,
        WorkerSettings::default(),
        Connectors::builtin(
            &ConnectorSettings::default(),
            Arc::new(SecretStore::fixed(None, Vec::new())),
            None,
            &registry,
        )?,
        &registry,
    )?;
    let ended = tokio::task::spawn_blocking(move || {
        let mut ended = 0usize;
        let deadline = Instant::now() + Duration::from_secs(1800);
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
    worker.stop().await?;
    tokio::task::spawn_blocking(move || orch.stop()).await??;
    anyhow::ensure!(ended == runs, "only {ended} of {runs} runs ended");
    Ok(Report {
        runs,
        steps,
        seconds,
    })
}
