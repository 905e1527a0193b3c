//! The consumer's rebalance handling. Runs inside the consumer's poll (`recv`), so
//! never while the loop writes a batch or commits.
//!
//! On assignment an events partition starts at the beginning of its open Parquet window
//! (`Writers::resume_offset` of the committed offset), so the window's rows are
//! rebuilt; the store writes they repeat are idempotent. On revocation the Parquet files
//! are flushed and what was written is committed while the partitions are still owned,
//! then the writer forgets their windows.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::progress::{Progress, Source, ToCommit, Tp};
use super::writers::Writers;

/// How long an assignment waits for the group's committed offsets.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

pub struct SinkContext {
    pub events: Arc<str>,
    pub audit: Arc<str>,
    pub dead_letters: Arc<str>,
    pub progress: Arc<Mutex<Progress>>,
    pub parquet: Arc<Mutex<Writers>>,
    pub erased: crate::settings::ErasedTenants,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SinkContext {
    pub fn source(&self, topic: &str) -> Option<Source> {
        if topic == &*self.events {
            Some(Source::Events)
        } else if topic == &*self.audit {
            Some(Source::Audit)
        } else if topic == &*self.dead_letters {
            Some(Source::DeadLetters)
        } else {
            None
        }
    }

    pub fn topic(&self, source: Source) -> &str {
        match source {
            Source::Events => &self.events,
            Source::Audit => &self.audit,
            Source::DeadLetters => &self.dead_letters,
        }
    }

    fn tps(&self, tpl: &TopicPartitionList) -> Vec<Tp> {
        tpl.elements()
            .iter()
            .filter_map(|e| Some((self.source(e.topic())?, e.partition())))
            .collect()
    }

    /// The list to commit `offsets` with.
    pub fn commit_list(&self, offsets: &[ToCommit]) -> KafkaResult<TopicPartitionList> {
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for c in offsets {
            tpl.add_partition_offset(self.topic(c.tp.0), c.tp.1, Offset::Offset(c.offset))?;
        }
        Ok(tpl)
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let committed = match consumer.committed_offsets(tpl.clone(), COMMITTED_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                // Starting from the committed offsets as librdkafka does by itself
                // loses nothing; only the open Parquet window misses its earlier rows.
                tracing::warn!(error = %e, "committed offsets unknown; not rebuilding Parquet windows");
                TopicPartitionList::new()
            }
        };
        let committed_of = |topic: &str, partition: i32| match committed
            .find_partition(topic, partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        let parquet = lock(&self.parquet);
        let mut progress = lock(&self.progress);
        for mut e in tpl.elements() {
            let Some(source) = self.source(e.topic()) else {
                continue;
            };
            let c = committed_of(e.topic(), e.partition());
            if let (true, Some(c)) = (Writers::writes(source), c) {
                let from = parquet.resume_offset(c);
                // The assignment starts where its elements say.
                if let Err(err) = e.set_offset(Offset::Offset(from)) {
                    tracing::warn!(error = %err, partition = e.partition(), "cannot rewind to the Parquet window");
                }
            }
            progress.assign((source, e.partition()), c);
        }
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let revoked = self.tps(tpl);
        let last = lock(&self.progress).revoke(&revoked);
        let mut parquet = lock(&self.parquet);
        if consumer.assignment_lost() {
            tracing::warn!(partitions = ?revoked, "sink partitions lost; committing nothing");
        } else {
            match parquet.flush() {
                Err(e) => {
                    tracing::warn!(error = %e, "Parquet flush at revocation failed; offsets not committed")
                }
                Ok(()) if last.is_empty() => {}
                Ok(()) => {
                    let committed = self
                        .commit_list(&last)
                        .and_then(|l| consumer.commit(&l, CommitMode::Sync));
                    if let Err(e) = committed {
                        tracing::warn!(error = %e, "offsets of revoked partitions not committed");
                    }
                }
            }
        }
        for (source, partition) in revoked {
            parquet.revoke(source, partition);
        }
        tracing::info!(partitions = ?self.tps(tpl), "sink partitions revoked");
    }
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.assign(consumer, tpl),
            Rebalance::Revoke(tpl) => self.revoke(consumer, tpl),
            Rebalance::Error(e) => tracing::warn!(error = %e, "sink consumer rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {
        match consumer.assignment() {
            Ok(tpl) => {
                let assigned = self.tps(&tpl);
                lock(&self.progress).set_assignment(&assigned);
                tracing::info!(partitions = ?assigned, "sink partitions assigned");
            }
            Err(e) => {
                tracing::warn!(error = %e, "sink assignment unknown; committing nothing");
                lock(&self.progress).set_assignment(&[]);
            }
        }
    }
}
