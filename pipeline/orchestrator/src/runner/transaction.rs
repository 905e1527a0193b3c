//! Writing a batch: what the core produced goes into the open transaction as it comes;
//! at the end of the batch the changelog entries and the input offsets join it and it
//! is committed. A failed transactional call is handled the way librdkafka documents:
//! retriable (a timed-out commit, say) → the same call again; abortable → abort, and
//! the batch is redone from the committed offsets and state; fatal → a new producer
//! (`init_transactions` fences the old one) and the same redo; fenced by a newer
//! instance with this instance id → the stage ends, since both cannot own the id.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aiq_kafka::DeadLetterOrigin;
use aiq_topics::TraceParent;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError as RdError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::seal;
use super::trace::traced;
use super::{BatchWork, Runner, TXN_CALL_TIMEOUT, TxProducer, create_producer};
use crate::OrchestratorError;
use crate::core::{ChangelogWrite, InputTopic, Output};
use crate::error::TxnAction;

/// How long a retriable transactional call is repeated. A commit that timed out may
/// still succeed when the coordinator answers (a broker restart, a leader election);
/// aborting it instead would throw the batch away for nothing. Past this the producer
/// is replaced.
const RETRY_FOR: Duration = Duration::from_secs(120);

/// How long a fenced instance waits to see whether a newer instance with its id joined
/// the group: the newer one joins after its `init_transactions`, which fenced this one.
const FENCE_CHECK: Duration = Duration::from_secs(10);

/// Calls `call` until it succeeds, fails with an error librdkafka does not call
/// retriable, or `RETRY_FOR` has passed; the error, if any, is the last one.
pub(super) fn call_retrying(
    producer: &TxProducer,
    op: &'static str,
    call: impl Fn(&TxProducer) -> KafkaResult<()>,
) -> Result<(), OrchestratorError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let Err(e) = call(producer) else {
            return Ok(());
        };
        let e = OrchestratorError::kafka(op, e);
        if e.txn_action() != TxnAction::Retry || started.elapsed() >= RETRY_FOR {
            return Err(e);
        }
        tracing::warn!(error = %e, "transactional call failed, retriable: calling it again");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

pub(super) fn abort_retrying(producer: &TxProducer) -> Result<(), OrchestratorError> {
    call_retrying(producer, "abort transaction", |p| {
        p.abort_transaction(TXN_CALL_TIMEOUT)
    })
}

impl Runner {
    /// The producer of the open (or next) batch.
    pub(super) fn producer(&self) -> &Arc<TxProducer> {
        &self.producers[self.lane]
    }

    /// After a commit: the next batch goes to the next producer, whose previous
    /// transaction (a turn ago) is complete by now, while the coordinator still writes
    /// the markers of the one just committed. The commit above returned, so this
    /// batch's outputs and offsets are decided before the next one's are sent: the
    /// group coordinator keeps the offsets written last, and a partition's records stay
    /// in batch order.
    fn next_lane(&mut self) {
        self.lane = (self.lane + 1) % self.producers.len();
        self.consumer
            .context()
            .set_producer(Arc::clone(&self.producers[self.lane]));
    }

    fn begin(&mut self) -> Result<(), OrchestratorError> {
        if !self.in_txn.load(Ordering::SeqCst) {
            call_retrying(self.producer(), "begin transaction", |p| {
                p.begin_transaction()
            })?;
            self.in_txn.store(true, Ordering::SeqCst);
            self.batch_started.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    /// Sends what the core produced so far into the open transaction.
    ///
    /// An output the producer refuses for good (past the record size limit, not a valid
    /// record) is replaced by a small dead letter (kind `too_large`, no payload) naming
    /// the input it followed from: aborting would redo the batch and meet the same
    /// refusal forever, for every tenant of the process.
    pub(super) fn flush(&mut self) -> Result<(), OrchestratorError> {
        // Once per turn of the runner's loop: signals whose run never appeared within
        // the TTL go to the dead letters in this batch.
        self.core.expire_early_signals(chrono::Utc::now());
        let outputs = self.core.take_outputs_with_causes();
        if outputs.is_empty() {
            return Ok(());
        }
        self.begin()?;
        let names = &self.names;
        let input_topic = |t: InputTopic| match t {
            InputTopic::Triggers => &names.triggers,
            InputTopic::Signals => &names.signals,
            InputTopic::Results => &names.results,
        };
        for (mut o, cause) in outputs {
            seal::seal_output(&self.vault, &mut o)?;
            let (topic, partition, key, payload, headers, origin) = match o {
                Output::Task(t) => {
                    let key = format!("{}/{}", t.tenant, t.run).into_bytes();
                    let payload = serde_json::to_vec(&t).unwrap_or_default();
                    let h = traced(TraceParent::of_task(&t));
                    (&self.names.tasks, None, key, Some(payload), Some(h), None)
                }
                Output::Event(e) => {
                    let payload = e.encode();
                    let key = e.tenant().as_str().as_bytes().to_vec();
                    self.metrics.observe_event(&e);
                    let h = traced(TraceParent::of_event(&e));
                    (&self.names.events, None, key, Some(payload), Some(h), None)
                }
                Output::Trigger { partition, trigger } => {
                    let payload = trigger.encode();
                    let key = trigger.tenant.as_str().as_bytes().to_vec();
                    let h = trigger.run_id.map(|r| traced(TraceParent::of_trigger(r)));
                    let topic = &self.names.triggers;
                    (topic, Some(partition), key, Some(payload), h, None)
                }
                Output::Notification(n) => {
                    let key = n.tenant.as_str().as_bytes().to_vec();
                    let topic = &self.names.notifications;
                    (topic, None, key, Some(n.encode()), None, None)
                }
                Output::Audit(a) => {
                    let key = a.tenant.as_str().as_bytes().to_vec();
                    (&self.names.audit, None, key, Some(a.encode()), None, None)
                }
                Output::QueueState(q) => {
                    let key = q.tenant.as_str().as_bytes().to_vec();
                    let payload = serde_json::to_vec(&q).unwrap_or_default();
                    let topic = &self.names.queue_state;
                    (topic, Some(0), key, Some(payload), None, None)
                }
                Output::DeadLetter(d) => {
                    self.metrics
                        .dead_letters
                        .with_label_values(&[d.kind.as_str()])
                        .inc();
                    let source = input_topic(d.topic);
                    let h = DeadLetterOrigin {
                        kind: d.kind,
                        reason: &d.reason,
                        stage: "orchestrator",
                        topic: source,
                        partition: d.partition,
                        offset: d.offset,
                    }
                    .headers();
                    let origin = Some((source, d.partition, d.offset));
                    let key = d.key.unwrap_or_default();
                    (
                        &self.names.dead_letters,
                        None,
                        key,
                        d.payload,
                        Some(h),
                        origin,
                    )
                }
            };
            let refused = match self.send(topic, partition, &key, payload.as_deref(), headers) {
                Ok(()) => continue,
                Err(OrchestratorError::Kafka {
                    source: RdError::MessageProduction(code),
                    ..
                }) if refused_for_good(code) => code,
                Err(e) => return Err(e),
            };
            let size = payload.as_ref().map_or(0, Vec::len) + key.len();
            let reason = format!(
                "the producer refused a {size}-byte record for {topic} ({refused}); \
                 set aside without its payload"
            );
            tracing::error!(%reason, "output refused");
            // Named by the input it followed from; a timer's or a cron tick's output
            // has none, and is named by where it was going.
            let (from, p, offset) = origin
                .or_else(|| cause.map(|c| (input_topic(c.topic), c.partition, c.offset)))
                .unwrap_or((topic, partition.unwrap_or(-1), -1));
            let kind = aiq_topics::DeadLetterKind::TooLarge;
            self.metrics
                .dead_letters
                .with_label_values(&[kind.as_str()])
                .inc();
            let h = DeadLetterOrigin {
                kind,
                reason: &reason,
                stage: "orchestrator",
                topic: from,
                partition: p,
                offset,
            }
            .headers();
            self.send(&self.names.dead_letters, None, &key, None, Some(h))?;
        }
        return Ok(());

        /// Refusals about the record itself, which a new transaction cannot cure; a full
        /// queue, a broker or transaction error is not one of them.
        fn refused_for_good(code: RDKafkaErrorCode) -> bool {
            matches!(
                code,
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessage
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::InvalidRecord
                    | RDKafkaErrorCode::BadMessage
                    | RDKafkaErrorCode::InvalidArgument
            )
        }
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
            match self.producer().send(record) {
                Ok(()) => return Ok(()),
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(OrchestratorError::kafka("produce", e)),
            }
        }
    }

    /// Writes the changelog entries, sends the input offsets and commits. Returns
    /// false when that failed and the batch is being redone from the committed state.
    pub(super) fn commit(&mut self) -> Result<bool, OrchestratorError> {
        match self.try_commit() {
            Ok(()) => Ok(true),
            Err(e) => {
                self.recover(e)?;
                Ok(false)
            }
        }
    }

    /// After a failed call in the open batch (retriable ones were retried already):
    /// an abortable error aborts the transaction and redoes the batch; a fatal one
    /// replaces the producer and redoes it; being fenced by a newer instance with this
    /// instance id ends the stage.
    pub(super) fn recover(&mut self, e: OrchestratorError) -> Result<(), OrchestratorError> {
        match e.txn_action() {
            TxnAction::Abort => {
                tracing::warn!(error = %e, "transaction failed; aborting and redoing the batch");
                self.metrics.aborts.inc();
                if self.in_txn.swap(false, Ordering::SeqCst)
                    && let Err(abort) = abort_retrying(self.producer())
                {
                    return self.replace_producer(abort);
                }
                self.clear_batch();
                self.rewind()
            }
            TxnAction::Retry | TxnAction::Recreate | TxnAction::Fenced => self.replace_producer(e),
            TxnAction::Stop => Err(e),
        }
    }

    /// The producer is unusable (fatal error, or retries ran out): a new one fences it
    /// and aborts its open transaction, and the batch is redone from the committed
    /// offsets and state. Unless a newer instance fenced it: then this one stops, or
    /// the two would fence each other in turn.
    fn replace_producer(&mut self, e: OrchestratorError) -> Result<(), OrchestratorError> {
        if e.txn_action() == TxnAction::Fenced && self.newer_instance() {
            return Err(match e {
                OrchestratorError::Kafka { source, .. } => self.fenced(source),
                other => other,
            });
        }
        tracing::warn!(error = %e, "transactional producer unusable; replacing it and redoing the batch");
        self.metrics.aborts.inc();
        self.in_txn.store(false, Ordering::SeqCst);
        let producer = Arc::new(create_producer(&self.kafka, &self.settings, self.lane)?);
        self.consumer.context().set_producer(Arc::clone(&producer));
        // The old producer is dropped here, already fenced by the new one.
        self.producers[self.lane] = producer;
        self.clear_batch();
        self.rewind()
    }

    pub(super) fn fenced(&self, source: RdError) -> OrchestratorError {
        OrchestratorError::Fenced {
            instance_id: self.settings.instance_id.as_str().into(),
            transactional_id: self
                .settings
                .lane_transactional_id(&self.kafka.topic_prefix, self.lane)
                .into(),
            source,
        }
    }

    /// Whether another instance with this instance id joined the group: it uses the
    /// same `group.instance.id`, and the coordinator answers that by fencing this
    /// consumer (a fatal consumer error). Fenced without it, the coordinator fenced
    /// the producer on its own (a transaction that outlived `transaction.timeout.ms`).
    fn newer_instance(&self) -> bool {
        let deadline = Instant::now() + FENCE_CHECK;
        loop {
            if let Some((code, reason)) = self.consumer.client().fatal_error() {
                tracing::error!(
                    ?code,
                    reason,
                    "consumer fatal error after the producer was fenced"
                );
                return code == RDKafkaErrorCode::FencedInstanceId;
            }
            if Instant::now() >= deadline || self.stop.is_stopped() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_commit(&mut self) -> Result<(), OrchestratorError> {
        self.flush()?;
        let changes = self.core.take_changelog();
        if changes.is_empty() && self.offsets.is_empty() && !self.in_txn.load(Ordering::SeqCst) {
            self.batch_started = None;
            self.work = BatchWork::default();
            self.definitions_waited = false;
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
            let value = match value {
                Some(v) => seal::seal_entry(&self.vault, &key, v)?,
                None => None,
            };
            self.send(
                &self.names.changelog,
                Some(partition),
                key.as_bytes(),
                value.as_deref(),
                None,
            )?;
        }
        let phase = |name: &str, since: Instant| {
            self.metrics
                .commit_phase_seconds
                .with_label_values(&[name])
                .observe(since.elapsed().as_secs_f64());
        };
        let offsets = Instant::now();
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
            call_retrying(self.producer(), "send offsets to transaction", |p| {
                p.send_offsets_to_transaction(&tpl, &group, TXN_CALL_TIMEOUT)
            })?;
        }
        phase("offsets", offsets);
        // Acknowledged first, so that the commit call itself has nothing to wait for.
        let acks = Instant::now();
        call_retrying(self.producer(), "flush", |p| {
            aiq_kafka::flush_promptly(p, TXN_CALL_TIMEOUT)
        })?;
        phase("acks", acks);
        let end = Instant::now();
        // Everything is acknowledged above, so the commit's own flush has nothing to wait
        // for (what `aiq_kafka::commit_promptly` does in one call).
        call_retrying(self.producer(), "commit transaction", |p| {
            p.commit_transaction(TXN_CALL_TIMEOUT)
        })?;
        phase("end", end);
        self.in_txn.store(false, Ordering::SeqCst);
        self.next_lane();
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Some(began) = self.batch_started {
            self.metrics
                .transaction_seconds
                .observe(began.elapsed().as_secs_f64());
        }
        self.metrics
            .batch_records
            .observe(self.batch_records as f64);
        self.metrics.changelog_writes.inc_by(n_changes as u64);
        self.offsets.clear();
        self.batch_records = 0;
        self.batch_started = None;
        self.work = BatchWork::default();
        self.definitions_waited = false;
        Ok(())
    }

    /// After an aborted batch: back to the committed offsets and the committed state.
    fn rewind(&mut self) -> Result<(), OrchestratorError> {
        let committed = self.retrying_while_the_broker_is_away("read committed offsets", || {
            self.consumer
                .committed(TXN_CALL_TIMEOUT)
                .map_err(|e| OrchestratorError::kafka("read committed offsets", e))
        })?;
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
