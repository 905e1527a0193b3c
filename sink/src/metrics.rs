//! The sink's Prometheus metrics. Labels are bounded: topic kinds, table names and
//! partition numbers, never tenants.

use aiq_metrics::sink;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Registry};

// The names, kept here for the tests and tools that look a family up by name.
pub const RECORDS: &str = sink::RECORDS.name;
pub const WRITES: &str = sink::WRITES.name;
pub const WRITE_SECONDS: &str = sink::WRITE_SECONDS.name;
pub const BATCH_RECORDS: &str = sink::BATCH_RECORDS.name;
pub const CONSUMER_LAG: &str = sink::CONSUMER_LAG.name;
pub const RETRIES: &str = sink::RETRIES.name;
pub const UNDECODABLE: &str = sink::UNDECODABLE.name;
pub const DEAD_LETTERS: &str = sink::DEAD_LETTERS.name;
pub const PARQUET_FLUSH_SECONDS: &str = sink::PARQUET_FLUSH_SECONDS.name;
pub const COMMITS: &str = sink::COMMITS.name;
pub const ERASED_RUNS: &str = sink::ERASED_RUNS.name;

const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_SIZES: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

pub struct Metrics {
    /// By topic kind (`events`, `audit`).
    pub records: IntCounterVec,
    /// By table and outcome (`ok`, `failed`).
    pub writes: IntCounterVec,
    pub write_seconds: HistogramVec,
    pub batch_records: Histogram,
    /// High watermark minus the sink's position, by topic kind and partition.
    pub lag: IntGaugeVec,
    /// Batches sent again after the store refused some of their writes.
    pub retries: IntCounter,
    pub undecodable: IntCounterVec,
    /// Events of erased tenants dropped.
    pub erased: IntCounter,
    /// By topic kind and dead-letter kind: records the store refused for good.
    pub dead_letters: IntCounterVec,
    pub flush_seconds: Histogram,
    /// By outcome (`ok`, `failed`).
    pub commits: IntCounterVec,
    /// Runs whose payloads were scrubbed from the Parquet files.
    pub erased_runs: IntCounter,
}

/// The metrics are constants checked by aiq-metrics' tests, so creating them cannot fail.
fn constant<T>(r: Result<T, prometheus::Error>) -> T {
    r.unwrap_or_else(|e| unreachable!("constant metric: {e}"))
}

impl Metrics {
    /// Creates the metrics and registers them; one already registered (a second sink in
    /// the same process) is kept unregistered rather than failing the stage.
    pub fn new(registry: &Registry) -> Self {
        use aiq_metrics::{counter, counter_vec, gauge_vec, histogram, histogram_vec};
        let r = registry;
        // Born at 0 for every series, so that increase() in the dead-letter alert sees
        // the first refusal too.
        let dead_letters = constant(counter_vec(r, &sink::DEAD_LETTERS, &["topic", "kind"]));
        for topic in ["events", "audit", "dead_letters"] {
            for kind in ["too_large", "invalid"] {
                dead_letters.with_label_values(&[topic, kind]);
            }
        }
        Self {
            records: constant(counter_vec(r, &sink::RECORDS, &["topic"])),
            writes: constant(counter_vec(r, &sink::WRITES, &["table", "outcome"])),
            write_seconds: constant(histogram_vec(r, &sink::WRITE_SECONDS, &["table"], SECONDS)),
            batch_records: constant(histogram(r, &sink::BATCH_RECORDS, BATCH_SIZES)),
            lag: constant(gauge_vec(r, &sink::CONSUMER_LAG, &["topic", "partition"])),
            retries: constant(counter(r, &sink::RETRIES)),
            undecodable: constant(counter_vec(r, &sink::UNDECODABLE, &["topic"])),
            erased: constant(counter(r, &sink::ERASED)),
            dead_letters,
            flush_seconds: constant(histogram(r, &sink::PARQUET_FLUSH_SECONDS, SECONDS)),
            commits: constant(counter_vec(r, &sink::COMMITS, &["outcome"])),
            erased_runs: constant(counter(r, &sink::ERASED_RUNS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_sink_in_one_process_shares_the_registry_without_failing() {
        let registry = Registry::new();
        let first = Metrics::new(&registry);
        let second = Metrics::new(&registry);
        first.retries.inc();
        second.retries.inc();
        first.lag.with_label_values(&["events", "0"]).set(4);
        let families = registry.gather();
        let retries = families.iter().find(|f| f.name() == RETRIES).unwrap();
        assert_eq!(retries.get_metric()[0].get_counter().get_value(), 1.0);
        assert!(families.iter().any(|f| f.name() == CONSUMER_LAG));
    }

    #[test]
    fn erased_runs_are_counted_under_their_name() {
        let registry = Registry::new();
        let m = Metrics::new(&registry);
        m.erased_runs.inc();
        let families = registry.gather();
        let erased = families.iter().find(|f| f.name() == ERASED_RUNS).unwrap();
        assert_eq!(erased.help(), sink::ERASED_RUNS.help);
        assert_eq!(erased.get_metric()[0].get_counter().get_value(), 1.0);
    }
}
