//! What the sender and the events watcher record, shared between them. A run's terminal
//! event may be read before its 202 has been handled, so an unmatched event of one of
//! our tenants is kept until its acceptance arrives.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aiq_topics::{RunId, RunStatus};
use hdrhistogram::Histogram;

use aiq_loadtests::open_loop::{histogram, latency_us};

/// Per-tenant latency is kept at two significant digits: one histogram per tenant.
fn small_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 2)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

#[derive(Clone)]
pub struct TenantTally {
    pub sent: u64,
    pub accepted: u64,
    pub completed: u64,
    pub e2e: Histogram<u64>,
}

/// A run that ended: when it was due and when its terminal event was read, after the start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Completion {
    pub due: Duration,
    pub done: Duration,
}

struct Pending {
    tenant: usize,
    intended: Instant,
}

pub struct Tally {
    start: Instant,
    tenant_index: HashMap<String, usize>,
    pending: HashMap<RunId, Pending>,
    early: HashMap<RunId, (Instant, RunStatus)>,
    pub tenants: Vec<TenantTally>,
    pub accept: Histogram<u64>,
    pub e2e: Histogram<u64>,
    /// HTTP status of every answered trigger; 0 for no answer (connection error, timeout).
    pub statuses: BTreeMap<u16, u64>,
    /// Terminal run statuses: succeeded, failed, ...
    pub terminal: BTreeMap<&'static str, u64>,
    pub completions: Vec<Completion>,
}

impl Tally {
    pub fn new(start: Instant, tenant_names: &[String]) -> Self {
        Self {
            start,
            tenant_index: tenant_names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i))
                .collect(),
            pending: HashMap::new(),
            early: HashMap::new(),
            tenants: vec![
                TenantTally {
                    sent: 0,
                    accepted: 0,
                    completed: 0,
                    e2e: small_histogram(),
                };
                tenant_names.len()
            ],
            accept: histogram(),
            e2e: histogram(),
            statuses: BTreeMap::new(),
            terminal: BTreeMap::new(),
            completions: Vec::new(),
        }
    }

    /// Forgets everything recorded so far, and counts times from `start`.
    pub fn reset(&mut self, start: Instant) {
        let names: Vec<String> = {
            let mut by_index: Vec<(&String, &usize)> = self.tenant_index.iter().collect();
            by_index.sort_by_key(|(_, i)| **i);
            by_index.into_iter().map(|(n, _)| n.clone()).collect()
        };
        *self = Tally::new(start, &names);
    }

    /// A trigger was answered (`status` 0: not answered at all).
    pub fn answered(&mut self, tenant: usize, intended: Instant, answered: Instant, status: u16) {
        let _ = self.accept.record(latency_us(intended, answered).max(1));
        *self.statuses.entry(status).or_default() += 1;
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.sent += 1;
        }
    }

    /// A trigger was accepted as `run`: from now on its terminal event completes it.
    pub fn accepted(&mut self, run: RunId, tenant: usize, intended: Instant) {
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.accepted += 1;
        }
        match self.early.remove(&run) {
            Some((at, status)) => self.complete(tenant, intended, at, status),
            None => {
                self.pending.insert(run, Pending { tenant, intended });
            }
        }
    }

    /// A terminal run event was read at `at`.
    pub fn ended(&mut self, run: RunId, tenant: &str, status: RunStatus, at: Instant) {
        match self.pending.remove(&run) {
            Some(p) => self.complete(p.tenant, p.intended, at, status),
            None if self.tenant_index.contains_key(tenant) => {
                self.early.insert(run, (at, status));
            }
            // Someone else's run on a shared deployment.
            None => {}
        }
    }

    fn complete(&mut self, tenant: usize, intended: Instant, at: Instant, status: RunStatus) {
        let us = latency_us(intended, at).max(1);
        let _ = self.e2e.record(us);
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.completed += 1;
            let _ = t.e2e.record(us);
        }
        *self.terminal.entry(status.as_str()).or_default() += 1;
        self.completions.push(Completion {
            due: intended.saturating_duration_since(self.start),
            done: at.saturating_duration_since(self.start),
        });
    }

    /// Accepted runs whose terminal event has not been read.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    pub fn completed(&self) -> u64 {
        self.completions.len() as u64
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_event_read_before_its_acceptance_still_completes_the_run() {
        let start = Instant::now();
        let mut t = Tally::new(start, &["a".into(), "b".into()]);
        let (r1, r2, other) = (RunId::random(), RunId::random(), RunId::random());
        let due = start + Duration::from_millis(10);
        t.answered(0, due, due + Duration::from_millis(5), 202);
        t.accepted(r1, 0, due);
        assert_eq!(t.in_flight(), 1);
        t.ended(
            r1,
            "a",
            RunStatus::Succeeded,
            due + Duration::from_millis(50),
        );
        // The event of r2 comes first.
        t.ended(r2, "b", RunStatus::Failed, due + Duration::from_millis(30));
        t.ended(other, "stranger", RunStatus::Succeeded, due);
        t.answered(1, due, due + Duration::from_millis(40), 202);
        t.accepted(r2, 1, due);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.completed(), 2);
        assert_eq!(t.terminal.get("succeeded"), Some(&1));
        assert_eq!(t.terminal.get("failed"), Some(&1));
        assert_eq!(t.tenants[1].completed, 1);
        assert!((49_900..50_200).contains(&t.e2e.max()), "{}", t.e2e.max());
        assert_eq!(t.statuses.get(&202), Some(&2));
        assert_eq!(t.completions[0].done, Duration::from_millis(60));
        t.reset(due);
        assert_eq!((t.completed(), t.in_flight(), t.tenants.len()), (0, 0, 2));
        assert!(t.statuses.is_empty() && t.e2e.is_empty());
        t.ended(r1, "b", RunStatus::Succeeded, due);
        t.accepted(r1, 1, due);
        assert_eq!(t.tenants[1].completed, 1);
    }
}
