//! The sink's Prometheus metrics. Labels are bounded: topic kinds, table names and
//! partition numbers, never tenants.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

pub const RECORDS: &str = "aiq_sink_records_total";
pub const WRITES: &str = "aiq_sink_writes_total";
pub const WRITE_SECONDS: &str = "aiq_sink_write_seconds";
pub const BATCH_RECORDS: &str = "aiq_sink_batch_records";
pub const CONSUMER_LAG: &str = "aiq_sink_consumer_lag";
pub const RETRIES: &str = "aiq_sink_write_retries_total";
pub const UNDECODABLE: &str = "aiq_sink_undecodable_records_total";
pub const PARQUET_FLUSH_SECONDS: &str = "aiq_sink_parquet_flush_seconds";
pub const COMMITS: &str = "aiq_sink_commits_total";

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
    pub flush_seconds: Histogram,
    /// By outcome (`ok`, `failed`).
    pub commits: IntCounterVec,
}

fn constant<T>(r: Result<T, prometheus::Error>) -> T {
    r.unwrap_or_else(|e| unreachable!("constant metric: {e}"))
}

impl Metrics {
    /// Creates the metrics and registers them; one already registered (a second sink in
    /// the same process) is kept unregistered rather than failing the stage.
    pub fn new(registry: &Registry) -> Self {
        let secs = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let m = Self {
            records: constant(IntCounterVec::new(
                Opts::new(RECORDS, "Records consumed, by topic"),
                &["topic"],
            )),
            writes: constant(IntCounterVec::new(
                Opts::new(WRITES, "CQL writes, by table and outcome"),
                &["table", "outcome"],
            )),
            write_seconds: constant(HistogramVec::new(
                HistogramOpts::new(WRITE_SECONDS, "Latency of one CQL write, by table")
                    .buckets(secs.clone()),
                &["table"],
            )),
            batch_records: constant(Histogram::with_opts(
                HistogramOpts::new(BATCH_RECORDS, "Records per written batch").buckets(vec![
                    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
                ]),
            )),
            lag: constant(IntGaugeVec::new(
                Opts::new(
                    CONSUMER_LAG,
                    "High watermark minus position, by topic and partition",
                ),
                &["topic", "partition"],
            )),
            retries: constant(IntCounter::new(
                RETRIES,
                "Batches retried after the store refused writes",
            )),
            undecodable: constant(IntCounterVec::new(
                Opts::new(UNDECODABLE, "Records skipped because they did not decode"),
                &["topic"],
            )),
            flush_seconds: constant(Histogram::with_opts(
                HistogramOpts::new(PARQUET_FLUSH_SECONDS, "Time to flush the Parquet files")
                    .buckets(secs),
            )),
            commits: constant(IntCounterVec::new(
                Opts::new(COMMITS, "Offset commits, by outcome"),
                &["outcome"],
            )),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 9] = [
            Box::new(m.records.clone()),
            Box::new(m.writes.clone()),
            Box::new(m.write_seconds.clone()),
            Box::new(m.batch_records.clone()),
            Box::new(m.lag.clone()),
            Box::new(m.retries.clone()),
            Box::new(m.undecodable.clone()),
            Box::new(m.flush_seconds.clone()),
            Box::new(m.commits.clone()),
        ];
        for c in collectors {
            if let Err(e) = registry.register(c) {
                tracing::debug!(error = %e, "sink metric not registered");
            }
        }
        m
    }
}
