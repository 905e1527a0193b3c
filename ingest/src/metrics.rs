//! What ingest reports on `/metrics` of the operations listener (Prometheus text format).
//!
//! Tenant labels are bounded: the first `MAX_NAMED_TENANTS` tenants seen by this process
//! are named, every later one is counted as `other`, so a platform with thousands of
//! tenants cannot blow up the series count. The first tenants, not the busiest: a label
//! once exported cannot be renamed without breaking its series' history (ops/README.md).

use aiq_metrics::ingest;
use aiq_topics::{TenantId, TenantLabels};
use prometheus::{Encoder, HistogramVec, IntCounterVec, Registry, TextEncoder};

pub const OTHER: &str = aiq_metrics::OTHER_TENANTS;

const ACCEPT_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub struct Metrics {
    registry: Registry,
    tenants: TenantLabels,
    pub triggers: IntCounterVec,
    pub registrations: IntCounterVec,
    pub webhooks: IntCounterVec,
    pub accept_seconds: HistogramVec,
}

/// The metrics are constants checked by aiq-metrics' tests, so creating them cannot fail.
fn constant<T>(r: Result<T, prometheus::Error>) -> T {
    r.unwrap_or_else(|e| unreachable!("constant metric: {e}"))
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let by_outcome = |m| {
            constant(aiq_metrics::counter_vec(
                &registry,
                m,
                &["tenant", "outcome"],
            ))
        };
        let triggers = by_outcome(&ingest::TRIGGERS);
        let registrations = by_outcome(&ingest::REGISTRATIONS);
        let webhooks = by_outcome(&ingest::WEBHOOKS);
        let accept_seconds = constant(aiq_metrics::histogram_vec(
            &registry,
            &ingest::TRIGGER_ACCEPT_SECONDS,
            &["tenant"],
            ACCEPT_BUCKETS,
        ));
        Self {
            registry,
            tenants: aiq_metrics::tenant_labels(),
            triggers,
            registrations,
            webhooks,
            accept_seconds,
        }
    }

    /// The label for a tenant: its id while few are named, else `other`.
    pub fn tenant(&self, tenant: &TenantId) -> String {
        self.tenants.label(tenant)
    }

    pub fn render(&self) -> String {
        // Other stages of the same process (the orchestrator) use the default registry.
        let mut families = self.registry.gather();
        families.extend(prometheus::gather());
        encode(&families)
    }
}

/// The default registry's metrics: those of a process without the ingest role.
pub fn render_default() -> String {
    encode(&prometheus::gather())
}

fn encode(families: &[prometheus::proto::MetricFamily]) -> String {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(families, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use aiq_metrics::MAX_NAMED_TENANTS;

    use super::*;

    #[test]
    fn tenant_labels_are_bounded() {
        let m = Metrics::new();
        for i in 0..MAX_NAMED_TENANTS {
            let t = TenantId::new(format!("t{i}")).unwrap();
            assert_eq!(m.tenant(&t), t.as_str());
        }
        let late = TenantId::new("late").unwrap();
        assert_eq!(m.tenant(&late), OTHER);
        assert_eq!(m.tenant(&TenantId::new("t0").unwrap()), "t0");
        m.triggers.with_label_values(&["t0", "accepted"]).inc();
        let text = m.render();
        assert!(
            text.contains("aiq_ingest_triggers_total{outcome=\"accepted\",tenant=\"t0\"} 1"),
            "{text}"
        );
    }
}
