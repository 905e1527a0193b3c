//! Creating and registering a [`Metric`]: the only place a Prometheus `Opts` is built.
//!
//! Each helper checks that the metric is of the kind asked for and that the call site
//! names exactly its declared labels, in order: label values are passed by position, so
//! a reordered declaration would otherwise silently swap them.
//!
//! A name already registered in the registry (a second instance of a stage in one
//! process, as tests start) is not an error: the returned metric works but stays
//! unregistered, and the first instance's family is the one exported.

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Error, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::{Kind, Metric};

fn check(m: &Metric, kind: Kind, labels: &[&str]) -> Result<(), Error> {
    if m.kind != kind {
        return Err(Error::Msg(format!(
            "metric {} is declared a {}, not a {kind}",
            m.name, m.kind
        )));
    }
    if m.labels != labels {
        return Err(Error::Msg(format!(
            "metric {} has labels {:?}, not {labels:?}",
            m.name, m.labels
        )));
    }
    Ok(())
}

fn opts(m: &Metric) -> Opts {
    Opts::new(m.name, m.help)
}

fn histogram_opts(m: &Metric, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(m.name, m.help).buckets(buckets.to_vec())
}

/// Registers `c` in `registry`; a family of the same name registered before is kept.
pub fn register<C: Collector + Clone + 'static>(registry: &Registry, c: &C) -> Result<(), Error> {
    match registry.register(Box::new(c.clone())) {
        Ok(()) | Err(Error::AlreadyReg) => Ok(()),
        Err(e) => Err(e),
    }
}

fn registered<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> Result<C, Error> {
    register(registry, &c)?;
    Ok(c)
}

/// A counter without labels.
pub fn counter(registry: &Registry, m: &Metric) -> Result<IntCounter, Error> {
    check(m, Kind::Counter, &[])?;
    registered(registry, IntCounter::with_opts(opts(m))?)
}

/// A counter with `labels` (the declared ones, in order).
pub fn counter_vec(
    registry: &Registry,
    m: &Metric,
    labels: &[&str],
) -> Result<IntCounterVec, Error> {
    check(m, Kind::Counter, labels)?;
    registered(registry, IntCounterVec::new(opts(m), labels)?)
}

/// A counter with one label whose every value is known up front (an enum's), each
/// series created at 0: `increase()` and `rate()` see a first event only against an
/// earlier sample, so a series born at 1 would hide it from alerts.
pub fn counter_vec_of(
    registry: &Registry,
    m: &Metric,
    label: &str,
    values: &[&str],
) -> Result<IntCounterVec, Error> {
    let c = counter_vec(registry, m, &[label])?;
    for v in values {
        c.with_label_values(&[v]);
    }
    Ok(c)
}

/// A counter of fractional amounts (seconds) with `labels`.
pub fn float_counter_vec(
    registry: &Registry,
    m: &Metric,
    labels: &[&str],
) -> Result<CounterVec, Error> {
    check(m, Kind::Counter, labels)?;
    registered(registry, CounterVec::new(opts(m), labels)?)
}

/// A gauge without labels.
pub fn gauge(registry: &Registry, m: &Metric) -> Result<IntGauge, Error> {
    check(m, Kind::Gauge, &[])?;
    registered(registry, IntGauge::with_opts(opts(m))?)
}

/// A gauge with `labels`.
pub fn gauge_vec(registry: &Registry, m: &Metric, labels: &[&str]) -> Result<IntGaugeVec, Error> {
    registered(registry, new_gauge_vec(m, labels)?)
}

/// A gauge with `labels`, not registered yet: for a family that several stages of one
/// process share and each [`register`]s (`kafka::CONSUMER_LAG`).
pub fn new_gauge_vec(m: &Metric, labels: &[&str]) -> Result<IntGaugeVec, Error> {
    check(m, Kind::Gauge, labels)?;
    IntGaugeVec::new(opts(m), labels)
}

/// A histogram without labels.
pub fn histogram(registry: &Registry, m: &Metric, buckets: &[f64]) -> Result<Histogram, Error> {
    check(m, Kind::Histogram, &[])?;
    registered(registry, Histogram::with_opts(histogram_opts(m, buckets))?)
}

/// A histogram with `labels`.
pub fn histogram_vec(
    registry: &Registry,
    m: &Metric,
    labels: &[&str],
    buckets: &[f64],
) -> Result<HistogramVec, Error> {
    check(m, Kind::Histogram, labels)?;
    registered(
        registry,
        HistogramVec::new(histogram_opts(m, buckets), labels)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{orchestrator, sink};

    #[test]
    fn labels_other_than_the_declared_ones_are_refused() {
        let r = Registry::new();
        let err = counter_vec(&r, &sink::WRITES, &["outcome", "table"]).unwrap_err();
        assert!(err.to_string().contains("aiq_sink_writes_total"), "{err}");
        assert!(counter_vec(&r, &sink::WRITES, &["table"]).is_err());
        assert!(counter(&r, &sink::WRITES).is_err());
        assert!(r.gather().is_empty());
    }

    #[test]
    fn a_kind_other_than_the_declared_one_is_refused() {
        let r = Registry::new();
        let err = gauge(&r, &orchestrator::ABORTED_BATCHES).unwrap_err();
        assert!(err.to_string().contains("counter"), "{err}");
        assert!(histogram(&r, &sink::RETRIES, &[1.0]).is_err());
        assert!(counter(&r, &sink::BATCH_RECORDS).is_err());
    }

    #[test]
    fn a_second_registration_keeps_the_first_family() {
        let r = Registry::new();
        let first = counter(&r, &sink::RETRIES).unwrap();
        let second = counter(&r, &sink::RETRIES).unwrap();
        first.inc();
        second.inc_by(5);
        let families = r.gather();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].get_metric()[0].get_counter().get_value(), 1.0);
    }

    #[test]
    fn a_shared_family_is_registered_in_each_registry() {
        let lag = new_gauge_vec(
            &crate::kafka::CONSUMER_LAG,
            &["stage", "topic", "partition"],
        )
        .unwrap();
        let (a, b) = (Registry::new(), Registry::new());
        register(&a, &lag).unwrap();
        register(&a, &lag).unwrap();
        register(&b, &lag).unwrap();
        lag.with_label_values(&["worker", "t", "0"]).set(3);
        assert_eq!(a.gather().len(), 1);
        assert_eq!(b.gather().len(), 1);
    }
}
