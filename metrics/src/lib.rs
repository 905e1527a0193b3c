//! Every Prometheus metric AutomateIQ exports, in one place: name, kind, labels and help
//! text as constants grouped by stage ([`ingest`], [`orchestrator`], [`worker`],
//! [`connectors`], [`kafka`], [`sink`], [`analytics`]), and the helpers that create and
//! register them ([`counter_vec`], [`histogram`], ...). Stages never spell a metric name
//! themselves, so a name cannot drift from the dashboards, the rules and `ops/README.md`,
//! whose metric reference `tests/reference.rs` holds equal to [`all`].
//!
//! Tenant labels stay bounded the same way everywhere: [`tenant_labels`] names the first
//! [`MAX_NAMED_TENANTS`] tenants a process sees and folds later ones into
//! [`OTHER_TENANTS`].

mod catalog;
mod register;

pub use aiq_topics::labels::{MAX_NAMED_TENANTS, OTHER_TENANTS, TenantLabels};
pub use catalog::{analytics, connectors, ingest, kafka, orchestrator, sink, worker};
pub use register::{
    counter, counter_vec, counter_vec_of, float_counter_vec, gauge, gauge_vec, histogram,
    histogram_vec, new_gauge_vec, register,
};

use std::fmt;

/// One metric family: what a stage registers and what dashboards, rules and the ops
/// reference refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// In the order call sites pass label values.
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        })
    }
}

/// Each stage's metrics, by stage.
pub const STAGES: &[(&str, &[&Metric])] = &[
    ("ingest", ingest::ALL),
    ("orchestrator", orchestrator::ALL),
    ("worker", worker::ALL),
    ("connectors", connectors::ALL),
    ("kafka", kafka::ALL),
    ("sink", sink::ALL),
    ("analytics", analytics::ALL),
];

/// Every metric of the platform.
pub fn all() -> impl Iterator<Item = &'static Metric> {
    STAGES.iter().flat_map(|(_, ms)| ms.iter().copied())
}

/// The bounded tenant labels of one stage.
pub fn tenant_labels() -> TenantLabels {
    TenantLabels::new(MAX_NAMED_TENANTS)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    #[test]
    fn names_are_unique() {
        let mut seen = HashSet::new();
        for m in all() {
            assert!(seen.insert(m.name), "{} defined twice", m.name);
        }
        assert_eq!(
            seen.len(),
            STAGES.iter().map(|(_, ms)| ms.len()).sum::<usize>()
        );
    }

    #[test]
    fn names_are_valid_and_say_what_they_are() {
        for m in all() {
            // `:` is for recording rules (ops/prometheus/rules.yml), never an exporter.
            assert!(is_name(m.name), "{}: not a metric name", m.name);
            assert!(m.name.starts_with("aiq_"), "{}: no aiq_ prefix", m.name);
            match m.kind {
                Kind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                Kind::Gauge | Kind::Histogram => {
                    assert!(!m.name.ends_with("_total"), "{}", m.name)
                }
            }
            if m.kind == Kind::Histogram {
                for suffix in ["_bucket", "_sum", "_count"] {
                    assert!(
                        !m.name.ends_with(suffix),
                        "{}: clashes with a series",
                        m.name
                    );
                }
            }
        }
    }

    #[test]
    fn help_texts_are_present() {
        for m in all() {
            assert!(!m.help.trim().is_empty(), "{}: no help text", m.name);
            assert_eq!(m.help.trim(), m.help, "{}: padded help text", m.name);
            assert!(!m.help.contains('\n'), "{}: multi-line help text", m.name);
        }
    }

    #[test]
    fn label_lists_are_valid() {
        for m in all() {
            let mut seen = HashSet::new();
            for l in m.labels {
                assert!(is_name(l), "{}: label {l:?} is not a label name", m.name);
                assert!(!l.starts_with("__"), "{}: label {l} is reserved", m.name);
                assert!(*l != "le" && *l != "quantile", "{}: label {l}", m.name);
                assert!(seen.insert(l), "{}: label {l} twice", m.name);
            }
        }
    }

    #[test]
    fn every_metric_registers_in_one_registry() {
        let r = prometheus::Registry::new();
        for m in all() {
            match (m.kind, m.labels.is_empty()) {
                (Kind::Counter, true) => counter(&r, m).map(|c| c.inc()),
                (Kind::Counter, false) => counter_vec(&r, m, m.labels)
                    .map(|c| c.with_label_values(&vec!["x"; m.labels.len()]).inc()),
                (Kind::Gauge, true) => gauge(&r, m).map(|g| g.set(1)),
                (Kind::Gauge, false) => gauge_vec(&r, m, m.labels)
                    .map(|g| g.with_label_values(&vec!["x"; m.labels.len()]).set(1)),
                (Kind::Histogram, true) => histogram(&r, m, &[1.0]).map(|h| h.observe(1.0)),
                (Kind::Histogram, false) => histogram_vec(&r, m, m.labels, &[1.0])
                    .map(|h| h.with_label_values(&vec!["x"; m.labels.len()]).observe(1.0)),
            }
            .unwrap_or_else(|e| panic!("{}: {e}", m.name));
        }
        let families = r.gather();
        let gathered: HashSet<_> = families.iter().map(|f| f.name()).collect();
        let defined: HashSet<_> = all().map(|m| m.name).collect();
        assert_eq!(gathered, defined);
        for f in &families {
            let m = all().find(|m| m.name == f.name()).unwrap();
            assert_eq!(f.help(), m.help);
        }
    }

    #[test]
    fn tenant_labels_name_the_first_tenants_and_fold_the_rest() {
        let labels = tenant_labels();
        let t = |s: &str| aiq_topics::TenantId::new(s).unwrap();
        for i in 0..MAX_NAMED_TENANTS {
            assert_eq!(labels.label(&t(&format!("t{i}"))), format!("t{i}"));
        }
        assert_eq!(labels.label(&t("late")), OTHER_TENANTS);
        assert_eq!(labels.label(&t("t0")), "t0");
    }
}
