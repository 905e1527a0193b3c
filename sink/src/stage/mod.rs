//! The sink stage: reads the events and audit topics, writes the store and the Parquet
//! files, and commits an offset only once everything before it is in both.
//!
//! [`spawn`] sets up the consumer and the store's statements, then runs the loop as the
//! stage "sink" (`aiq_stage::spawn_task`). Stopping it ends the read at once, flushes
//! the Parquet files, commits what is written and leaves the group; a batch the store
//! has not taken yet is not committed, so it is read again by the next owner.
//!
//! One loop reads a batch, writes it (retrying a failing store forever, with capped
//! backoff, while reading nothing more: lag grows instead of records being skipped; only
//! a record the store refuses for good, by its own values, goes to the dead letters),
//! hands the events to the Parquet writer and marks the offsets done. Every commit
//! interval it flushes the Parquet files (blocking I/O, off the runtime) and commits what
//! is done. Rebalances are served inside the reads (see `context`), so they never come
//! between a batch's writes and its offsets.

mod context;
mod progress;
mod writers;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiq_kafka::{DeadLetterOrigin, Isolation, KafkaSettings};
use aiq_stage::{Health, StageHandle, StopSignal};
use aiq_topics::{AuditEvent, DeadLetterKind, Event, TopicKind, TopicSet};
use prometheus::Registry;
use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use scylla::client::session::Session;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::parquet::ParquetError;
use crate::settings::{RetentionSettings, SettingsError, SinkSettings};
use crate::store::{self, Refusal, Store, StoreError, Write};
use context::{SinkContext, lock};
use progress::{Progress, Source, Tp};
use writers::Writers;

/// How long a dead letter may wait for room in the producer's queue.
const DEAD_LETTER_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Kafka will not take this record as it is, however often it is sent.
fn too_large_for_kafka(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize)
    )
}

/// How long a lag sample waits for a partition's watermarks while the store is down.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(2);
/// Lag is sampled at commits (and retries), at most this often: each sample asks the
/// brokers, since librdkafka's cached watermarks stand still while nothing is fetched.
const LAG_SAMPLE_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("Kafka: {op}: {source}")]
    Kafka {
        op: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    #[error("the Parquet writer: {0}")]
    Parquet(#[from] ParquetError),
    #[error("a blocking task of the sink failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

fn kafka(op: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> SinkError {
    move |source| SinkError::Kafka { op, source }
}

type SinkConsumer = StreamConsumer<SinkContext>;

/// The stage's name.
pub const STAGE: &str = "sink";

/// Runs [`crate::parquet::compact`] every `every`, holding the writer's lock so that a
/// flush never rewrites a window of a folder being merged.
fn spawn_compaction(
    parquet: Arc<Mutex<Writers>>,
    settings: crate::parquet::ParquetSettings,
    every: std::time::Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let parquet = Arc::clone(&parquet);
            let settings = settings.clone();
            let done = tokio::task::spawn_blocking(move || {
                let _writer = lock(&parquet);
                crate::parquet::compact(&settings, chrono::Utc::now().date_naive())
            })
            .await;
            match done {
                Ok(Ok(r)) => tracing::info!(
                    merged = r.merged_files,
                    written = r.written_files,
                    archived_days = r.archived_days,
                    deleted_days = r.deleted_days,
                    "parquet history compacted"
                ),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "parquet compaction failed; retried next time")
                }
                Err(e) => tracing::warn!(error = %e, "parquet compaction did not finish"),
            }
        }
    })
}

/// What one record became.
enum Payload {
    Event(Event),
    Audit(AuditEvent),
    /// A record of the dead-letter topic, to index.
    DeadLetter(Box<store::Letter>),
    /// Undecodable: counted, logged and passed over.
    Skip,
}

struct Record {
    tp: Tp,
    offset: i64,
    /// `None` for a partition not owned (cannot happen with the rebalance callbacks).
    epoch: Option<u64>,
    payload: Payload,
    /// The record as read, for the dead letters should the store refuse it.
    raw: Raw,
}

#[derive(Default)]
struct Raw {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
}

struct Loop {
    consumer: Arc<SinkConsumer>,
    /// Writes what the store refuses to `dead_letters`.
    producer: FutureProducer,
    dead_letters: String,
    store: Store,
    metrics: Arc<Metrics>,
    settings: SinkSettings,
    progress: Arc<Mutex<Progress>>,
    parquet: Arc<Mutex<Writers>>,
    stop: StopSignal,
    last_lag: Instant,
    /// Asked for the partitions' ends when the lag is sampled. Not the consumer: a broker
    /// answers one connection's requests in order, so a query sent where a fetch waits
    /// for data waits for it (up to 500 ms, once per partition).
    watermarks: Arc<BaseConsumer>,
    /// A lag sample is running; the next one is not started before it ends.
    sampling: Arc<AtomicBool>,
    health: Health,
}

/// What the sink reports to the process's readiness while it cannot write the history.
pub const HISTORY_STORE: &str = "sink.history_store";

/// Prepares the store's statements, subscribes to the events and audit topics of
/// `topics` and starts consuming, as the stage "sink". `keyspace` must hold the applied
/// schema. Errors here are setup errors; once running, the stage ends with an error only
/// when it cannot go on (the store's failures are retried, not returned). While the
/// history store cannot be written, `health` holds [`HISTORY_STORE`] with the reason.
pub async fn spawn(
    kafka_settings: &KafkaSettings,
    topics: &TopicSet,
    session: Arc<Session>,
    keyspace: &str,
    settings: SinkSettings,
    registry: &Registry,
    health: Health,
) -> Result<StageHandle, SinkError> {
    settings.validate()?;
    let store = Store::new(session, keyspace).await?;
    let metrics = Arc::new(Metrics::new(registry));
    let parquet = Arc::new(Mutex::new(Writers::new(
        &settings.parquet,
        metrics.erased_runs.clone(),
    )?));
    let progress: Arc<Mutex<Progress>> = Arc::default();
    let events: Arc<str> = topics.name(TopicKind::Events).into();
    let audit: Arc<str> = topics.name(TopicKind::Audit).into();
    let dead_letter_topic: Arc<str> = topics.name(TopicKind::DeadLetters).into();
    let context = SinkContext {
        events: Arc::clone(&events),
        audit: Arc::clone(&audit),
        dead_letters: Arc::clone(&dead_letter_topic),
        progress: Arc::clone(&progress),
        parquet: Arc::clone(&parquet),
        erased: settings.retention.erased.clone(),
    };
    let consumer: SinkConsumer = kafka_settings
        .group_member_config()
        .set(
            "group.id",
            format!("{}{}", kafka_settings.topic_prefix, settings.group_id),
        )
        // Offsets are committed by the loop, only after the store and the Parquet
        // files have everything before them.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // The orchestrator writes events in transactions.
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        // While the store is down the loop reads nothing: bound what waits in memory.
        .set("queued.max.messages.kbytes", "16384")
        .create_with_context(context)
        .map_err(kafka("create the sink consumer"))?;
    consumer
        .subscribe(&[&events, &audit, &dead_letter_topic])
        .map_err(kafka("subscribe to events, audit and dead letters"))?;
    let watermarks = kafka_settings
        .watermark_client(
            &format!(
                "{}{}-watermarks",
                kafka_settings.topic_prefix, settings.group_id
            ),
            Isolation::ReadCommitted,
        )
        .map_err(kafka("create the sink's watermark client"))?;
    let producer: FutureProducer = kafka_settings
        .producer_config()
        .create()
        .map_err(kafka("create the dead-letter producer"))?;
    let dead_letters = topics.name(TopicKind::DeadLetters).to_owned();
    Ok(aiq_stage::spawn_task(STAGE, move |stop| async move {
        let mut compaction = (settings.compact_interval_secs > 0).then(|| {
            spawn_compaction(
                Arc::clone(&parquet),
                settings.parquet.clone(),
                std::time::Duration::from_secs(settings.compact_interval_secs),
            )
        });
        let run = Loop {
            consumer: Arc::new(consumer),
            producer,
            dead_letters,
            store,
            metrics,
            settings,
            progress,
            parquet,
            stop: stop.clone(),
            last_lag: Instant::now(),
            watermarks: Arc::new(watermarks),
            sampling: Arc::default(),
            health,
        }
        .run();
        tokio::pin!(run);
        let ended = tokio::select! {
            ended = &mut run => ended,
            () = stop.stopped() => {
                // No compaction may start (and hold the writer) while the loop makes its
                // last flush and commit.
                if let Some(c) = compaction.take() {
                    c.abort();
                }
                run.await
            }
        };
        // Compaction works on the files the loop writes: it ends with the loop.
        if let Some(c) = compaction {
            c.abort();
        }
        ended
    }))
}

fn decode(ctx: &SinkContext, msg: &BorrowedMessage<'_>, metrics: &Metrics) -> Option<Record> {
    let source = ctx.source(msg.topic())?;
    metrics.records.with_label_values(&[source.label()]).inc();
    let tp = (source, msg.partition());
    let decoded = match (source, msg.payload()) {
        (Source::Events, Some(p)) => Event::decode(p).map(Payload::Event),
        (Source::Audit, Some(p)) => AuditEvent::decode(p).map(Payload::Audit),
        // A dead letter is indexed whatever it holds, a missing value included.
        (Source::DeadLetters, _) => Ok(Payload::DeadLetter(Box::new(letter(ctx, msg)))),
        (_, None) => Ok(Payload::Skip),
    };
    let payload = decoded.unwrap_or_else(|e| {
        tracing::warn!(
            topic = msg.topic(),
            partition = msg.partition(),
            offset = msg.offset(),
            error = %e,
            "undecodable record skipped"
        );
        Payload::Skip
    });
    // An erased tenant's events still in flight are not written back after the
    // erasure deleted its rows. Its run erasures too: the tenant's erasure removes
    // more than they would.
    if let Payload::Event(e) = &payload
        && ctx.erased.contains(e.tenant().as_str())
    {
        metrics.erased.inc();
        return Some(Record {
            tp,
            offset: msg.offset(),
            epoch: lock(&ctx.progress).epoch(tp),
            payload: Payload::Skip,
            raw: Raw::default(),
        });
    }
    if matches!(payload, Payload::Skip) {
        metrics
            .undecodable
            .with_label_values(&[source.label()])
            .inc();
    }
    Some(Record {
        tp,
        offset: msg.offset(),
        epoch: lock(&ctx.progress).epoch(tp),
        payload,
        raw: Raw {
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            headers: msg.headers().map(BorrowedHeaders::detach),
        },
    })
}

/// A record of the dead-letter topic as the index keeps it.
fn letter(ctx: &SinkContext, msg: &BorrowedMessage<'_>) -> store::Letter {
    let origin = msg
        .headers()
        .map(aiq_kafka::read_origin)
        .unwrap_or_default();
    let at_ms = msg
        .timestamp()
        .to_millis()
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let unknown = || "unknown".to_owned();
    store::Letter {
        id: store::letter_id(&ctx.dead_letters, msg.partition(), msg.offset(), at_ms),
        tenant: aiq_topics::dead_letter::tenant_of(msg.key(), msg.payload()),
        at: chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default(),
        kind: origin.kind.unwrap_or_else(unknown),
        stage: origin.stage.unwrap_or_else(unknown),
        reason: origin.reason.unwrap_or_default(),
        topic: origin.topic.unwrap_or_else(unknown),
        partition: origin.partition,
        offset: origin.offset,
        key: msg.key().map(<[u8]>::to_vec),
        value: msg.payload().map(<[u8]>::to_vec),
        headers: origin.original,
    }
}

/// The batch's writes, each with the index of the record it comes from.
fn writes_of(batch: &[Record], retention: &RetentionSettings) -> (Vec<usize>, Vec<Write>) {
    let mut origins = Vec::with_capacity(batch.len() * 2);
    let mut writes = Vec::with_capacity(batch.len() * 2);
    for (i, r) in batch.iter().enumerate() {
        match &r.payload {
            Payload::Event(e) => writes.extend(store::event_writes(e, retention)),
            Payload::Audit(a) => writes.push(store::audit(a, retention)),
            Payload::DeadLetter(l) => writes.extend(store::letter_writes(l)),
            Payload::Skip => {}
        }
        origins.resize(writes.len(), i);
    }
    (origins, writes)
}

impl Loop {
    async fn run(mut self) -> Result<(), SinkError> {
        let mut next_commit = Instant::now() + self.settings.commit_interval();
        loop {
            let (batch, stopping) = self.read_batch(next_commit).await;
            if !batch.is_empty() {
                self.metrics.batch_records.observe(batch.len() as f64);
                let Some(refused) = self.write(&batch).await else {
                    break;
                };
                self.done(&batch, &refused);
            }
            if stopping {
                break;
            }
            if Instant::now() >= next_commit {
                self.commit().await;
                next_commit = Instant::now() + self.settings.commit_interval();
            }
        }
        self.commit().await;
        let consumer = self.consumer;
        // Leaving the group serves the revocation (which commits what is left) and
        // blocks.
        tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        })
        .await?;
        Ok(())
    }

    /// Reads until the batch is full, its time is up or the next commit is due; true
    /// with it when the sink is stopping.
    async fn read_batch(&mut self, next_commit: Instant) -> (Vec<Record>, bool) {
        let mut batch = Vec::new();
        let mut deadline = next_commit;
        while batch.len() < self.settings.batch_max_records {
            let msg = tokio::select! {
                biased;
                () = self.stop.stopped() => return (batch, true),
                m = tokio::time::timeout_at(deadline, self.consumer.recv()) => m,
            };
            match msg {
                Err(_elapsed) => break,
                Ok(Err(e)) => tracing::warn!(error = %e, "sink consumer error"),
                Ok(Ok(m)) => {
                    if batch.is_empty() {
                        deadline = deadline.min(Instant::now() + self.settings.batch_max_wait());
                    }
                    if let Some(r) = decode(self.consumer.context(), &m, &self.metrics) {
                        batch.push(r);
                    }
                }
            }
        }
        (batch, self.stop.is_stopped())
    }

    /// Writes the batch until the store has taken or refused all of it: transient
    /// failures are retried forever, a record the store refuses for good goes to the
    /// dead letters. Returns the refused records' indices, or `None` if the sink stopped
    /// first.
    async fn write(&mut self, batch: &[Record]) -> Option<BTreeSet<usize>> {
        let (min, max) = self.settings.retry_backoff();
        let (mut origins, writes) = writes_of(batch, &self.settings.retention);
        let mut writes = Arc::new(writes);
        let mut refused: BTreeMap<usize, StoreError> = BTreeMap::new();
        let mut backoff = min;
        loop {
            let failed = match self
                .store
                .execute(
                    Arc::clone(&writes),
                    self.settings.max_in_flight_writes,
                    &self.metrics,
                )
                .await
            {
                Ok(()) => break,
                Err(f) => f,
            };
            for (i, e) in failed.refused {
                refused.entry(origins[i]).or_insert(e);
            }
            let Some(error) = failed.error else {
                break;
            };
            // Not the writes of a refused record: it goes to the dead letters whole.
            let again: Vec<usize> = failed
                .retry
                .into_iter()
                .filter(|&i| !refused.contains_key(&origins[i]))
                .collect();
            if again.is_empty() {
                break;
            }
            tracing::warn!(
                error = %error,
                writes = again.len(),
                ?backoff,
                "store writes failed; retrying"
            );
            self.metrics.retries.inc();
            origins = again.iter().map(|&i| origins[i]).collect();
            writes = Arc::new(again.iter().map(|&i| writes[i].clone()).collect());
            self.sample_lag();
            tokio::select! {
                () = self.stop.stopped() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(max);
        }
        for (&i, error) in &refused {
            if !self.dead_letter(&batch[i], error).await {
                return None;
            }
        }
        Some(refused.into_keys().collect())
    }

    /// Sends a record the store refused to the dead letters, with headers naming where
    /// it was read; true once Kafka has it, false if the sink stopped first.
    async fn dead_letter(&self, record: &Record, error: &StoreError) -> bool {
        let (source, partition) = record.tp;
        let ctx = self.consumer.context();
        let reason = error.to_string();
        let kind = match error.refusal() {
            Some(Refusal::TooLarge) => DeadLetterKind::TooLarge,
            _ => DeadLetterKind::Invalid,
        };
        let topic = match source {
            Source::Events => &ctx.events,
            Source::Audit => &ctx.audit,
            // Never back to the topic it came from: it stays there, unindexed.
            Source::DeadLetters => {
                tracing::warn!(
                    partition,
                    offset = record.offset,
                    %reason,
                    "dead letter refused by the store; left unindexed on its topic"
                );
                self.metrics
                    .dead_letters
                    .with_label_values(&[source.label(), kind.as_str()])
                    .inc();
                return true;
            }
        };
        let origin = DeadLetterOrigin {
            kind,
            reason: &reason,
            stage: STAGE,
            topic,
            partition,
            offset: record.offset,
        };
        let headers = match &record.raw.headers {
            Some(original) => origin.headers_after(original),
            None => origin.headers(),
        };
        tracing::warn!(
            topic = &**topic,
            partition,
            offset = record.offset,
            %reason,
            "record refused by the store; dead-lettered"
        );
        let (min, max) = self.settings.retry_backoff();
        let mut backoff = min;
        // The value goes too unless Kafka refuses it (a record can decompress to more
        // than the dead-letter topic takes): then key and headers say where it is.
        let mut value = record.raw.value.as_deref();
        loop {
            let mut out =
                FutureRecord::<[u8], [u8]>::to(&self.dead_letters).headers(headers.clone());
            if let Some(k) = &record.raw.key {
                out = out.key(k);
            }
            if let Some(v) = value {
                out = out.payload(v);
            }
            let sent = tokio::select! {
                () = self.stop.stopped() => return false,
                r = self.producer.send(out, DEAD_LETTER_QUEUE_TIMEOUT) => r,
            };
            match sent {
                Ok(_) => break,
                Err((e, _)) if value.is_some() && too_large_for_kafka(&e) => value = None,
                Err((e, _)) => {
                    tracing::warn!(error = %e, ?backoff, "dead letter not written; retrying");
                    tokio::select! {
                        () = self.stop.stopped() => return false,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(max);
                }
            }
        }
        self.metrics
            .dead_letters
            .with_label_values(&[source.label(), kind.as_str()])
            .inc();
        true
    }

    /// Hands the batch's events to the Parquet writer (but those of `refused`, which are
    /// on the dead-letter topic) and marks its offsets written.
    fn done(&self, batch: &[Record], refused: &BTreeSet<usize>) {
        let mut parquet = lock(&self.parquet);
        let mut progress = lock(&self.progress);
        for (i, r) in batch.iter().enumerate() {
            let Some(epoch) = r.epoch else { continue };
            // A partition revoked (and perhaps assigned again) while the batch was
            // read is re-read by its owner from the committed offset.
            if !progress.is_current(r.tp, epoch) {
                continue;
            }
            if !refused.contains(&i) {
                match &r.payload {
                    Payload::Event(Event::RunErased(e)) => parquet.erase_run(r.tp.1, e),
                    Payload::Event(e) => parquet.add_event(r.tp.1, r.offset, e),
                    Payload::Audit(a) => parquet.add_audit(r.tp.1, r.offset, a),
                    Payload::DeadLetter(_) | Payload::Skip => {}
                }
            }
            progress.done(r.tp, epoch, r.offset + 1);
        }
    }

    /// Flushes the Parquet files, then commits what is written and flushed. A flush that
    /// fails (the history store unreachable or refusing) is retried with backoff, and
    /// nothing more is read meanwhile: the offsets stay where they are, the lag grows
    /// and is reported, and the rows in memory stay bounded by the open windows.
    async fn commit(&mut self) {
        let offsets = lock(&self.progress).to_commit();
        let (min, max) = self.settings.retry_backoff();
        let mut backoff = min;
        loop {
            let parquet = Arc::clone(&self.parquet);
            let flushed = tokio::task::spawn_blocking(move || {
                let clock = std::time::Instant::now();
                let r = lock(&parquet).flush();
                (r, clock.elapsed())
            })
            .await;
            let error = match flushed {
                Ok((Ok(()), took)) => {
                    self.metrics.flush_seconds.observe(took.as_secs_f64());
                    self.health.clear(HISTORY_STORE);
                    break;
                }
                Ok((Err(e), _)) => e.to_string(),
                Err(e) => format!("the flush task failed: {e}"),
            };
            tracing::warn!(error = %error, ?backoff, "Parquet flush failed; offsets not committed, retrying");
            self.metrics.commits.with_label_values(&["failed"]).inc();
            self.health.fail(
                HISTORY_STORE,
                format!("the sink cannot write the Parquet history: {error}"),
            );
            self.sample_lag();
            tokio::select! {
                () = self.stop.stopped() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(max);
        }
        if !offsets.is_empty() {
            let consumer = Arc::clone(&self.consumer);
            let list = offsets.clone();
            let committed = tokio::task::spawn_blocking(move || {
                let tpl = consumer.context().commit_list(&list)?;
                consumer.commit(&tpl, CommitMode::Sync)
            })
            .await;
            match committed {
                Ok(Ok(())) => {
                    lock(&self.progress).committed(&offsets);
                    self.metrics.commits.with_label_values(&["ok"]).inc();
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "offsets not committed; retrying at the next interval");
                    self.metrics.commits.with_label_values(&["failed"]).inc();
                }
                Err(e) => tracing::warn!(error = %e, "commit task failed"),
            }
        }
        self.sample_lag();
    }

    /// Lag from the brokers' watermarks (one request per partition), sampled off the
    /// runtime and beside the loop: the loop never waits for a metric.
    fn sample_lag(&mut self) {
        if self.last_lag.elapsed() < LAG_SAMPLE_EVERY || self.sampling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.last_lag = Instant::now();
        let consumer = Arc::clone(&self.consumer);
        let watermarks = Arc::clone(&self.watermarks);
        let metrics = Arc::clone(&self.metrics);
        let sampling = Arc::clone(&self.sampling);
        tokio::task::spawn_blocking(move || {
            sample_lag(&consumer, &watermarks, &metrics);
            sampling.store(false, Ordering::Release);
        });
    }
}

/// Sets each owned partition's lag: the partition's end (the last stable offset, read
/// committed) less the consumer's position.
fn sample_lag(consumer: &SinkConsumer, watermarks: &BaseConsumer, metrics: &Metrics) {
    let Ok(positions) = consumer.position() else {
        return;
    };
    let ctx = consumer.context();
    for e in positions.elements() {
        let Some(source) = ctx.source(e.topic()) else {
            continue;
        };
        let Offset::Offset(pos) = e.offset() else {
            continue;
        };
        if let Ok((_, high)) =
            watermarks.fetch_watermarks(e.topic(), e.partition(), WATERMARK_TIMEOUT)
        {
            metrics
                .lag
                .with_label_values(&[source.label(), &e.partition().to_string()])
                .set((high - pos).max(0));
        }
    }
}
