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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aiq_engine::Catalog;
use aiq_kafka::{DeadLetterOrigin, KafkaSettings, TailSync};
use aiq_topics::{TRACEPARENT, TopicKind, TraceParent};
use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::orchestrator::core::{ChangelogWrite, Core, InputTopic, Output, Record};
use crate::orchestrator::metrics::OrchestratorMetrics;
use crate::orchestrator::restore::restore;
use crate::orchestrator::{OrchestratorError, OrchestratorSettings};

const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);
const DEFINITIONS_CATCH_UP: Duration = Duration::from_secs(3);
const EXPIRY_EVERY: Duration = Duration::from_secs(60);
/// How often the quota gauges are set from the owned partitions' state.
const LOAD_SAMPLE_EVERY: Duration = Duration::from_secs(1);

type TxProducer = ThreadedProducer<DefaultProducerContext>;

/// A running orchestrator instance.
pub struct Orchestrator {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), OrchestratorError>>>,
}

impl Orchestrator {
    /// Starts the instance's thread. `definitions` must follow the definitions topic
    /// into `catalog` (see `aiq_kafka::tail_topic`).
    pub fn spawn(
        kafka: KafkaSettings,
        settings: OrchestratorSettings,
        catalog: Arc<Catalog>,
        definitions: TailSync,
        metrics: Arc<OrchestratorMetrics>,
    ) -> Result<Self, OrchestratorError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("orchestrator-{}", settings.instance_id))
            .spawn(move || {
                let mut r = Runner::new(kafka, settings, catalog, definitions, metrics, flag)?;
                r.run()
            })
            .map_err(OrchestratorError::Thread)?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Whether the thread has ended (an error, or after `stop`).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Commits the open batch, leaves the group and waits for the thread.
    pub fn stop(mut self) -> Result<(), OrchestratorError> {
        self.stop.store(true, Ordering::SeqCst);
        self.join()
    }

    /// Waits for the thread to end on its own (it only does on an error).
    pub fn join(&mut self) -> Result<(), OrchestratorError> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(Err(OrchestratorError::Panicked)),
            None => Ok(()),
        }
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

enum Rebalanced {
    Revoked,
    Assigned(Vec<i32>),
}

/// Sees rebalances inside `poll`: aborts the open transaction before the partitions
/// go to another instance, and tells the loop what changed.
struct RebalanceContext {
    producer: Arc<TxProducer>,
    in_txn: Arc<AtomicBool>,
    triggers: String,
    events: Mutex<Vec<Rebalanced>>,
    metrics: Arc<OrchestratorMetrics>,
}

impl ClientContext for RebalanceContext {
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        self.metrics.lag.observe(&statistics);
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            if self.in_txn.swap(false, Ordering::SeqCst)
                && let Err(e) = self.producer.abort_transaction(TXN_CALL_TIMEOUT)
            {
                tracing::error!(error = %e, "aborting the open transaction on revocation failed");
            }
            self.push(Rebalanced::Revoked);
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut parts: Vec<i32> = tpl
                    .elements()
                    .iter()
                    .filter(|e| e.topic() == self.triggers)
                    .map(|e| e.partition())
                    .collect();
                parts.sort_unstable();
                self.push(Rebalanced::Assigned(parts));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance error"),
        }
    }
}

impl RebalanceContext {
    fn push(&self, e: Rebalanced) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }

    fn drain(&self) -> Vec<Rebalanced> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }
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
    stop: Arc<AtomicBool>,
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
        stop: Arc<AtomicBool>,
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
                crate::lag::SAMPLE_INTERVAL_MS.to_string(),
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
            "orchestrator started"
        );
        let mut next_cron = Instant::now();
        let mut next_expiry = Instant::now() + EXPIRY_EVERY;
        let mut next_load = Instant::now();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                self.commit()?;
                self.consumer.unsubscribe();
                tracing::info!("orchestrator stopped");
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

    /// Acts on what the last poll's rebalance callbacks saw.
    fn after_rebalance(&mut self) -> Result<(), OrchestratorError> {
        for event in self.consumer.context().drain() {
            match event {
                Rebalanced::Revoked => {
                    // The callback aborted the open transaction: forget all of it.
                    let owned: Vec<i32> = self.core.owned().collect();
                    for p in owned {
                        self.core.drop_partition(p);
                    }
                    self.clear_batch();
                    self.metrics.owned_partitions.set(0);
                    tracing::info!("partitions revoked; state dropped");
                }
                Rebalanced::Assigned(parts) => {
                    self.take_over(&parts)?;
                }
            }
        }
        Ok(())
    }

    fn take_over(&mut self, parts: &[i32]) -> Result<(), OrchestratorError> {
        let started = Instant::now();
        let timeout = Duration::from_millis(self.settings.transaction_timeout_ms * 3)
            .max(Duration::from_secs(30));
        let restored = restore(&self.kafka, &self.names.changelog, parts, timeout)?;
        let mut entries = 0;
        for (p, list) in restored {
            entries += list.len();
            self.core.drop_partition(p);
            self.core.restore(p, list);
        }
        self.metrics.owned_partitions.set(parts.len() as i64);
        self.metrics
            .restore_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(partitions = ?parts, entries, ms = started.elapsed().as_millis() as u64, "partitions assigned; state restored");
        Ok(())
    }

    fn clear_batch(&mut self) {
        self.core.discard_pending();
        self.offsets.clear();
        self.batch_records = 0;
        self.batch_started = None;
    }

    fn begin(&mut self) -> Result<(), OrchestratorError> {
        if !self.in_txn.load(Ordering::SeqCst) {
            self.producer
                .begin_transaction()
                .map_err(|e| OrchestratorError::kafka("begin transaction", e))?;
            self.in_txn.store(true, Ordering::SeqCst);
            self.batch_started.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    /// Sends what the core produced so far into the open transaction.
    fn flush(&mut self) -> Result<(), OrchestratorError> {
        let outputs = self.core.take_outputs();
        if outputs.is_empty() {
            return Ok(());
        }
        self.begin()?;
        for o in outputs {
            let sent = match o {
                Output::Task(t) => {
                    let key = format!("{}/{}", t.tenant, t.run);
                    let payload = serde_json::to_vec(&t).unwrap_or_default();
                    self.send(
                        &self.names.tasks,
                        None,
                        key.as_bytes(),
                        Some(&payload),
                        Some(traced(TraceParent::of_task(&t))),
                    )
                }
                Output::Event(e) => {
                    let payload = e.encode();
                    let key = e.tenant().as_str().as_bytes().to_vec();
                    self.metrics.observe_event(&e);
                    let h = traced(TraceParent::of_event(&e));
                    self.send(&self.names.events, None, &key, Some(&payload), Some(h))
                }
                Output::Trigger { partition, trigger } => {
                    let payload = trigger.encode();
                    let key = trigger.tenant.as_str().as_bytes().to_vec();
                    let h = trigger.run_id.map(|r| traced(TraceParent::of_trigger(r)));
                    self.send(
                        &self.names.triggers,
                        Some(partition),
                        &key,
                        Some(&payload),
                        h,
                    )
                }
                Output::DeadLetter(d) => {
                    self.metrics
                        .dead_letters
                        .with_label_values(&[d.kind.as_str()])
                        .inc();
                    let source = match d.topic {
                        InputTopic::Triggers => &self.names.triggers,
                        InputTopic::Signals => &self.names.signals,
                        InputTopic::Results => &self.names.results,
                    };
                    let h = DeadLetterOrigin {
                        kind: d.kind,
                        reason: &d.reason,
                        stage: "orchestrator",
                        topic: source,
                        partition: d.partition,
                        offset: d.offset,
                    }
                    .headers();
                    self.send(
                        &self.names.dead_letters,
                        None,
                        d.key.as_deref().unwrap_or_default(),
                        d.payload.as_deref(),
                        Some(h),
                    )
                }
            };
            sent?;
        }
        Ok(())
    }

    fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), OrchestratorError> {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(key);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(OrchestratorError::kafka("produce", e)),
            }
        }
    }

    /// Writes the changelog entries, sends the input offsets and commits. On an
    /// abortable failure the batch is redone from the committed state.
    fn commit(&mut self) -> Result<(), OrchestratorError> {
        let result = self.try_commit();
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.is_abortable() => {
                tracing::warn!(error = %e, "transaction failed; aborting and redoing the batch");
                self.metrics.aborts.inc();
                if self.in_txn.swap(false, Ordering::SeqCst) {
                    self.producer
                        .abort_transaction(TXN_CALL_TIMEOUT)
                        .map_err(|e| OrchestratorError::kafka("abort transaction", e))?;
                }
                self.clear_batch();
                self.rewind()
            }
            Err(e) => Err(e),
        }
    }

    fn try_commit(&mut self) -> Result<(), OrchestratorError> {
        self.flush()?;
        let changes = self.core.take_changelog();
        if changes.is_empty() && self.offsets.is_empty() && !self.in_txn.load(Ordering::SeqCst) {
            self.batch_started = None;
            return Ok(());
        }
        let started = Instant::now();
        self.begin()?;
        let n_changes = changes.len();
        for ChangelogWrite {
            partition,
            key,
            value,
        } in changes
        {
            self.send(
                &self.names.changelog,
                Some(partition),
                key.as_bytes(),
                value.as_deref(),
                None,
            )?;
        }
        if !self.offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for ((topic, p), next) in &self.offsets {
                tpl.add_partition_offset(topic, *p, Offset::Offset(*next))
                    .map_err(|e| OrchestratorError::kafka("offsets", e))?;
            }
            let group = self
                .consumer
                .group_metadata()
                .ok_or(OrchestratorError::NoGroupMetadata)?;
            self.producer
                .send_offsets_to_transaction(&tpl, &group, TXN_CALL_TIMEOUT)
                .map_err(|e| OrchestratorError::kafka("send offsets to transaction", e))?;
        }
        self.producer
            .commit_transaction(TXN_CALL_TIMEOUT)
            .map_err(|e| OrchestratorError::kafka("commit transaction", e))?;
        self.in_txn.store(false, Ordering::SeqCst);
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .batch_records
            .observe(self.batch_records as f64);
        self.metrics.changelog_writes.inc_by(n_changes as u64);
        self.offsets.clear();
        self.batch_records = 0;
        self.batch_started = None;
        Ok(())
    }

    /// After an aborted batch: back to the committed offsets and the committed state.
    fn rewind(&mut self) -> Result<(), OrchestratorError> {
        let committed = self
            .consumer
            .committed(TXN_CALL_TIMEOUT)
            .map_err(|e| OrchestratorError::kafka("read committed offsets", e))?;
        let mut tpl = TopicPartitionList::new();
        for e in committed.elements() {
            let to = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            tpl.add_partition_offset(e.topic(), e.partition(), to)
                .map_err(|e| OrchestratorError::kafka("rewind", e))?;
        }
        self.consumer
            .seek_partitions(tpl, TXN_CALL_TIMEOUT)
            .map_err(|e| OrchestratorError::kafka("seek to committed offsets", e))?;
        let owned: Vec<i32> = self.core.owned().collect();
        self.take_over(&owned)
    }
}

/// The headers of a record about a run: its W3C trace context.
fn traced(tp: TraceParent) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(1).insert(Header {
        key: TRACEPARENT,
        value: Some(tp.to_string().as_bytes()),
    })
}

/// The span a consumed record is handled in, so that every log line the core writes
/// about it names its tenant, run and trace. ERROR level so that it is on whenever any
/// log line is. Read from the key and the traceparent header, since only the core
/// decodes the payload; a result's step and attempt exist only in its payload, so a
/// result is read twice (it is small: the output is skipped, not built).
fn record_span(msg: &OwnedMessage, topic: InputTopic) -> tracing::Span {
    use tracing::field::Empty;
    let key = msg.key().unwrap_or_default();
    let tenant = key.split(|b| *b == b'#').next().unwrap_or(key);
    let span = tracing::error_span!(
        "record",
        topic = ?topic,
        tenant = %String::from_utf8_lossy(tenant),
        run_id = Empty,
        trace_id = Empty,
        step = Empty,
        attempt = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let trace = msg
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == TRACEPARENT))
        .and_then(|h| TraceParent::parse_bytes(h.value?).ok());
    if let Some(tp) = trace {
        span.record("run_id", tracing::field::display(tp.trace_id.run()));
        span.record("trace_id", tracing::field::display(tp.trace_id));
    }
    if topic == InputTopic::Results {
        #[derive(serde::Deserialize)]
        struct Attempt<'a> {
            #[serde(borrow)]
            step: std::borrow::Cow<'a, str>,
            attempt: u32,
        }
        if let Some(Ok(a)) = msg.payload().map(serde_json::from_slice::<Attempt<'_>>) {
            span.record("step", a.step.as_ref());
            span.record("attempt", a.attempt);
        }
    }
    span
}
