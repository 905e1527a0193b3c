//! What the orchestrator reports on `/metrics`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use aiq_topics::labels::OTHER_TENANTS;
use aiq_topics::{Event, RunStatus, TenantId, TenantLabels, TriggerSource};
use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};

use crate::lag::ConsumerLag;

pub const STAGE: &str = "orchestrator";

pub struct OrchestratorMetrics {
    /// The first `aiq_metrics::MAX_NAMED_TENANTS` tenants are named in labels, later ones counted as
    /// `other`, so the series count cannot grow with the number of tenants.
    tenants: TenantLabels,
    pub commit_seconds: Histogram,
    /// By phase: `acks`, `offsets`, `end`.
    pub commit_phase_seconds: HistogramVec,
    pub transaction_seconds: Histogram,
    pub batch_records: Histogram,
    pub restore_seconds: Histogram,
    pub cron_lag_seconds: Histogram,
    pub run_seconds: HistogramVec,
    pub aborts: IntCounter,
    pub changelog_writes: IntCounter,
    pub owned_partitions: IntGauge,
    pub rebalance_kept: IntCounter,
    pub rebalance_restored: IntCounter,
    pub finished_markers: IntGauge,
    pub dead_letters: IntCounterVec,
    pub runs: IntCounterVec,
    pub steps: IntCounterVec,
    pub running_runs: IntGaugeVec,
    pub queued_runs: IntGaugeVec,
    pub inflight_tasks: IntGauge,
    pub held_tasks: IntGauge,
    pub lag: ConsumerLag,
    /// Tenant labels given a load gauge so far: they stay, at 0, once the tenant has
    /// nothing running, so that a dashboard shows an idle tenant as 0 rather than gone.
    load_labels: Mutex<HashSet<String>>,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    r.unwrap_or_else(|e| unreachable!("metric definitions are constant and valid: {e}"))
}

impl OrchestratorMetrics {
    /// Creates the metrics and registers them in `registry` (an already registered
    /// name, from a second instance in one process, is shared silently).
    pub fn new(registry: &Registry) -> Self {
        use aiq_metrics::orchestrator as m;
        use aiq_metrics::{counter, counter_vec, gauge, gauge_vec, histogram, histogram_vec};
        Self {
            tenants: aiq_metrics::tenant_labels(),
            commit_seconds: must(histogram(
                registry,
                &m::COMMIT_SECONDS,
                &[
                    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ],
            )),
            commit_phase_seconds: must(histogram_vec(
                registry,
                &m::COMMIT_PHASE_SECONDS,
                &["phase"],
                &[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
                ],
            )),
            transaction_seconds: must(histogram(
                registry,
                &m::TRANSACTION_SECONDS,
                &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0],
            )),
            batch_records: must(histogram(
                registry,
                &m::BATCH_RECORDS,
                &[1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0],
            )),
            restore_seconds: must(histogram(
                registry,
                &m::RESTORE_SECONDS,
                &[0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0],
            )),
            cron_lag_seconds: must(histogram(
                registry,
                &m::CRON_LAG_SECONDS,
                &[0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0],
            )),
            run_seconds: must(histogram_vec(
                registry,
                &m::RUN_SECONDS,
                &["tenant"],
                &[
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
                ],
            )),
            aborts: must(counter(registry, &m::ABORTED_BATCHES)),
            changelog_writes: must(counter(registry, &m::CHANGELOG_WRITES)),
            owned_partitions: must(gauge(registry, &m::OWNED_PARTITIONS)),
            rebalance_kept: must(counter(registry, &m::REBALANCE_KEPT)),
            rebalance_restored: must(counter(registry, &m::REBALANCE_RESTORED)),
            finished_markers: must(gauge(registry, &m::FINISHED_MARKERS)),
            dead_letters: must(aiq_metrics::counter_vec_of(
                registry,
                &m::DEAD_LETTERS,
                "kind",
                &aiq_topics::DeadLetterKind::ALL.map(aiq_topics::DeadLetterKind::as_str),
            )),
            runs: must(counter_vec(
                registry,
                &m::RUNS,
                &["tenant", "workflow", "status"],
            )),
            steps: must(counter_vec(
                registry,
                &m::STEPS,
                &["tenant", "kind", "status"],
            )),
            running_runs: must(gauge_vec(registry, &m::RUNNING_RUNS, &["tenant"])),
            queued_runs: must(gauge_vec(registry, &m::QUEUED_RUNS, &["tenant"])),
            inflight_tasks: must(gauge(registry, &m::INFLIGHT_TASKS)),
            held_tasks: must(gauge(registry, &m::HELD_TASKS)),
            lag: ConsumerLag::new(STAGE, true, registry),
            load_labels: Mutex::new(HashSet::new()),
        }
    }

    pub fn observe_event(&self, e: &Event) {
        let tenant = self.tenants.label(e.tenant());
        match e {
            Event::Run(r) => {
                // The workflows of folded tenants are folded too: otherwise `other`
                // would carry every workflow of every unnamed tenant.
                let workflow = if tenant == OTHER_TENANTS {
                    OTHER_TENANTS
                } else {
                    r.workflow.as_str()
                };
                self.runs
                    .with_label_values(&[tenant.as_str(), workflow, r.status.as_str()])
                    .inc();
                if r.status == RunStatus::Running
                    && r.source == Some(TriggerSource::Cron)
                    && let Some(scheduled) = r.scheduled_at
                {
                    let lag = (r.at - scheduled).num_milliseconds().max(0) as f64 / 1000.0;
                    self.cron_lag_seconds.observe(lag);
                }
                if r.status.is_terminal()
                    && let Some(started) = r.started_at
                {
                    let secs = (r.at - started).num_milliseconds().max(0) as f64 / 1000.0;
                    self.run_seconds
                        .with_label_values(&[tenant.as_str()])
                        .observe(secs);
                }
            }
            Event::Step(s) => self
                .steps
                .with_label_values(&[tenant.as_str(), s.kind.as_str(), s.status.as_str()])
                .inc(),
            // Written by ingest, never by the orchestrator.
            Event::RunErased(_) => {}
        }
    }

    /// Sets the quota gauges from the runs (running, queued) per tenant and the tasks
    /// (dispatched, held) of the partitions this instance owns.
    pub fn observe_load(&self, runs: &HashMap<TenantId, (u32, usize)>, tasks: (u64, u64)) {
        let mut by_label: HashMap<String, (i64, i64)> = HashMap::new();
        for (tenant, (running, queued)) in runs {
            let e = by_label.entry(self.tenants.label(tenant)).or_default();
            e.0 += i64::from(*running);
            e.1 += *queued as i64;
        }
        let mut labels = self.load_labels.lock().unwrap_or_else(|p| p.into_inner());
        labels.extend(by_label.keys().cloned());
        for label in labels.iter() {
            let (running, queued) = by_label.get(label).copied().unwrap_or_default();
            self.running_runs.with_label_values(&[label]).set(running);
            self.queued_runs.with_label_values(&[label]).set(queued);
        }
        self.inflight_tasks.set(tasks.0 as i64);
        self.held_tasks.set(tasks.1 as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_gauges_fold_tenants_and_keep_idle_ones_at_zero() {
        let registry = Registry::new();
        let m = OrchestratorMetrics::new(&registry);
        let acme = TenantId::new("acme").unwrap();
        m.observe_load(&HashMap::from([(acme.clone(), (3, 2))]), (7, 1));
        assert_eq!(m.queued_runs.with_label_values(&["acme"]).get(), 2);
        assert_eq!(m.running_runs.with_label_values(&["acme"]).get(), 3);
        assert_eq!(m.inflight_tasks.get(), 7);
        m.observe_load(&HashMap::new(), (0, 0));
        assert_eq!(m.queued_runs.with_label_values(&["acme"]).get(), 0);
        let text = {
            let mut out = Vec::new();
            prometheus::Encoder::encode(
                &prometheus::TextEncoder::new(),
                &registry.gather(),
                &mut out,
            )
            .unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(
            text.contains("aiq_orchestrator_queued_runs{tenant=\"acme\"} 0"),
            "{text}"
        );
    }
}
