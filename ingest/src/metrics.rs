//! What ingest reports on `/metrics` (Prometheus text format).
//!
//! Tenant labels are bounded: the first `MAX_NAMED_TENANTS` tenants seen by this process
//! are named, every later one is counted as `other`, so a platform with thousands of
//! tenants cannot blow up the series count. The first tenants, not the busiest: a label
//! once exported cannot be renamed without breaking its series' history (ops/README.md).

use aiq_topics::labels::MAX_NAMED_TENANTS;
use aiq_topics::{TenantId, TenantLabels};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

pub const OTHER: &str = aiq_topics::labels::OTHER_TENANTS;

pub struct Metrics {
    registry: Registry,
    tenants: TenantLabels,
    pub triggers: IntCounterVec,
    pub registrations: IntCounterVec,
    pub webhooks: IntCounterVec,
    pub accept_seconds: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["tenant", "outcome"])
                .unwrap_or_else(|e| unreachable!("metric {name} is well-formed: {e}"));
            // Names are unique constants, so registration cannot collide.
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let triggers = counter(
            "aiq_ingest_triggers_total",
            "Run starts by API or by hand, by tenant and outcome (webhook starts: aiq_ingest_webhooks_total)",
        );
        let registrations = counter(
            "aiq_ingest_registrations_total",
            "Workflow registrations by tenant and outcome",
        );
        let webhooks = counter(
            "aiq_ingest_webhooks_total",
            "Webhook deliveries by tenant and outcome",
        );
        let accept_seconds = HistogramVec::new(
            HistogramOpts::new(
                "aiq_ingest_trigger_accept_seconds",
                "Time from a run-start request to Kafka's acknowledgement",
            )
            .buckets(vec![
                0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["tenant"],
        )
        .unwrap_or_else(|e| unreachable!("histogram is well-formed: {e}"));
        let _ = registry.register(Box::new(accept_seconds.clone()));
        Self {
            registry,
            tenants: TenantLabels::new(MAX_NAMED_TENANTS),
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
        let mut out = Vec::new();
        // Other stages of the same process (the orchestrator) use the default registry.
        let mut families = self.registry.gather();
        families.extend(prometheus::gather());
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
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
