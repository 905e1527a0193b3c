//! Consumer lag from librdkafka's statistics: per assigned partition, the high
//! watermark (the last stable offset under `read_committed`) minus the consumer's
//! position, as `aiq_consumer_lag{stage,topic,partition}`.
//!
//! Computed from the position rather than librdkafka's own `consumer_lag`, which counts
//! from the committed offset: the orchestrator commits its offsets inside transactions,
//! which librdkafka's statistics never see.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use prometheus::{IntGaugeVec, Registry};
use rdkafka::statistics::Statistics;

/// How often librdkafka reports statistics, and so how often the lag is sampled.
pub const SAMPLE_INTERVAL_MS: u64 = 5000;

pub const CONSUMER_LAG: &str = aiq_metrics::kafka::CONSUMER_LAG.name;

/// One series family for every stage of a process: registering a second family of the
/// same name would fail, so the stages share this one.
fn gauge() -> &'static IntGaugeVec {
    static GAUGE: OnceLock<IntGaugeVec> = OnceLock::new();
    GAUGE.get_or_init(|| {
        aiq_metrics::new_gauge_vec(
            &aiq_metrics::kafka::CONSUMER_LAG,
            &["stage", "topic", "partition"],
        )
        .unwrap_or_else(|e| unreachable!("constant metric: {e}"))
    })
}

/// The lag of one stage's consumer.
pub struct ConsumerLag {
    stage: &'static str,
    read_committed: bool,
    /// The series this stage set last time, so that revoked partitions' are removed.
    shown: Mutex<HashSet<(String, i32)>>,
}

impl ConsumerLag {
    pub fn new(stage: &'static str, read_committed: bool, registry: &Registry) -> Self {
        // Already registered by another stage of this process: that is the same family.
        let _ = aiq_metrics::register(registry, gauge());
        Self {
            stage,
            read_committed,
            shown: Mutex::new(HashSet::new()),
        }
    }

    /// Updates the gauges from a statistics report (a `ClientContext::stats` call).
    pub fn observe(&self, stats: &Statistics) {
        let mut now = HashSet::new();
        for (topic, t) in &stats.topics {
            for p in t.partitions.values() {
                // -1 is librdkafka's internal "unassigned" partition; a partition not
                // assigned to this consumer has no fetcher running.
                if p.partition < 0 || !fetching(&p.fetch_state) {
                    continue;
                }
                let Some(lag) = lag(
                    p.app_offset,
                    p.committed_offset,
                    if self.read_committed {
                        p.ls_offset
                    } else {
                        p.hi_offset
                    },
                ) else {
                    continue;
                };
                gauge()
                    .with_label_values(&[self.stage, topic.as_str(), &p.partition.to_string()])
                    .set(lag);
                now.insert((topic.clone(), p.partition));
            }
        }
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, partition) in shown.difference(&now) {
            let _ = gauge().remove_label_values(&[self.stage, topic, &partition.to_string()]);
        }
        *shown = now;
    }
}

/// Whether librdkafka is fetching the partition for this consumer: assigned, and not
/// being stopped.
fn fetching(state: &str) -> bool {
    !matches!(state, "none" | "stopping" | "stopped")
}

/// The high mark minus the position; before the first record of a partition is
/// consumed, its committed offset is the position. Negative offsets are librdkafka's
/// "not known yet".
fn lag(app_offset: i64, committed_offset: i64, high: i64) -> Option<i64> {
    let position = if app_offset >= 0 {
        app_offset
    } else {
        committed_offset
    };
    (position >= 0 && high >= 0).then(|| (high - position).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_position_and_knows_when_it_does_not_know() {
        assert_eq!(lag(10, 5, 15), Some(5));
        assert_eq!(lag(-1001, 7, 15), Some(8));
        assert_eq!(lag(-1001, -1001, 15), None);
        assert_eq!(lag(10, 5, -1), None);
        // A high mark not refreshed yet is no negative lag.
        assert_eq!(lag(20, 5, 15), Some(0));
    }

    #[test]
    fn only_partitions_being_fetched_count() {
        assert!(fetching("active"));
        assert!(fetching("offset-query"));
        assert!(!fetching("none"));
        assert!(!fetching("stopped"));
    }
}
