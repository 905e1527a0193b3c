//! Circuit breakers, one per tenant and target host. A breaker opens when the share of
//! failed calls in its recent window reaches the threshold, refuses calls (class
//! `circuit_open`) for the cool-down, then lets one probe through: a success closes it,
//! a failure opens it again. Keyed by tenant too, so one tenant's broken integration
//! never blocks another tenant's calls to the same host.
//!
//! `Breaker` is the pure state machine (time comes in as a value); `Breakers` is the
//! shared map with its metrics.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use aiq_metrics::connectors::{CIRCUIT_REFUSED, CIRCUIT_STATE, CIRCUIT_TRANSITIONS};
use aiq_topics::{ErrorClass, TaskOutcome, TenantId, TenantLabels};
use prometheus::{IntCounterVec, IntGaugeVec, Registry};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// How many recent calls the failure rate is taken over.
    pub window: u32,
    /// Fewer calls than this in the window never open the breaker.
    pub min_calls: u32,
    /// The failing share (0 to 1) that opens it.
    pub failure_rate: f64,
    /// How long it stays open before one probe may pass.
    pub open_ms: u64,
}

impl Default for BreakerSettings {
    /// The values of `config/aiq.toml`.
    fn default() -> Self {
        Self {
            window: 20,
            min_calls: 10,
            failure_rate: 0.5,
            open_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
    fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// `true` per failed call, newest last.
    Closed {
        recent: VecDeque<bool>,
    },
    Open {
        until: Instant,
    },
    /// The one probe is out; every other call is refused until it returns.
    HalfOpen,
}

/// What a call may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Call,
    /// The one call let through a half-open breaker.
    Probe,
    Refused {
        retry_in: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    phase: Phase,
    last_used: Instant,
}

impl Breaker {
    pub fn new(now: Instant) -> Self {
        Self {
            phase: Phase::Closed {
                recent: VecDeque::new(),
            },
            last_used: now,
        }
    }

    pub fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen => BreakerState::HalfOpen,
        }
    }

    pub fn admit(&mut self, now: Instant) -> Admission {
        self.last_used = now;
        match &mut self.phase {
            Phase::Closed { .. } => Admission::Call,
            Phase::Open { until } => {
                if now >= *until {
                    self.phase = Phase::HalfOpen;
                    Admission::Probe
                } else {
                    Admission::Refused {
                        retry_in: *until - now,
                    }
                }
            }
            Phase::HalfOpen => Admission::Refused {
                retry_in: Duration::ZERO,
            },
        }
    }

    /// Records the end of an admitted call.
    pub fn record(
        &mut self,
        s: &BreakerSettings,
        admission: Admission,
        failed: bool,
        now: Instant,
    ) {
        self.last_used = now;
        let open = Phase::Open {
            until: now + Duration::from_millis(s.open_ms),
        };
        match (&mut self.phase, admission) {
            (Phase::HalfOpen, Admission::Probe) => {
                self.phase = if failed {
                    open
                } else {
                    Phase::Closed {
                        recent: VecDeque::new(),
                    }
                };
            }
            (Phase::Closed { recent }, Admission::Call) => {
                recent.push_back(failed);
                while recent.len() > s.window.max(1) as usize {
                    recent.pop_front();
                }
                let calls = recent.len();
                let failures = recent.iter().filter(|f| **f).count();
                if calls >= s.min_calls.max(1) as usize
                    && failures as f64 >= s.failure_rate * calls as f64
                {
                    self.phase = open;
                }
            }
            // A call admitted before the breaker changed phase: its answer is stale.
            _ => {}
        }
    }

    fn idle_closed(&self, now: Instant, idle: Duration) -> bool {
        matches!(self.phase, Phase::Closed { .. }) && now.duration_since(self.last_used) > idle
    }
}

/// Which answers count against a host: it failed or did not answer in time. A fatal
/// error (a 4xx, a SOAP client fault) means the host works and the request was wrong.
pub fn is_failure(outcome: &TaskOutcome) -> bool {
    matches!(
        outcome,
        TaskOutcome::Error {
            class: ErrorClass::Retryable | ErrorClass::Timeout,
            ..
        }
    )
}

struct Metrics {
    state: IntGaugeVec,
    transitions: IntCounterVec,
    refused: IntCounterVec,
    labels: TenantLabels,
}

pub struct Breakers {
    settings: BreakerSettings,
    map: Mutex<Map>,
    metrics: Metrics,
}

/// Closed breakers unused this long are forgotten, so the map holds only live targets.
const IDLE: Duration = Duration::from_secs(600);
/// The map is swept when it grows past this, and then past twice what a sweep left.
const SWEEP_AT: usize = 10_000;

struct Map {
    breakers: HashMap<(TenantId, String), Breaker>,
    sweep_at: usize,
}

impl Breakers {
    pub fn new(settings: BreakerSettings, registry: &Registry) -> Self {
        // Constants checked by aiq-metrics' tests: creating them cannot fail. A second
        // set in one registry stays unregistered, as aiq-metrics documents.
        let state = aiq_metrics::gauge_vec(registry, &CIRCUIT_STATE, &["tenant", "host"])
            .unwrap_or_else(|e| unreachable!("constant metric: {e}"));
        let transitions =
            aiq_metrics::counter_vec(registry, &CIRCUIT_TRANSITIONS, &["tenant", "to"])
                .unwrap_or_else(|e| unreachable!("constant metric: {e}"));
        let refused = aiq_metrics::counter_vec(registry, &CIRCUIT_REFUSED, &["tenant"])
            .unwrap_or_else(|e| unreachable!("constant metric: {e}"));
        Self {
            settings,
            map: Mutex::new(Map {
                breakers: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
            metrics: Metrics {
                state,
                transitions,
                refused,
                labels: aiq_metrics::tenant_labels(),
            },
        }
    }

    pub fn admit(&self, tenant: &TenantId, host: &str, now: Instant) -> Admission {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.breakers.len() > map.sweep_at {
            map.breakers.retain(|_, b| !b.idle_closed(now, IDLE));
            map.sweep_at = SWEEP_AT.max(map.breakers.len() * 2);
        }
        let b = map
            .breakers
            .entry((tenant.clone(), host.to_owned()))
            .or_insert_with(|| Breaker::new(now));
        let before = b.state();
        let a = b.admit(now);
        self.observe(tenant, host, before, b.state());
        if matches!(a, Admission::Refused { .. }) {
            self.metrics
                .refused
                .with_label_values(&[&self.metrics.labels.label(tenant)])
                .inc();
        }
        a
    }

    pub fn record(
        &self,
        tenant: &TenantId,
        host: &str,
        admission: Admission,
        failed: bool,
        now: Instant,
    ) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = map.breakers.get_mut(&(tenant.clone(), host.to_owned())) {
            let before = b.state();
            b.record(&self.settings, admission, failed, now);
            self.observe(tenant, host, before, b.state());
        }
    }

    pub fn state(&self, tenant: &TenantId, host: &str) -> BreakerState {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.breakers
            .get(&(tenant.clone(), host.to_owned()))
            .map_or(BreakerState::Closed, Breaker::state)
    }

    fn observe(&self, tenant: &TenantId, host: &str, before: BreakerState, after: BreakerState) {
        if before == after {
            return;
        }
        let t = self.metrics.labels.label(tenant);
        self.metrics
            .transitions
            .with_label_values(&[t.as_str(), after.name()])
            .inc();
        if after == BreakerState::Closed {
            let _ = self.metrics.state.remove_label_values(&[t.as_str(), host]);
        } else {
            self.metrics
                .state
                .with_label_values(&[t.as_str(), host])
                .set(after.gauge());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s() -> BreakerSettings {
        BreakerSettings {
            window: 10,
            min_calls: 4,
            failure_rate: 0.5,
            open_ms: 1000,
        }
    }

    fn run(b: &mut Breaker, now: Instant, failed: bool) -> Admission {
        let a = b.admit(now);
        if !matches!(a, Admission::Refused { .. }) {
            b.record(&s(), a, failed, now);
        }
        a
    }

    #[test]
    fn opens_on_the_failure_rate_then_probes_after_the_cool_down() {
        let t0 = Instant::now();
        let mut b = Breaker::new(t0);
        run(&mut b, t0, false);
        run(&mut b, t0, true);
        run(&mut b, t0, false);
        assert_eq!(b.state(), BreakerState::Closed);
        run(&mut b, t0, true); // 2 of 4 failed: 50 %
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            b.admit(t0 + Duration::from_millis(400)),
            Admission::Refused {
                retry_in: Duration::from_millis(600)
            }
        );
        let t1 = t0 + Duration::from_millis(1000);
        assert_eq!(b.admit(t1), Admission::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // Only one probe at a time.
        assert!(matches!(b.admit(t1), Admission::Refused { .. }));
        b.record(&s(), Admission::Probe, true, t1);
        assert_eq!(b.state(), BreakerState::Open);
        let t2 = t1 + Duration::from_millis(1000);
        assert_eq!(b.admit(t2), Admission::Probe);
        b.record(&s(), Admission::Probe, false, t2);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(t2), Admission::Call);
    }

    #[test]
    fn breakers_are_per_tenant_and_host_and_show_in_metrics() {
        let registry = Registry::new();
        let bs = Breakers::new(s(), &registry);
        let acme = TenantId::new("acme").unwrap();
        let globex = TenantId::new("globex").unwrap();
        let now = Instant::now();
        for _ in 0..4 {
            let a = bs.admit(&acme, "bad.example", now);
            bs.record(&acme, "bad.example", a, true, now);
        }
        assert_eq!(bs.state(&acme, "bad.example"), BreakerState::Open);
        assert!(matches!(
            bs.admit(&acme, "bad.example", now),
            Admission::Refused { .. }
        ));
        assert_eq!(bs.admit(&globex, "bad.example", now), Admission::Call);
        assert_eq!(bs.admit(&acme, "good.example", now), Admission::Call);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains(r#"aiq_connector_circuit_state{host="bad.example",tenant="acme"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"aiq_connector_circuit_refused_total{tenant="acme"} 1"#),
            "{text}"
        );
    }

    proptest! {
        /// Whatever the sequence, a breaker never opens below `min_calls` failures and
        /// never lets two probes through at once.
        #[test]
        fn never_opens_on_fewer_failures_than_min_calls(
            steps in proptest::collection::vec((any::<bool>(), 0u64..700), 1..200)
        ) {
            let t0 = Instant::now();
            let mut b = Breaker::new(t0);
            let mut now = t0;
            let mut failures_since_close = 0u32;
            for (failed, dt) in steps {
                now += Duration::from_millis(dt);
                let was = b.state();
                let a = b.admit(now);
                if let Admission::Probe = a {
                    let second = b.admit(now);
                    prop_assert!(matches!(second, Admission::Refused { .. }), "a second probe was let through");
                }
                if !matches!(a, Admission::Refused { .. }) {
                    b.record(&s(), a, failed, now);
                    if was == BreakerState::Closed && failed {
                        failures_since_close += 1;
                    }
                }
                if b.state() == BreakerState::Closed && was != BreakerState::Closed {
                    failures_since_close = 0;
                }
                if was == BreakerState::Closed && b.state() == BreakerState::Open {
                    prop_assert!(failures_since_close >= 2, "opened after {failures_since_close} failures");
                }
            }
        }
    }
}
