//! What the orchestrator reports on `/metrics`.

use aiq_topics::labels::MAX_NAMED_TENANTS;
use aiq_topics::{Event, TenantLabels};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub struct OrchestratorMetrics {
    /// The first `MAX_NAMED_TENANTS` tenants are named in labels, later ones counted as
    /// `other`, so the series count cannot grow with the number of tenants.
    tenants: TenantLabels,
    pub commit_seconds: Histogram,
    pub batch_records: Histogram,
    pub restore_seconds: Histogram,
    pub aborts: IntCounter,
    pub changelog_writes: IntCounter,
    pub owned_partitions: IntGauge,
    pub dead_letters: IntCounterVec,
    pub runs: IntCounterVec,
    pub steps: IntCounterVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    r.unwrap_or_else(|e| unreachable!("metric definitions are constant and valid: {e}"))
}

impl OrchestratorMetrics {
    /// Creates the metrics and registers them in `registry` (an already registered
    /// name, from a second instance in one process, is shared silently).
    pub fn new(registry: &Registry) -> Self {
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = must(Histogram::with_opts(
                HistogramOpts::new(name, help).buckets(buckets),
            ));
            let _ = registry.register(Box::new(h.clone()));
            h
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let aborts = must(IntCounter::new(
            "aiq_orchestrator_aborted_batches_total",
            "Batches whose transaction was aborted and redone",
        ));
        let _ = registry.register(Box::new(aborts.clone()));
        let changelog_writes = must(IntCounter::new(
            "aiq_orchestrator_changelog_writes_total",
            "State entries written to the changelog",
        ));
        let _ = registry.register(Box::new(changelog_writes.clone()));
        let owned_partitions = must(IntGauge::new(
            "aiq_orchestrator_owned_partitions",
            "Tenant partitions this instance owns",
        ));
        let _ = registry.register(Box::new(owned_partitions.clone()));
        Self {
            tenants: TenantLabels::new(MAX_NAMED_TENANTS),
            commit_seconds: hist(
                "aiq_orchestrator_commit_seconds",
                "Time to write a batch's changelog and offsets and commit its transaction",
                vec![
                    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ],
            ),
            batch_records: hist(
                "aiq_orchestrator_batch_records",
                "Input records per committed transaction",
                vec![1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0],
            ),
            restore_seconds: hist(
                "aiq_orchestrator_restore_seconds",
                "Time to restore assigned partitions from the changelog",
                vec![0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0],
            ),
            aborts,
            changelog_writes,
            owned_partitions,
            dead_letters: counter_vec(
                "aiq_orchestrator_dead_letters_total",
                "Inputs set aside on the dead-letter topic, by reason",
                &["kind"],
            ),
            runs: counter_vec(
                "aiq_orchestrator_runs_total",
                "Run events by tenant and status (running = started)",
                &["tenant", "status"],
            ),
            steps: counter_vec(
                "aiq_orchestrator_steps_total",
                "Step events by tenant, kind and status",
                &["tenant", "kind", "status"],
            ),
        }
    }

    pub fn observe_event(&self, e: &Event) {
        let tenant = self.tenants.label(e.tenant());
        match e {
            Event::Run(r) => self
                .runs
                .with_label_values(&[tenant.as_str(), r.status.as_str()])
                .inc(),
            Event::Step(s) => self
                .steps
                .with_label_values(&[tenant.as_str(), s.kind.as_str(), s.status.as_str()])
                .inc(),
        }
    }
}
