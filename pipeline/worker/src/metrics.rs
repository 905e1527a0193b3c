//! What the worker reports on `/metrics`.

use aiq_topics::{TenantId, TenantLabels};
use prometheus::{CounterVec, HistogramVec, IntCounterVec, IntGauge, Registry};

use crate::lag::ConsumerLag;

pub const STAGE: &str = "worker";

pub struct WorkerMetrics {
    tenants: TenantLabels,
    pub tasks: IntCounterVec,
    pub seconds: HistogramVec,
    /// Seconds of connector time, per tenant: what a tenant costs in worker capacity.
    pub step_seconds: CounterVec,
    /// Bytes of results written, per tenant.
    pub output_bytes: IntCounterVec,
    pub in_flight: IntGauge,
    pub dead_letters: IntCounterVec,
    pub lag: ConsumerLag,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    r.unwrap_or_else(|e| unreachable!("constant metric: {e}"))
}

impl WorkerMetrics {
    /// Creates the metrics and registers them in `registry`; one already registered
    /// (a second worker in one process) stays unregistered rather than failing.
    pub fn new(registry: &Registry) -> Self {
        use aiq_metrics::worker as w;
        use aiq_metrics::{counter_vec, float_counter_vec, gauge, histogram_vec};
        Self {
            tenants: aiq_metrics::tenant_labels(),
            tasks: must(counter_vec(registry, &w::TASKS, &["connector", "outcome"])),
            seconds: must(histogram_vec(
                registry,
                &w::TASK_SECONDS,
                &["connector"],
                &[
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ],
            )),
            step_seconds: must(float_counter_vec(registry, &w::STEP_SECONDS, &["tenant"])),
            output_bytes: must(counter_vec(registry, &w::OUTPUT_BYTES, &["tenant"])),
            in_flight: must(gauge(registry, &w::IN_FLIGHT_TASKS)),
            dead_letters: must(aiq_metrics::counter_vec_of(
                registry,
                &w::DEAD_LETTERS,
                "kind",
                &aiq_topics::DeadLetterKind::ALL.map(aiq_topics::DeadLetterKind::as_str),
            )),
            lag: ConsumerLag::new(STAGE, true, registry),
        }
    }

    /// Counts one finished task attempt.
    pub fn task_done(
        &self,
        tenant: &TenantId,
        connector: &str,
        outcome: &str,
        seconds: f64,
        result_bytes: usize,
    ) {
        let t = self.tenants.label(tenant);
        self.tasks.with_label_values(&[connector, outcome]).inc();
        self.seconds
            .with_label_values(&[connector])
            .observe(seconds);
        self.step_seconds.with_label_values(&[&t]).inc_by(seconds);
        self.output_bytes
            .with_label_values(&[&t])
            .inc_by(result_bytes as u64);
    }
}
