//! Consume, process, produce — exactly once.
//!
//! One thread per instance: a read-committed group consumer of the triggers, signals
//! and results topics, and a transactional producer. Each batch (at most
//! `batch_max_records` inputs or `batch_max_ms`) is one transaction holding the tasks,
//! events, dead letters and triggers it caused, the changelog entries it changed, and
//! the input offsets it consumed. A crash at any point leaves either all of it or none.
//!
//! Partitions are assigned eagerly (range assignor, so the co-partitioned topics go
//! together): on revocation the open transaction is aborted and all state dropped; on
//! assignment each partition's state is restored from the changelog before its first
//! input. The transaction calls block, which is why this is a thread, not a task.
//!
//! This room starts the stage and holds the batch loop; `rebalance` reacts to
//! assignments and revocations, `transaction` writes a batch and commits it, `trace`
//! names the span a record is handled in and the trace context of what it causes.

mod rebalance;
mod trace;
mod transaction;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiq_engine::Catalog;
use aiq_kafka::{KafkaSettings, TailSync};
use aiq_stage::{StageHandle, StopSignal};
use aiq_topics::TopicKind;
use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};

use crate::core::{Core, InputTopic, Record};
use crate::metrics::{OrchestratorMetrics, STAGE};
use crate::{OrchestratorError, OrchestratorSettings};
use rebalance::RebalanceContext;
use trace::record_span;

const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);
const DEFINITIONS_CATCH_UP: Duration = Duration::from_secs(3);
const EXPIRY_EVERY: Duration = Duration::from_secs(60);
/// How often the quota gauges are set from the owned partitions' state.
const LOAD_SAMPLE_EVERY: Duration = Duration::from_secs(1);

type TxProducer = ThreadedProducer<DefaultProducerContext>;

/// Starts an orchestrator instance on a thread of its own; the handle's stage is named
/// "orchestrator". `definitions` must follow the definitions topic into `catalog` (see
/// `aiq_kafka::tail_topic`). Stopping commits the open batch and leaves the group.
pub fn spawn(
    kafka: KafkaSettings,
    settings: OrchestratorSettings,
    catalog: Arc<Catalog>,
    definitions: TailSync,
    metrics: Arc<OrchestratorMetrics>,
) -> Result<StageHandle, OrchestratorError> {
    let thread_name = format!("orchestrator-{}", settings.instance_id);
    aiq_stage::spawn_thread(STAGE, thread_name, move |stop| {
        Runner::new(kafka, settings, catalog, definitions, metrics, stop)?.run()
    })
    .map_err(OrchestratorError::Thread)
}

struct Names {
    triggers: String,
    signals: String,
    results: String,
    changelog: String,
    tasks: String,
    events: String,
    dead_letters: String,
}

struct Runner {
    kafka: KafkaSettings,
    settings: Arc<OrchestratorSettings>,
    names: Names,
    producer: Arc<TxProducer>,
    consumer: BaseConsumer<RebalanceContext>,
    in_txn: Arc<AtomicBool>,
    core: Core,
    definitions: TailSync,
    metrics: Arc<OrchestratorMetrics>,
    stop: StopSignal,
    batch_started: Option<Instant>,
    batch_records: usize,
    offsets: HashMap<(String, i32), i64>,
}

impl Runner {
    fn new(
        kafka: KafkaSettings,
        settings: OrchestratorSettings,
        catalog: Arc<Catalog>,
        definitions: TailSync,
        metrics: Arc<OrchestratorMetrics>,
        stop: StopSignal,
    ) -> Result<Self, OrchestratorError> {
        let topics = kafka.topics();
        let name = |k: TopicKind| topics.get(k).name.clone();
        let names = Names {
            triggers: name(TopicKind::Triggers),
            signals: name(TopicKind::Signals),
            results: name(TopicKind::Results),
            changelog: name(TopicKind::Changelog),
            tasks: name(TopicKind::Tasks),
            events: name(TopicKind::Events),
            dead_letters: name(TopicKind::DeadLetters),
        };
        let producer: TxProducer = kafka
            .producer_config()
            .set(
                "transactional.id",
                settings.transactional_id(&kafka.topic_prefix),
            )
            .set(
                "transaction.timeout.ms",
                settings.transaction_timeout_ms.to_string(),
            )
            .set("linger.ms", "2")
            .create()
            .map_err(|e| OrchestratorError::kafka("create the transactional producer", e))?;
        // Fences any earlier producer with this id (this instance before a crash) and
        // aborts what it left open.
        producer
            .init_transactions(TXN_CALL_TIMEOUT)
            .map_err(|e| OrchestratorError::kafka("init transactions", e))?;
        let producer = Arc::new(producer);
        let in_txn = Arc::new(AtomicBool::new(false));
        let ctx = RebalanceContext {
            producer: Arc::clone(&producer),
            in_txn: Arc::clone(&in_txn),
            triggers: names.triggers.clone(),
            events: Mutex::new(Vec::new()),
            metrics: Arc::clone(&metrics),
        };
        let consumer: BaseConsumer<RebalanceContext> = kafka
            .client_config()
            .set("group.id", settings.group(&kafka.topic_prefix))
            // Static membership: a restarted instance takes its partitions back at once
            // instead of waiting out a rebalance.
            .set(
                "group.instance.id",
                settings.transactional_id(&kafka.topic_prefix),
            )
            .set("group.protocol", "classic")
            // Range keeps partition n of every input topic on one instance.
            .set("partition.assignment.strategy", "range")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set(
                "statistics.interval.ms",
                aiq_kafka::lag::SAMPLE_INTERVAL_MS.to_string(),
            )
            .create_with_context(ctx)
            .map_err(|e| OrchestratorError::kafka("create the consumer", e))?;
        consumer
            .subscribe(&[&names.triggers, &names.signals, &names.results])
            .map_err(|e| OrchestratorError::kafka("subscribe", e))?;
        let tenant_partitions = kafka.tenant_partitions as i32;
        let settings = Arc::new(settings);
        Ok(Self {
            core: Core::new(Arc::clone(&settings), catalog, tenant_partitions),
            kafka,
            settings,
            names,
            producer,
            consumer,
            in_txn,
            definitions,
            metrics,
            stop,
            batch_started: None,
            batch_records: 0,
            offsets: HashMap::new(),
        })
    }

    fn run(&mut self) -> Result<(), OrchestratorError> {
        tracing::info!(
            transactional_id = self.settings.transactional_id(&self.kafka.topic_prefix),
            group = self.settings.group(&self.kafka.topic_prefix),
            "orchestrator consuming"
        );
        let mut next_cron = Instant::now();
        let mut next_expiry = Instant::now() + EXPIRY_EVERY;
        let mut next_load = Instant::now();
        loop {
            if self.stop.is_stopped() {
                self.commit()?;
                // The frame logs "orchestrator stopped" once this returns.
                self.consumer.unsubscribe();
                return Ok(());
            }
            // Owned, because handling a rebalance needs the runner while a borrowed
            // message would still hold the consumer.
            let polled = self
                .consumer
                .poll(self.poll_timeout(next_cron))
                .map(|r| r.map(|m| m.detach()));
            self.after_rebalance()?;
            match polled {
                Some(Ok(msg)) => {
                    let topic = match msg.topic() {
                        t if t == self.names.triggers => InputTopic::Triggers,
                        t if t == self.names.signals => InputTopic::Signals,
                        _ => InputTopic::Results,
                    };
                    let rec = Record {
                        topic,
                        partition: msg.partition(),
                        offset: msg.offset(),
                        key: msg.key(),
                        payload: msg.payload(),
                    };
                    let span = record_span(&msg, topic);
                    let _in_record = span.enter();
                    let now = Utc::now();
                    if self.core.handle(rec, now, false).is_err() {
                        // A workflow we do not know yet may have just been registered.
                        let fresh = self.definitions.catch_up_blocking(DEFINITIONS_CATCH_UP);
                        if self.core.handle(rec, now, true).is_err() {
                            tracing::error!(fresh, "definitions lookup failed twice");
                        }
                    }
                    self.offsets
                        .insert((msg.topic().to_owned(), msg.partition()), msg.offset() + 1);
                    self.batch_records += 1;
                    self.batch_started.get_or_insert_with(Instant::now);
                }
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                None => {}
            }
            let now = Utc::now();
            if self.core.next_timer().is_some_and(|due| due <= now) {
                self.core.fire_timers(now);
            }
            if Instant::now() >= next_cron {
                let next = self.core.fire_cron(now);
                // Re-read the catalog at least every second for new schedules.
                let wait = next
                    .map(|n| (n - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1));
                next_cron = Instant::now() + wait;
            }
            if Instant::now() >= next_load {
                self.observe_load();
                next_load = Instant::now() + LOAD_SAMPLE_EVERY;
            }
            if Instant::now() >= next_expiry {
                self.core.expire_finished(now);
                next_expiry = Instant::now() + EXPIRY_EVERY;
            }
            self.flush()?;
            if self.core.has_changes() {
                self.batch_started.get_or_insert_with(Instant::now);
            }
            let full = self.batch_records >= self.settings.batch_max_records;
            let old = self
                .batch_started
                .is_some_and(|s| s.elapsed() >= self.settings.batch_max_age());
            if full || old {
                self.commit()?;
            }
        }
    }

    fn observe_load(&self) {
        let tasks = self
            .core
            .task_load()
            .values()
            .fold((0u64, 0u64), |(d, h), (dispatched, held)| {
                (d + u64::from(*dispatched), h + *held as u64)
            });
        self.metrics
            .observe_load(&self.core.runs_by_tenant(), tasks);
    }

    fn poll_timeout(&self, next_cron: Instant) -> Duration {
        let mut wait = Duration::from_millis(100);
        if let Some(s) = self.batch_started {
            wait = wait.min(self.settings.batch_max_age().saturating_sub(s.elapsed()));
        }
        if let Some(due) = self.core.next_timer() {
            wait = wait.min((due - Utc::now()).to_std().unwrap_or(Duration::ZERO));
        }
        wait.min(next_cron.saturating_duration_since(Instant::now()))
    }
}
