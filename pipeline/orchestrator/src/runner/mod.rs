//! Consume, process, produce — exactly once.
//!
//! One thread per instance: a read-committed group consumer of the triggers, signals
//! and results topics, and `transactional_producers` transactional producers that the
//! batches take in turn (see `transaction::Runner::next_lane`). Each batch (at most
//! `batch_max_records` inputs or `batch_max_ms`, and no more than was already fetched
//! when it is drained) is one transaction holding the tasks,
//! events, dead letters and triggers it caused, the changelog entries it changed, and
//! the input offsets it consumed. A crash at any point leaves either all of it or none.
//! Due timers, cron ticks and finished-run expiries are fired between polls, in slices
//! counted against `max_*_per_batch`, so that a backlog after downtime is worked off
//! over many transactions instead of growing one.
//!
//! Partitions are assigned eagerly (range assignor, so the co-partitioned topics go
//! together): on revocation the open transaction is aborted; on assignment each
//! partition's state is restored from the changelog before its first input, unless it
//! comes back unchanged (see `rebalance`). The transaction calls block, which is why this is a thread, not a task.
//!
//! This room starts the stage and holds the batch loop; `rebalance` reacts to
//! assignments and revocations, `transaction` writes a batch and commits it, `trace`
//! names the span a record is handled in and the trace context of what it causes.

mod rebalance;
mod seal;
mod trace;
mod transaction;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiq_engine::Catalog;
use aiq_kafka::{Isolation, KafkaSettings, TailSync};
use aiq_stage::{StageHandle, StopSignal};
use aiq_topics::TopicKind;
use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};

use crate::core::{Core, InputTopic, Record};
use crate::metrics::{OrchestratorMetrics, STAGE};
use crate::{OrchestratorError, OrchestratorSettings};
use rebalance::RebalanceContext;
use trace::record_span;

const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);
const EXPIRY_EVERY: Duration = Duration::from_secs(60);
/// Timers fired between two polls: during a backlog, inputs keep being consumed at
/// one per this many timers instead of waiting for the backlog to end.
const TIMERS_PER_POLL: usize = 64;
/// How often the quota gauges are set from the owned partitions' state.
const LOAD_SAMPLE_EVERY: Duration = Duration::from_secs(1);

type TxProducer = ThreadedProducer<DefaultProducerContext>;

/// Starts an orchestrator instance on a thread of its own; the handle's stage is named
/// "orchestrator". `definitions` must follow the definitions topic into `catalog` (see
/// `aiq_kafka::tail_topic`), and the tenants follower into `tenants` (an empty directory:
/// the static quotas for every tenant, none suspended), and `vault` holds the tenants'
/// data keys (payloads are opened on the way in and sealed on the way out; off, they
/// pass as they are). Stopping commits the open batch and leaves the group.
pub fn spawn(
    kafka: KafkaSettings,
    settings: OrchestratorSettings,
    catalog: Arc<Catalog>,
    definitions: TailSync,
    tenants: Arc<aiq_tenants::Directory>,
    vault: Arc<aiq_vault::Vault>,
    metrics: Arc<OrchestratorMetrics>,
) -> Result<StageHandle, OrchestratorError> {
    // Refused before any Kafka client exists: without an id every such instance would
    // share one transactional id and fence the others.
    let invalid =
        |e| OrchestratorError::Thread(std::io::Error::new(std::io::ErrorKind::InvalidInput, e));
    settings.checked_instance_id().map_err(invalid)?;
    settings.checked_producers().map_err(invalid)?;
    let thread_name = format!("orchestrator-{}", settings.instance_id);
    aiq_stage::spawn_thread(STAGE, thread_name, move |stop| {
        Runner::new(kafka, settings, catalog, definitions, metrics, stop)?
            .with_tenants(tenants)
            .with_vault(vault)
            .run()
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
    queue_state: String,
    notifications: String,
    audit: String,
}

struct Runner {
    kafka: KafkaSettings,
    settings: Arc<OrchestratorSettings>,
    names: Names,
    /// `transactional_producers` of them, used in turn: batch n commits with
    /// `producers[n % len]`, so a transaction never starts while the coordinator still
    /// completes the one before it on the same producer.
    producers: Vec<Arc<TxProducer>>,
    /// The producer of the open (or next) batch.
    lane: usize,
    consumer: BaseConsumer<RebalanceContext>,
    in_txn: Arc<AtomicBool>,
    core: Core,
    definitions: TailSync,
    metrics: Arc<OrchestratorMetrics>,
    stop: StopSignal,
    batch_started: Option<Instant>,
    batch_records: usize,
    offsets: HashMap<(String, i32), i64>,
    /// Timers, cron ticks and expiries in the open batch, against their bounds.
    work: BatchWork,
    /// Whether the open batch already waited for the definitions topic.
    definitions_waited: bool,
    /// Revoked partitions' state, with their changelog end offset at the revocation,
    /// until the assignment that follows says whether they come back.
    parked: HashMap<i32, (i64, crate::core::Parked)>,
    vault: Arc<aiq_vault::Vault>,
}

#[derive(Debug, Default)]
struct BatchWork {
    timers: usize,
    cron_ticks: usize,
    expiries: usize,
}

/// Transactional producer `lane`, with `init_transactions` done: that fences any
/// earlier producer with its id (this instance before a crash, or the producer this one
/// replaces after a fatal error) and aborts what it left open.
fn create_producer(
    kafka: &KafkaSettings,
    settings: &OrchestratorSettings,
    lane: usize,
) -> Result<TxProducer, OrchestratorError> {
    let producer: TxProducer = kafka
        .producer_config()
        .set(
            "transactional.id",
            settings.lane_transactional_id(&kafka.topic_prefix, lane),
        )
        .set(
            "transaction.timeout.ms",
            settings.transaction_timeout_ms.to_string(),
        )
        .set("linger.ms", "2")
        // Right after a commit the coordinator is still writing its markers, and the
        // next transaction's first call is answered CONCURRENT_TRANSACTIONS until it is
        // done (a few ms); librdkafka's default 100 ms retry backoff would add that
        // to nearly every batch.
        .set("retry.backoff.ms", "2")
        .create()
        .map_err(|e| OrchestratorError::kafka("create the transactional producer", e))?;
    transaction::call_retrying(&producer, "init transactions", |p| {
        p.init_transactions(TXN_CALL_TIMEOUT)
    })?;
    Ok(producer)
}

impl Runner {
    fn with_tenants(mut self, tenants: Arc<aiq_tenants::Directory>) -> Self {
        self.core = self.core.with_tenants(tenants);
        self
    }

    fn with_vault(mut self, vault: Arc<aiq_vault::Vault>) -> Self {
        self.vault = vault;
        self
    }

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
            queue_state: name(TopicKind::QueueState),
            notifications: name(TopicKind::Notifications),
            audit: name(TopicKind::Audit),
        };
        let producers = (0..settings.transactional_producers.max(1))
            .map(|lane| create_producer(&kafka, &settings, lane).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let in_txn = Arc::new(AtomicBool::new(false));
        let ctx = RebalanceContext {
            producer: Mutex::new(Arc::clone(&producers[0])),
            in_txn: Arc::clone(&in_txn),
            triggers: names.triggers.clone(),
            changelog: names.changelog.clone(),
            watermarks: kafka
                .watermark_client(
                    &format!("aiq-watermarks-{}", std::process::id()),
                    Isolation::ReadUncommitted,
                )
                .map_err(|e| OrchestratorError::kafka("create the watermark client", e))?,
            events: Mutex::new(Vec::new()),
            metrics: Arc::clone(&metrics),
        };
        let consumer: BaseConsumer<RebalanceContext> = kafka
            .group_member_config()
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
            producers,
            lane: 0,
            consumer,
            in_txn,
            definitions,
            metrics,
            stop,
            batch_started: None,
            batch_records: 0,
            offsets: HashMap::new(),
            work: BatchWork::default(),
            definitions_waited: false,
            parked: HashMap::new(),
            vault: aiq_vault::Vault::off(),
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
            // With a batch open, only what is already fetched is taken: when nothing
            // more is waiting the batch commits now instead of waiting out its age, so
            // batches form only under load (while a commit runs, the next batch fills).
            let timeout = match self.batch_started {
                Some(_) => Duration::ZERO,
                None => self.poll_timeout(next_cron),
            };
            let polled = self.consumer.poll(timeout).map(|r| r.map(|m| m.detach()));
            let drained = polled.is_none();
            self.after_rebalance()?;
            match polled {
                Some(Ok(msg)) => {
                    let topic = match msg.topic() {
                        t if t == self.names.triggers => InputTopic::Triggers,
                        t if t == self.names.signals => InputTopic::Signals,
                        _ => InputTopic::Results,
                    };
                    let opened = match msg.payload() {
                        Some(p) => {
                            let core = &self.core;
                            seal::open_input(&self.vault, |t| core.is_erased(t), msg.key(), p)
                        }
                        None => seal::Opened::Ready(std::borrow::Cow::Borrowed(&[][..])),
                    };
                    let payload = match &opened {
                        seal::Opened::Ready(p) => msg.payload().map(|_| &**p),
                        _ => msg.payload(),
                    };
                    let rec = Record {
                        topic,
                        partition: msg.partition(),
                        offset: msg.offset(),
                        key: msg.key(),
                        payload,
                    };
                    if !self.core.owns(msg.partition()) {
                        return Err(OrchestratorError::NotOwned {
                            topic: msg.topic().to_owned(),
                            partition: msg.partition(),
                            offset: msg.offset(),
                        });
                    }
                    let span = record_span(&msg, topic);
                    let _in_record = span.enter();
                    self.batch_started.get_or_insert_with(Instant::now);
                    let handled = match &opened {
                        seal::Opened::Ready(_) => {
                            self.core.handle(rec, Utc::now(), false).is_ok()
                                || self.handle_after_catch_up(rec)?
                        }
                        // The tenant's data is gone with its keys: nothing to do.
                        seal::Opened::Erased => true,
                        seal::Opened::Unreadable(reason) => {
                            let kind = aiq_topics::DeadLetterKind::Unreadable;
                            self.core.set_aside(rec, kind, reason.clone());
                            true
                        }
                    };
                    if handled {
                        self.offsets
                            .insert((msg.topic().to_owned(), msg.partition()), msg.offset() + 1);
                        self.batch_records += 1;
                    }
                }
                Some(Err(e)) => {
                    // Another instance with this instance id joined with our static
                    // membership: it owns the partitions now, and this consumer is dead.
                    if let Some((RDKafkaErrorCode::FencedInstanceId, _)) =
                        self.consumer.client().fatal_error()
                    {
                        return Err(self.fenced(e));
                    }
                    tracing::warn!(error = %e, "consumer error");
                }
                None => {}
            }
            let now = Utc::now();
            let slice_started = Instant::now();
            let worked = self.timed_work(now, &mut next_cron, &mut next_expiry);
            if worked {
                self.batch_started.get_or_insert(slice_started);
            }
            if Instant::now() >= next_load {
                self.observe_load();
                next_load = Instant::now() + LOAD_SAMPLE_EVERY;
            }
            if let Err(e) = self.flush() {
                self.recover(e)?;
            }
            if self.core.has_changes() {
                self.batch_started.get_or_insert_with(Instant::now);
            }
            let full = self.batch_records >= self.settings.batch_max_records;
            let old = self
                .batch_started
                .is_some_and(|s| s.elapsed() >= self.settings.batch_max_age());
            let open = self.batch_started.is_some();
            if full || old || self.work_spent() || (open && drained) {
                self.commit()?;
            }
        }
    }

    /// Fires a slice of the due timers, cron ticks and finished-run expiries, within
    /// what the open batch has left of `max_*_per_batch`: a backlog after downtime is
    /// worked off over many transactions, none larger than the bounds. Returns whether
    /// anything was done.
    fn timed_work(
        &mut self,
        now: chrono::DateTime<Utc>,
        next_cron: &mut Instant,
        next_expiry: &mut Instant,
    ) -> bool {
        let s = Arc::clone(&self.settings);
        let mut worked = false;
        let room = s
            .max_timers_per_batch
            .max(1)
            .saturating_sub(self.work.timers)
            .min(TIMERS_PER_POLL);
        if room > 0 && self.core.next_timer().is_some_and(|due| due <= now) {
            let n = self.core.fire_timers_up_to(now, room);
            self.work.timers += n;
            worked |= n > 0;
        }
        let room = s
            .max_cron_ticks_per_batch
            .max(1)
            .saturating_sub(self.work.cron_ticks);
        // Out of room, the batch commits this turn and the next one goes on.
        if room > 0 && Instant::now() >= *next_cron {
            let (next, n) = self.core.fire_cron_up_to(now, room);
            self.work.cron_ticks += n;
            worked |= n > 0;
            // Re-read the catalog at least every second for new schedules.
            let wait = next
                .map(|n| (n - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            *next_cron = Instant::now() + wait;
        }
        let room = s
            .max_expiries_per_batch
            .max(1)
            .saturating_sub(self.work.expiries);
        if room > 0 && Instant::now() >= *next_expiry {
            let n = self.core.expire_finished_up_to(now, room);
            self.work.expiries += n;
            worked |= n > 0;
            // A full slice may have left more: go on in the next batch, not in a minute.
            *next_expiry = if n == room {
                Instant::now()
            } else {
                Instant::now() + EXPIRY_EVERY
            };
        }
        worked
    }

    fn work_spent(&self) -> bool {
        let s = &self.settings;
        self.work.timers >= s.max_timers_per_batch.max(1)
            || self.work.cron_ticks >= s.max_cron_ticks_per_batch.max(1)
            || self.work.expiries >= s.max_expiries_per_batch.max(1)
    }

    /// A record named a workflow the catalog lacks (it may have just been registered):
    /// reads the definitions topic to its end, for at most `definitions_catch_up_ms`,
    /// and handles the record again. One wait per transaction: before a second one the
    /// batch so far is committed (the record changed nothing yet), so waits never add
    /// up inside a transaction. Returns false when that commit failed and the batch is
    /// redone from the committed offsets, this record included.
    fn handle_after_catch_up(&mut self, rec: Record<'_>) -> Result<bool, OrchestratorError> {
        if self.definitions_waited && !self.commit()? {
            return Ok(false);
        }
        let fresh = self
            .definitions
            .catch_up_blocking(self.settings.definitions_catch_up());
        self.definitions_waited = true;
        self.batch_started.get_or_insert_with(Instant::now);
        if self.core.handle(rec, Utc::now(), true).is_err() {
            tracing::error!(fresh, "definitions lookup failed twice");
        }
        Ok(true)
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
        self.metrics
            .finished_markers
            .set(self.core.finished_count() as i64);
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
