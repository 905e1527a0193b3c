//! Admission: at most `max_queries` queries at once in the process and
//! `max_queries_per_tenant` for one tenant. A query beyond either is refused at once
//! (the caller retries later), never queued, so a burst of heavy queries holds no memory
//! and no thread while it waits.
//!
//! The counts and the metrics live here too: a [`Permit`] is the query's slot, given back
//! when it is dropped, whether the query ended, failed, timed out or was abandoned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use aiq_metrics::analytics as m;
use aiq_topics::{TenantId, TenantLabels};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use crate::error::QueryLimit;
use crate::{AnalyticsError, Scope};

/// The metric label of the platform scope (every tenant at once).
pub const PLATFORM_LABEL: &str = "*";

/// Whose slot a query takes: a tenant's, or the platform scope's (one key of its own).
type Key = Option<TenantId>;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_key: HashMap<Key, usize>,
}

pub(crate) struct Gate {
    max_total: usize,
    max_per_tenant: usize,
    counts: Mutex<Counts>,
    running: IntGauge,
    ended: IntCounterVec,
    refused: IntCounterVec,
    /// Attempts run again because the history changed under them (see `engine`).
    pub(crate) reruns: IntCounter,
    tenants: TenantLabels,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("max_total", &self.max_total)
            .field("max_per_tenant", &self.max_per_tenant)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

fn metric<T>(r: Result<T, prometheus::Error>) -> Result<T, AnalyticsError> {
    r.map_err(|e| AnalyticsError::Internal(format!("registering the SQL metrics: {e}")))
}

impl Gate {
    pub fn new(
        max_total: usize,
        max_per_tenant: usize,
        registry: &Registry,
    ) -> Result<Gate, AnalyticsError> {
        Ok(Gate {
            max_total,
            max_per_tenant,
            counts: Mutex::new(Counts::default()),
            running: metric(aiq_metrics::gauge(registry, &m::QUERIES_RUNNING))?,
            ended: metric(aiq_metrics::counter_vec(
                registry,
                &m::QUERIES,
                &["tenant", "outcome"],
            ))?,
            refused: metric(aiq_metrics::counter_vec(
                registry,
                &m::QUERIES_REFUSED,
                &["tenant", "limit"],
            ))?,
            reruns: metric(aiq_metrics::counter(registry, &m::QUERY_RERUNS))?,
            tenants: aiq_metrics::tenant_labels(),
        })
    }

    fn label(&self, key: &Key) -> String {
        key.as_ref()
            .map_or_else(|| PLATFORM_LABEL.to_owned(), |t| self.tenants.label(t))
    }

    /// A slot for one query of `scope`, or [`AnalyticsError::Busy`] naming the limit.
    pub fn enter(self: &Arc<Self>, scope: &Scope) -> Result<Permit, AnalyticsError> {
        let key: Key = match scope {
            Scope::Tenant(t) => Some(t.clone()),
            Scope::Platform => None,
        };
        let refused = {
            let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
            let mine = counts.by_key.get(&key).copied().unwrap_or(0);
            if mine >= self.max_per_tenant {
                Some((QueryLimit::Tenant, self.max_per_tenant))
            } else if counts.total >= self.max_total {
                Some((QueryLimit::Process, self.max_total))
            } else {
                counts.total += 1;
                *counts.by_key.entry(key.clone()).or_default() += 1;
                None
            }
        };
        if let Some((limit, max)) = refused {
            self.refused
                .with_label_values(&[self.label(&key).as_str(), limit.as_str()])
                .inc();
            let who = match (limit, &key) {
                (QueryLimit::Process, _) => "this process".to_owned(),
                (QueryLimit::Tenant, Some(t)) => format!("tenant {t}"),
                (QueryLimit::Tenant, None) => "the platform scope".to_owned(),
            };
            return Err(AnalyticsError::Busy { limit, max, who });
        }
        self.running.inc();
        Ok(Permit {
            gate: Arc::clone(self),
            key,
            outcome: None,
        })
    }

    /// Queries running now.
    pub fn running(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// One query's slot; dropping it frees the slot and counts how the query ended.
#[derive(Debug)]
pub(crate) struct Permit {
    gate: Arc<Gate>,
    key: Key,
    /// `None` when the query was dropped before it ended: `cancelled`.
    outcome: Option<&'static str>,
}

impl Permit {
    /// How the query ended (`ok`, `timeout`, ...), counted when the permit is dropped.
    pub fn ended(&mut self, outcome: &'static str) {
        self.outcome = Some(outcome);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or("cancelled");
        self.gate
            .ended
            .with_label_values(&[self.gate.label(&self.key).as_str(), outcome])
            .inc();
        {
            let mut counts = self
                .gate
                .counts
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            counts.total = counts.total.saturating_sub(1);
            if let Some(n) = counts.by_key.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.by_key.remove(&self.key);
                }
            }
        }
        self.gate.running.dec();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tenant(s: &str) -> Scope {
        Scope::Tenant(TenantId::new(s).unwrap())
    }

    #[test]
    fn the_tenant_limit_then_the_process_limit_refuse_and_a_dropped_permit_frees_its_slot() {
        let registry = Registry::new();
        let gate = Arc::new(Gate::new(3, 2, &registry).unwrap());
        let a1 = gate.enter(&tenant("a")).unwrap();
        let _a2 = gate.enter(&tenant("a")).unwrap();
        match gate.enter(&tenant("a")) {
            Err(AnalyticsError::Busy { limit, max, who }) => {
                assert_eq!(
                    (limit, max, who.as_str()),
                    (QueryLimit::Tenant, 2, "tenant a")
                );
            }
            other => panic!("{other:?}"),
        }
        let _b = gate.enter(&tenant("b")).unwrap();
        let e = gate.enter(&Scope::Platform).unwrap_err();
        assert!(matches!(
            e,
            AnalyticsError::Busy {
                limit: QueryLimit::Process,
                max: 3,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "3 queries already run for this process, the most analytics.max_queries allows; \
             try again later"
        );
        assert_eq!(gate.running(), 3);
        drop(a1);
        assert_eq!(gate.running(), 2);
        assert_eq!(gate.ended.with_label_values(&["a", "cancelled"]).get(), 1);
        let _p = gate.enter(&Scope::Platform).unwrap();
        let refused = gate.refused.with_label_values(&["a", "tenant"]).get();
        assert_eq!(refused, 1);
        assert_eq!(gate.refused.with_label_values(&["*", "process"]).get(), 1);
        assert_eq!(gate.running.get(), 3);
    }
}
