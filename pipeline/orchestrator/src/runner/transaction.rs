//! Writing a batch: what the core produced goes into the open transaction as it comes;
//! at the end of the batch the changelog entries and the input offsets join it and it
//! is committed. A failed commit aborts, and the batch is redone from the committed
//! offsets and state.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aiq_kafka::DeadLetterOrigin;
use aiq_topics::TraceParent;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::trace::traced;
use super::{Runner, TXN_CALL_TIMEOUT};
use crate::OrchestratorError;
use crate::core::{ChangelogWrite, InputTopic, Output};

impl Runner {
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
    pub(super) fn flush(&mut self) -> Result<(), OrchestratorError> {
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
    pub(super) fn commit(&mut self) -> Result<(), OrchestratorError> {
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
