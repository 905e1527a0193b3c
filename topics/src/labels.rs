//! Tenant names as metric labels, bounded: the first `max` tenants a process sees are
//! named, every later one is counted as `other`, so the series count of every stage's
//! metrics cannot grow with the number of tenants.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::ids::TenantId;

pub const OTHER_TENANTS: &str = "other";

/// How many tenants each stage names in its metric labels.
pub const MAX_NAMED_TENANTS: usize = 100;

pub struct TenantLabels {
    max: usize,
    named: Mutex<HashSet<String>>,
}

impl TenantLabels {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            named: Mutex::new(HashSet::new()),
        }
    }

    /// The label for a tenant: its id while fewer than `max` are named, else `other`.
    pub fn label(&self, tenant: &TenantId) -> String {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        if named.contains(tenant.as_str()) {
            return tenant.to_string();
        }
        if named.len() < self.max {
            named.insert(tenant.to_string());
            return tenant.to_string();
        }
        OTHER_TENANTS.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_tenants_are_named_and_later_ones_folded() {
        let l = TenantLabels::new(2);
        let t = |s: &str| TenantId::new(s).unwrap();
        assert_eq!(l.label(&t("a")), "a");
        assert_eq!(l.label(&t("b")), "b");
        assert_eq!(l.label(&t("c")), OTHER_TENANTS);
        assert_eq!(l.label(&t("a")), "a");
    }
}
