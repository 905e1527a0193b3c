//! Rebalances, seen inside `poll`: a revocation aborts the open transaction before the
//! partitions go to another instance and drops their state; an assignment restores each
//! partition's state from the changelog before its first input.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};

use super::transaction::abort_retrying;
use super::{Runner, TxProducer};
use crate::OrchestratorError;
use crate::metrics::OrchestratorMetrics;
use crate::restore::restore;

/// How long a restore or a rewind keeps trying while Kafka is unreachable before the
/// stage gives up (and the process exits for its supervisor).
const RECOVERY_BUDGET: Duration = Duration::from_secs(300);

pub(super) enum Rebalanced {
    Revoked,
    Assigned(Vec<i32>),
}

/// Sees rebalances inside `poll`: aborts the open transaction before the partitions
/// go to another instance, and tells the loop what changed.
pub(super) struct RebalanceContext {
    /// The runner's producer; replaced when a fatal error made the runner create a new one.
    pub(super) producer: Mutex<Arc<TxProducer>>,
    pub(super) in_txn: Arc<AtomicBool>,
    pub(super) triggers: String,
    pub(super) events: Mutex<Vec<Rebalanced>>,
    pub(super) metrics: Arc<OrchestratorMetrics>,
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
                && let Err(e) = abort_retrying(&self.producer())
            {
                // A producer left in a fatal state fails the next transaction call,
                // which makes the runner replace it.
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
    pub(super) fn producer(&self) -> Arc<TxProducer> {
        Arc::clone(&self.producer.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(super) fn set_producer(&self, producer: Arc<TxProducer>) {
        *self.producer.lock().unwrap_or_else(|p| p.into_inner()) = producer;
    }

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

impl Runner {
    /// Acts on what the last poll's rebalance callbacks saw.
    pub(super) fn after_rebalance(&mut self) -> Result<(), OrchestratorError> {
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

    pub(super) fn take_over(&mut self, parts: &[i32]) -> Result<(), OrchestratorError> {
        let started = Instant::now();
        let timeout = Duration::from_millis(self.settings.transaction_timeout_ms * 3)
            .max(Duration::from_secs(30));
        let restored = self.retrying_while_the_broker_is_away("restore", || {
            restore(&self.kafka, &self.names.changelog, parts, timeout)
        })?;
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

    /// Calls `op` again, with backoff, while it fails and `RECOVERY_BUDGET` lasts: a
    /// broker that restarts makes reading the changelog or the committed offsets fail for
    /// a while, and that must delay the partitions, not end the stage. A stop request or
    /// the budget running out returns the last error.
    pub(super) fn retrying_while_the_broker_is_away<T>(
        &self,
        what: &'static str,
        mut op: impl FnMut() -> Result<T, OrchestratorError>,
    ) -> Result<T, OrchestratorError> {
        let deadline = Instant::now() + RECOVERY_BUDGET;
        let mut backoff = Duration::from_millis(250);
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(e) if Instant::now() + backoff < deadline && !self.stop.is_stopped() => {
                    tracing::warn!(error = %e, what, retry_in_ms = backoff.as_millis() as u64, "failed while the broker may be away; trying again");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) fn clear_batch(&mut self) {
        self.core.discard_pending();
        self.offsets.clear();
        self.batch_records = 0;
        self.batch_started = None;
        self.work = super::BatchWork::default();
        self.definitions_waited = false;
    }
}
