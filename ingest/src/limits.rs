//! Per-tenant trigger rate limits.
//!
//! governor's keyed limiter holds one quota for every key, and tenants differ, so each
//! tenant gets its own direct limiter with its own quota. The map only grows for
//! tenants that authenticated (or whose webhook signature verified), so its size is
//! bounded by the number of real tenants, not by what callers send.
//!
//! A tenant's quota is its plan's (the tenant registry, changed live) over the static
//! configuration's; a limiter built for an older quota is replaced on the tenant's next
//! trigger, starting with a full burst.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aiq_topics::TenantId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// A tenant's trigger allowance: a sustained rate and a burst on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerQuota {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl TriggerQuota {
    fn governor(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

/// Refused: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header, never 0.
    pub fn header_secs(self) -> u64 {
        self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)
    }
}

type Limiter = (TriggerQuota, Arc<DefaultDirectRateLimiter>);

pub struct TriggerLimiter {
    default: TriggerQuota,
    overrides: HashMap<TenantId, TriggerQuota>,
    tenants: Arc<aiq_tenants::Directory>,
    limiters: RwLock<HashMap<TenantId, Limiter>>,
    clock: DefaultClock,
}

impl TriggerLimiter {
    pub fn new(
        default: TriggerQuota,
        overrides: HashMap<TenantId, TriggerQuota>,
        tenants: Arc<aiq_tenants::Directory>,
    ) -> Self {
        Self {
            default,
            overrides,
            tenants,
            limiters: RwLock::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// The plan's rate and burst, each over the configured one.
    pub fn quota(&self, tenant: &TenantId) -> TriggerQuota {
        let configured = self.overrides.get(tenant).copied().unwrap_or(self.default);
        self.tenants
            .with(tenant, |r| TriggerQuota {
                per_second: r
                    .plan
                    .trigger_per_second
                    .and_then(NonZeroU32::new)
                    .unwrap_or(configured.per_second),
                burst: r
                    .plan
                    .trigger_burst
                    .and_then(NonZeroU32::new)
                    .unwrap_or(configured.burst),
            })
            .unwrap_or(configured)
    }

    fn limiter(&self, tenant: &TenantId) -> Arc<DefaultDirectRateLimiter> {
        let quota = self.quota(tenant);
        // A poisoned lock only means another request panicked mid-insert; the map is
        // still consistent, so keep serving.
        if let Some((q, l)) = self
            .limiters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            && *q == quota
        {
            return Arc::clone(l);
        }
        let mut map = self.limiters.write().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(tenant.clone())
            .or_insert_with(|| (quota, Arc::new(RateLimiter::direct(quota.governor()))));
        if entry.0 != quota {
            *entry = (quota, Arc::new(RateLimiter::direct(quota.governor())));
        }
        Arc::clone(&entry.1)
    }

    /// Takes one trigger from the tenant's allowance.
    pub fn check(&self, tenant: &TenantId) -> Result<(), RetryAfter> {
        self.limiter(tenant)
            .check()
            .map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(per_second: u32, burst: u32) -> TriggerQuota {
        TriggerQuota {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    #[test]
    fn each_tenant_has_its_own_allowance() {
        let small = TenantId::new("small").unwrap();
        let big = TenantId::new("big").unwrap();
        let limiter = TriggerLimiter::new(
            q(1, 2),
            HashMap::from([(big.clone(), q(1, 5))]),
            Arc::default(),
        );
        assert!(limiter.check(&small).is_ok());
        assert!(limiter.check(&small).is_ok());
        let refused = limiter.check(&small).unwrap_err();
        assert!(
            refused.0 > Duration::ZERO && refused.0 <= Duration::from_secs(1),
            "{refused:?}"
        );
        assert_eq!(refused.header_secs(), 1);
        // The small tenant's exhaustion does not touch the big one.
        for _ in 0..5 {
            assert!(limiter.check(&big).is_ok());
        }
        assert!(limiter.check(&big).is_err());
    }

    #[test]
    fn a_plan_change_takes_effect_on_the_next_trigger() {
        let acme = TenantId::new("acme").unwrap();
        let tenants = Arc::new(aiq_tenants::Directory::default());
        let limiter = TriggerLimiter::new(q(1000, 1000), HashMap::new(), Arc::clone(&tenants));
        let record = |per_second: u32, burst: u32| aiq_topics::TenantRecord {
            id: acme.clone(),
            display_name: "Acme".into(),
            plan: aiq_topics::Plan {
                trigger_per_second: Some(per_second),
                trigger_burst: Some(burst),
                ..Default::default()
            },
            state: aiq_topics::TenantState::Active,
            suspended_at: None,
            erased_at: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            updated_by: "root".into(),
            identity: None,
        };
        for _ in 0..10 {
            assert!(limiter.check(&acme).is_ok());
        }
        tenants
            .apply(Some(b"acme"), Some(&record(1, 3).encode()))
            .unwrap();
        assert_eq!(limiter.quota(&acme), q(1, 3));
        for _ in 0..3 {
            assert!(limiter.check(&acme).is_ok());
        }
        assert!(limiter.check(&acme).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(RetryAfter(Duration::from_millis(1)).header_secs(), 1);
        assert_eq!(RetryAfter(Duration::from_secs(2)).header_secs(), 2);
        assert_eq!(RetryAfter(Duration::from_millis(2001)).header_secs(), 3);
    }
}
