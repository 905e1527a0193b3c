//! Committed offsets only for the partitions this worker owns.
//!
//! Finished offsets go to librdkafka's offset store, which takes them only for assigned
//! partitions; its auto-commit sends those that moved, retries failed commits, and
//! commits a partition's last stored offset when it is revoked. The rebalance callbacks
//! here drop a partition's state when it is revoked (storing what it had reached first,
//! while still owned), so a worker can never move another one's committed offset
//! backwards. Tasks still running for a revoked partition still write their results (at
//! least once); their offsets are the new owner's to commit.

use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::metrics::WorkerMetrics;
use crate::offsets::Pending;

pub(crate) type TaskConsumer = StreamConsumer<WorkerContext>;

/// Keeps the committable offsets to the partitions the worker owns: runs inside the
/// consumer's poll (`recv`), before and after librdkafka changes the assignment.
pub(crate) struct WorkerContext {
    pub(crate) topic: Arc<str>,
    pub(crate) pending: Arc<Mutex<Pending>>,
    pub(crate) metrics: Arc<WorkerMetrics>,
}

impl WorkerContext {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == &*self.topic)
            .map(|e| e.partition())
            .collect()
    }
}

impl ClientContext for WorkerContext {
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        self.metrics.lag.observe(&statistics);
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let revoked = self.partitions(tpl);
        let mut pending = lock(&self.pending);
        let last = pending.revoke(&revoked);
        if consumer.assignment_lost() {
            // Someone else may own them already: librdkafka commits nothing for them.
            tracing::warn!(partitions = ?revoked, "task partitions lost");
            return;
        }
        // Still assigned until this callback returns: librdkafka commits what is
        // stored now as it removes the partitions, and waits for that commit before
        // rejoining the group.
        if !last.is_empty() {
            let (_, failed) = store_offsets(consumer, &self.topic, &last);
            if let Some(e) = failed {
                tracing::debug!(error = %e, "offsets of revoked task partitions not stored");
            }
        }
        tracing::info!(partitions = ?revoked, "task partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Error(e) = rebalance {
            tracing::warn!(error = %e, "task consumer rebalance error");
        }
        // Whatever happened, own exactly what librdkafka now says is assigned.
        match consumer.assignment() {
            Ok(tpl) => {
                let assigned = self.partitions(&tpl);
                lock(&self.pending).set_assignment(&assigned);
                if let Rebalance::Assign(_) = rebalance {
                    tracing::info!(partitions = ?assigned, "task partitions assigned");
                }
            }
            Err(e) => {
                // Nothing owned means nothing committed: tasks are redone, not lost.
                tracing::warn!(error = %e, "task assignment unknown; committing nothing");
                lock(&self.pending).set_assignment(&[]);
            }
        }
    }

    /// The auto-commits' outcome; a failed one is retried by the next.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Err(e) => tracing::debug!(error = %e, "task offsets not committed; retrying"),
            Ok(()) => {
                for e in offsets.elements() {
                    if let Err(err) = e.error() {
                        tracing::debug!(error = %err, partition = e.partition(), "task offset not committed; retrying");
                    }
                }
            }
        }
    }
}

pub(crate) fn lock(p: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands the offsets that moved to librdkafka's store, for its auto-commit.
pub(crate) fn store(consumer: &TaskConsumer, pending: &Mutex<Pending>) {
    // Under the lock until librdkafka has the offsets: a revocation (whose callback
    // takes the lock too) cannot come between reading them and storing them.
    let mut pending = lock(pending);
    let offsets = pending.take_changed();
    if offsets.is_empty() {
        return;
    }
    let (refused, failed) = store_offsets(consumer, &consumer.context().topic, &offsets);
    if let Some(e) = failed {
        tracing::debug!(error = %e, "task offsets not stored (a rebalance?)");
    }
    for (p, o) in refused {
        pending.hand_over_failed(p, o);
    }
}

/// Stores `offsets`; returns the ones librdkafka refused (a partition no longer
/// assigned) and the error, if any.
fn store_offsets(
    consumer: &impl Consumer<WorkerContext>,
    topic: &str,
    offsets: &[(i32, i64)],
) -> (Vec<(i32, i64)>, Option<KafkaError>) {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for &(p, o) in offsets {
        if let Err(e) = tpl.add_partition_offset(topic, p, Offset::Offset(o)) {
            return (offsets.to_vec(), Some(e));
        }
    }
    match consumer.store_offsets(&tpl) {
        // librdkafka marks each partition it refused.
        Ok(()) => {
            let mut refused = Vec::new();
            let mut failed = None;
            for e in tpl.elements() {
                if let (Err(err), Offset::Offset(o)) = (e.error(), e.offset()) {
                    refused.push((e.partition(), o));
                    failed = Some(err);
                }
            }
            (refused, failed)
        }
        Err(e) => (offsets.to_vec(), Some(e)),
    }
}
