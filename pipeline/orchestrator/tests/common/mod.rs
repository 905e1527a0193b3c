//! A real Kafka, topics of its own, the definitions tail, a test worker that answers
//! tasks as their arguments say, and a reader of the committed events topic.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aiq_engine::Catalog;
use aiq_kafka::{KafkaSettings, Tail, apply_topics, tail_topic};
use aiq_orchestrator::{OrchestratorMetrics, OrchestratorSettings};
use aiq_stage::StageHandle;
use aiq_topics::{
    DefinitionRecord, ErrorClass, Event, TaskMessage, TaskOutcome, TaskResult, TenantId, TopicKind,
    TriggerEvent, WorkflowId,
};
use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

pub struct Env {
    pub kafka: KafkaSettings,
    pub catalog: Arc<Catalog>,
    pub tail: Tail,
    pub rt: tokio::runtime::Runtime,
    producer: BaseProducer,
}

pub fn env(label: &str, tenant_partitions: u32) -> Option<Env> {
    let prefix = format!("{}.", aiq_testkit::unique(label));
    env_with_prefix(&prefix, tenant_partitions)
}

/// An environment over topics that may exist already (a child process joins its
/// parent's).
pub fn env_with_prefix(prefix: &str, tenant_partitions: u32) -> Option<Env> {
    let brokers = aiq_testkit::service(aiq_testkit::KAFKA)?;
    let prefix = prefix.to_owned();
    let kafka = KafkaSettings::plaintext(&brokers, &prefix, tenant_partitions, 4);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let catalog = Arc::new(Catalog::default());
    let feed = Arc::clone(&catalog);
    let tail = rt.block_on(async {
        apply_topics(&kafka, &kafka.topics()).await.unwrap();
        let mut tail = tail_topic(
            &kafka,
            &kafka.topics().get(TopicKind::Definitions).name,
            move |r| {
                if let Some(p) = r.payload {
                    feed.apply_bytes(p).unwrap();
                }
            },
        )
        .await
        .unwrap();
        tail.caught_up().await;
        tail
    });
    let producer = kafka.producer_config().create().unwrap();
    Some(Env {
        kafka,
        catalog,
        tail,
        rt,
        producer,
    })
}

pub fn tenant(t: &str) -> TenantId {
    TenantId::new(t).unwrap()
}

pub fn settings(instance: &str) -> OrchestratorSettings {
    OrchestratorSettings {
        instance_id: instance.to_owned(),
        group_id: "orchestrator".to_owned(),
        transaction_timeout_ms: 10_000,
        ..OrchestratorSettings::default()
    }
}

impl Env {
    pub fn topic(&self, k: TopicKind) -> String {
        self.kafka.topics().get(k).name.clone()
    }

    /// Registers a definition the way ingest does: onto the definitions topic, then
    /// waits for the catalog to have it.
    pub fn register(&self, tenant: &str, version: u32, yaml: &str) -> DefinitionRecord {
        let wf = aiq_engine::validate_source("test.yaml", yaml).unwrap();
        let record = DefinitionRecord {
            tenant: TenantId::new(tenant).unwrap(),
            workflow: wf.definition().id.clone(),
            version,
            content_hash: wf.content_hash().to_owned(),
            created_at: Utc::now(),
            definition: serde_json::to_value(wf.definition()).unwrap(),
        };
        self.send(
            &self.topic(TopicKind::Definitions),
            None,
            record.key().as_bytes(),
            &record.encode(),
        );
        assert!(self.tail.sync().catch_up_blocking(Duration::from_secs(10)));
        assert!(
            self.catalog
                .version(&record.tenant, &record.workflow, version)
                .is_some()
        );
        record
    }

    pub fn send(&self, topic: &str, partition: Option<i32>, key: &[u8], payload: &[u8]) {
        let mut r = BaseRecord::<[u8], [u8]>::to(topic)
            .key(key)
            .payload(payload);
        if let Some(p) = partition {
            r = r.partition(p);
        }
        self.producer.send(r).map_err(|(e, _)| e).unwrap();
        self.producer.flush(Duration::from_secs(10)).unwrap();
    }

    /// Sends without flushing (call `flush` once after many).
    pub fn send_nowait(&self, topic: &str, partition: Option<i32>, key: &[u8], payload: &[u8]) {
        let mut r = BaseRecord::<[u8], [u8]>::to(topic)
            .key(key)
            .payload(payload);
        if let Some(p) = partition {
            r = r.partition(p);
        }
        let mut r = r;
        loop {
            match self.producer.send(r) {
                Ok(()) => return,
                Err((_, back)) => {
                    r = back;
                    self.producer.poll(Duration::from_millis(5));
                }
            }
        }
    }

    pub fn flush(&self) {
        self.producer.flush(Duration::from_secs(30)).unwrap();
    }

    pub fn trigger(
        &self,
        tenant: &str,
        workflow: &str,
        input: Value,
        key: &str,
    ) -> aiq_topics::RunId {
        let mut t = TriggerEvent::new(
            TenantId::new(tenant).unwrap(),
            WorkflowId::new(workflow).unwrap(),
            aiq_topics::TriggerSource::Api,
            input,
        );
        t.idempotency_key = Some(key.to_owned());
        let run = t.run_id(0, 0);
        t.run_id = Some(run);
        self.send_nowait(
            &self.topic(TopicKind::Triggers),
            None,
            tenant.as_bytes(),
            &t.encode(),
        );
        run
    }

    pub fn orchestrator(&self, instance: &str) -> StageHandle {
        self.orchestrator_with(settings(instance))
    }

    pub fn orchestrator_with(&self, s: OrchestratorSettings) -> StageHandle {
        let metrics = Arc::new(OrchestratorMetrics::new(&prometheus::Registry::new()));
        aiq_orchestrator::spawn(
            self.kafka.clone(),
            s,
            Arc::clone(&self.catalog),
            self.tail.sync(),
            Arc::default(),
            Arc::default(),
            metrics,
        )
        .unwrap()
    }

    pub fn worker(&self) -> TestWorker {
        TestWorker::spawn(&self.kafka)
    }

    pub fn reader(&self, kind: TopicKind) -> Reader {
        Reader::new(&self.kafka, &self.topic(kind))
    }
}

/// Answers every task as their arguments say:
/// `{"output": v}` succeeds with `v`; `{"fail_first": n}` fails (retryable) attempts up
/// to n; `{"hang": true}` never answers; `{"fatal": "msg"}` fails for good.
pub struct TestWorker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub answered: Arc<AtomicU64>,
    pub seen: Arc<Mutex<Vec<TaskMessage>>>,
}

impl TestWorker {
    pub fn spawn(kafka: &KafkaSettings) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let seen: Arc<Mutex<Vec<TaskMessage>>> = Arc::default();
        let consumer: BaseConsumer = kafka
            .client_config()
            .set("group.id", format!("{}test-worker", kafka.topic_prefix))
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer
            .subscribe(&[&kafka.topics().get(TopicKind::Tasks).name])
            .unwrap();
        let producer: BaseProducer = kafka
            .producer_config()
            .set("linger.ms", "1")
            .create()
            .unwrap();
        let results = kafka.topics().get(TopicKind::Results).name.clone();
        let (s, a, seen2) = (Arc::clone(&stop), Arc::clone(&answered), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                producer.poll(Duration::ZERO);
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let task: TaskMessage = serde_json::from_slice(m.payload().unwrap()).unwrap();
                seen2.lock().unwrap().push(task.clone());
                let args = &task.args;
                if args.get("hang").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                let outcome = if let Some(n) = args.get("fail_first").and_then(Value::as_u64) {
                    if u64::from(task.attempt) <= n {
                        TaskOutcome::Error {
                            class: ErrorClass::Retryable,
                            message: format!("attempt {} fails on purpose", task.attempt),
                        }
                    } else {
                        TaskOutcome::Ok {
                            output: serde_json::json!({"attempt": task.attempt}),
                        }
                    }
                } else if let Some(msg) = args.get("fatal").and_then(Value::as_str) {
                    TaskOutcome::Error {
                        class: ErrorClass::Fatal,
                        message: msg.to_owned(),
                    }
                } else {
                    TaskOutcome::Ok {
                        output: args.get("output").cloned().unwrap_or(Value::Null),
                    }
                };
                let r = TaskResult {
                    tenant: task.tenant.clone(),
                    run: task.run,
                    step: task.step.clone(),
                    attempt: task.attempt,
                    outcome,
                    started_at: Utc::now(),
                    finished_at: Utc::now(),
                };
                let payload = serde_json::to_vec(&r).unwrap();
                let mut rec = BaseRecord::<[u8], [u8]>::to(&results)
                    .key(task.tenant.as_str().as_bytes())
                    .payload(&payload);
                loop {
                    match producer.send(rec) {
                        Ok(()) => break,
                        Err((_, back)) => {
                            rec = back;
                            producer.poll(Duration::from_millis(5));
                        }
                    }
                }
                a.fetch_add(1, Ordering::Relaxed);
            }
            let _ = producer.flush(Duration::from_secs(5));
        });
        Self {
            stop,
            thread: Some(thread),
            answered,
            seen,
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One record as read back.
#[derive(Debug, Clone)]
pub struct Read {
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
    pub partition: i32,
    /// The record's timestamp (producer's create time), in ms since the epoch.
    pub timestamp_ms: Option<i64>,
}

/// Reads a topic from the beginning, committed records only.
pub struct Reader {
    consumer: BaseConsumer,
    pub records: Vec<Read>,
}

impl Reader {
    pub fn new(kafka: &KafkaSettings, topic: &str) -> Self {
        let consumer: BaseConsumer = kafka
            .client_config()
            .set("group.id", aiq_testkit::unique("reader"))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        Self {
            consumer,
            records: Vec::new(),
        }
    }

    /// Reads until `done(all records so far)` or the timeout; returns whether done.
    pub fn read_until(&mut self, timeout: Duration, done: impl Fn(&[Read]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.records) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            // Drain what is there before checking again.
            for _ in 0..10_000 {
                match self.consumer.poll(Duration::from_millis(20)) {
                    Some(Ok(m)) => self.records.push(Read {
                        key: m.key().unwrap_or_default().to_vec(),
                        payload: m.payload().unwrap_or_default().to_vec(),
                        headers: m
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .map(|h| {
                                        (
                                            h.key.to_owned(),
                                            String::from_utf8_lossy(h.value.unwrap_or_default())
                                                .into_owned(),
                                        )
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                        partition: m.partition(),
                        timestamp_ms: m.timestamp().to_millis(),
                    }),
                    _ => break,
                }
            }
        }
    }

    pub fn events(&self) -> Vec<Event> {
        self.records
            .iter()
            .map(|r| Event::decode(&r.payload).unwrap())
            .collect()
    }
}
