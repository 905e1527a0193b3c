//! What the worker reports on `/metrics`.

use aiq_topics::labels::MAX_NAMED_TENANTS;
use aiq_topics::{TenantId, TenantLabels};
use prometheus::{
    CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
};

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
        let m = Self {
            tenants: TenantLabels::new(MAX_NAMED_TENANTS),
            tasks: must(IntCounterVec::new(
                Opts::new(
                    "aiq_worker_tasks_total",
                    "Tasks run, by connector and outcome class",
                ),
                &["connector", "outcome"],
            )),
            seconds: must(HistogramVec::new(
                HistogramOpts::new(
                    "aiq_worker_task_seconds",
                    "Time one task attempt took, by connector",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ]),
                &["connector"],
            )),
            step_seconds: must(CounterVec::new(
                Opts::new(
                    "aiq_worker_step_seconds_total",
                    "Seconds tasks spent in connectors, by tenant",
                ),
                &["tenant"],
            )),
            output_bytes: must(IntCounterVec::new(
                Opts::new(
                    "aiq_worker_output_bytes_total",
                    "Bytes of task results written, by tenant",
                ),
                &["tenant"],
            )),
            in_flight: must(IntGauge::new(
                "aiq_worker_in_flight_tasks",
                "Tasks running now (consumption pauses at max_in_flight)",
            )),
            dead_letters: must(IntCounterVec::new(
                Opts::new(
                    "aiq_worker_dead_letters_total",
                    "Task records set aside on the dead-letter topic, by reason",
                ),
                &["kind"],
            )),
            lag: ConsumerLag::new(STAGE, true, registry),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 6] = [
            Box::new(m.tasks.clone()),
            Box::new(m.seconds.clone()),
            Box::new(m.step_seconds.clone()),
            Box::new(m.output_bytes.clone()),
            Box::new(m.in_flight.clone()),
            Box::new(m.dead_letters.clone()),
        ];
        for c in collectors {
            let _ = registry.register(c);
        }
        m
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
