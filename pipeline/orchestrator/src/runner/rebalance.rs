//! Rebalances, seen inside `poll`: a revocation aborts the open transaction before the
//! partitions go to another instance; an assignment restores each partition's state
//! from the changelog before its first input.
//!
//! The group assigns eagerly (range, so that partition n of every input topic stays on
//! one instance), so every rebalance revokes every partition. A partition that comes
//! back to this instance keeps its state instead of being restored again when nothing
//! can have changed it: the aborted transaction held no change of it, the revocation
//! was orderly (the assignment not lost), and its changelog's end offset is where it
//! was at the revocation (nobody wrote to it meanwhile). Anything else restores.

use std::collections::HashMap;
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
    /// With the changelog end offset of each revoked partition, when the revocation
    /// was orderly (empty when the assignment was lost).
    Revoked(HashMap<i32, i64>),
    Assigned(Vec<i32>),
}

/// Sees rebalances inside `poll`: aborts the open transaction before the partitions
/// go to another instance, and tells the loop what changed.
pub(super) struct RebalanceContext {
    /// The runner's producer; replaced when a fatal error made the runner create a new one.
    pub(super) producer: Mutex<Arc<TxProducer>>,
    pub(super) in_txn: Arc<AtomicBool>,
    pub(super) triggers: String,
    pub(super) changelog: String,
    /// Reads end offsets (read uncommitted: the high watermark, which moves with any
    /// write, committed or not).
    pub(super) watermarks: BaseConsumer,
    pub(super) events: Mutex<Vec<Rebalanced>>,
    pub(super) metrics: Arc<OrchestratorMetrics>,
}

impl ClientContext for RebalanceContext {
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        self.metrics.lag.observe(&statistics);
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if self.in_txn.swap(false, Ordering::SeqCst)
                && let Err(e) = abort_retrying(&self.producer())
            {
                // A producer left in a fatal state fails the next transaction call,
                // which makes the runner replace it.
                tracing::error!(error = %e, "aborting the open transaction on revocation failed");
            }
            let mut ends = HashMap::new();
            if !c.assignment_lost() {
                for e in tpl.elements().iter().filter(|e| e.topic() == self.triggers) {
                    // One unanswered query means the broker is away: the rest would
                    // only hold the rebalance up; those partitions are restored.
                    let Some(end) = self.changelog_end(e.partition()) else {
                        break;
                    };
                    ends.insert(e.partition(), end);
                }
            }
            self.push(Rebalanced::Revoked(ends));
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

    /// The changelog partition's end offset, or `None` if it cannot be read now (then
    /// the partition is restored, as if something had changed).
    pub(super) fn changelog_end(&self, partition: i32) -> Option<i64> {
        self.watermarks
            .fetch_watermarks(&self.changelog, partition, Duration::from_secs(5))
            .map(|(_, high)| high)
            .map_err(|e| tracing::warn!(error = %e, partition, "changelog end offset"))
            .ok()
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
                Rebalanced::Revoked(ends) => {
                    // The callback aborted the open transaction: what it changed goes.
                    let touched = self.core.touched();
                    let owned: Vec<i32> = self.core.owned().collect();
                    self.clear_batch();
                    for p in owned {
                        let end = ends.get(&p).filter(|_| !touched.contains(&p));
                        match (end, self.core.park(p)) {
                            (Some(end), Some(state)) => {
                                self.parked.insert(p, (*end, state));
                            }
                            _ => self.core.drop_partition(p),
                        }
                    }
                    self.metrics.owned_partitions.set(0);
                    tracing::info!(parked = self.parked.len(), "partitions revoked");
                }
                Rebalanced::Assigned(parts) => {
                    let mut restore = Vec::new();
                    for p in &parts {
                        match self.parked.remove(p) {
                            Some((end, state))
                                if self.consumer.context().changelog_end(*p) == Some(end) =>
                            {
                                self.core.unpark(*p, state);
                                self.metrics.rebalance_kept.inc();
                            }
                            _ => restore.push(*p),
                        }
                    }
                    // Parked and not given back: another instance owns them now.
                    self.parked.clear();
                    self.metrics.rebalance_restored.inc_by(restore.len() as u64);
                    tracing::info!(kept = parts.len() - restore.len(), restore = ?restore, "partitions assigned");
                    self.take_over(&restore)?;
                    self.metrics.owned_partitions.set(parts.len() as i64);
                }
            }
        }
        Ok(())
    }

    pub(super) fn take_over(&mut self, parts: &[i32]) -> Result<(), OrchestratorError> {
        let started = Instant::now();
        // No progress for this long fails the restore: longer than a crashed owner's
        // open transaction can stay open.
        let stall = Duration::from_millis(self.settings.transaction_timeout_ms * 3)
            .max(Duration::from_secs(30));
        let mut restores = self.retrying_while_the_broker_is_away("restore", || {
            let mut restores: Vec<_> = parts.iter().map(|p| self.core.begin_restore(*p)).collect();
            let vault = &self.vault;
            let open = |key: &[u8], value: &[u8]| super::seal::open_entry(vault, key, value);
            restore(
                &self.kafka,
                &self.names.changelog,
                &mut restores,
                stall,
                &open,
            )?;
            Ok(restores)
        })?;
        let (mut records, mut skipped) = (0, 0);
        for r in restores.drain(..) {
            let (n, bad) = r.counts();
            records += n;
            skipped += bad;
            self.core.finish_restore(r, chrono::Utc::now());
        }
        self.metrics
            .restore_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(partitions = ?parts, records, skipped, ms = started.elapsed().as_millis() as u64, "partitions assigned; state restored");
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
