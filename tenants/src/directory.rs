//! [`Directory`]: the registered tenants as last read from the tenants topic.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use aiq_topics::{TenantId, TenantRecord};

/// Every registered tenant, shared by the stages of one process. Reads take a read
/// lock on a small map (one entry per tenant) and clone what they return.
#[derive(Default)]
pub struct Directory {
    tenants: RwLock<HashMap<TenantId, TenantRecord>>,
    /// Counts applied records, so a reader can tell that something changed.
    changes: AtomicU64,
}

impl Directory {
    /// Applies one record of the topic: a tenant's latest record, or a tombstone
    /// (no payload) that removes it. The key must name the record's tenant.
    pub fn apply(&self, key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<(), String> {
        let key = key
            .map(String::from_utf8_lossy)
            .ok_or_else(|| "tenant record without a key".to_owned())?;
        let id = TenantId::new(key.as_ref()).map_err(|e| format!("record key: {e}"))?;
        let mut map = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        match payload {
            None => {
                map.remove(&id);
            }
            Some(bytes) => {
                let record = TenantRecord::decode(bytes)?;
                if record.id != id {
                    return Err(format!(
                        "record key {:?} does not name the record's tenant {:?}",
                        id.as_str(),
                        record.id.as_str()
                    ));
                }
                map.insert(id, record);
            }
        }
        self.changes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub fn get(&self, tenant: &TenantId) -> Option<TenantRecord> {
        self.read(|m| m.get(tenant).cloned())
    }

    pub fn contains(&self, tenant: &TenantId) -> bool {
        self.read(|m| m.contains_key(tenant))
    }

    /// Whether the tenant is registered and suspended (an unregistered one is not).
    pub fn is_suspended(&self, tenant: &TenantId) -> bool {
        self.read(|m| m.get(tenant).is_some_and(TenantRecord::is_suspended))
    }

    /// What `f` reads from the tenant's record, without cloning the rest (the hot
    /// paths read one quota per dispatched task).
    pub fn with<T>(&self, tenant: &TenantId, f: impl FnOnce(&TenantRecord) -> T) -> Option<T> {
        self.read(|m| m.get(tenant).map(f))
    }

    /// Every tenant, ordered by id.
    pub fn list(&self) -> Vec<TenantRecord> {
        let mut all: Vec<TenantRecord> = self.read(|m| m.values().cloned().collect());
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// How many records have been applied: a changed number means a changed directory.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    fn read<T>(&self, f: impl FnOnce(&HashMap<TenantId, TenantRecord>) -> T) -> T {
        f(&self.tenants.read().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use aiq_topics::{Plan, TenantState};
    use chrono::Utc;

    use super::*;

    fn record(id: &str, state: TenantState) -> TenantRecord {
        TenantRecord {
            id: TenantId::new(id).unwrap(),
            display_name: id.to_uppercase(),
            plan: Plan {
                max_concurrent_runs: Some(2),
                ..Plan::default()
            },
            state,
            suspended_at: None,
            erased_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            updated_by: "root".into(),
            identity: None,
        }
    }

    #[test]
    fn applies_records_and_tombstones_keyed_by_tenant() {
        let d = Directory::default();
        let acme = TenantId::new("acme").unwrap();
        d.apply(
            Some(b"acme"),
            Some(&record("acme", TenantState::Active).encode()),
        )
        .unwrap();
        assert!(d.contains(&acme) && !d.is_suspended(&acme));
        assert_eq!(d.with(&acme, |r| r.plan.max_concurrent_runs), Some(Some(2)));
        d.apply(
            Some(b"acme"),
            Some(&record("acme", TenantState::Suspended).encode()),
        )
        .unwrap();
        assert!(d.is_suspended(&acme));
        d.apply(
            Some(b"zeta"),
            Some(&record("zeta", TenantState::Active).encode()),
        )
        .unwrap();
        let ids: Vec<String> = d.list().into_iter().map(|r| r.id.to_string()).collect();
        assert_eq!(ids, ["acme", "zeta"]);
        d.apply(Some(b"acme"), None).unwrap();
        assert!(!d.contains(&acme));
        assert_eq!(d.with(&acme, |r| r.plan.clone()), None);
        assert_eq!(d.changes(), 4);
    }

    #[test]
    fn a_record_under_another_tenants_key_or_undecodable_is_refused() {
        let d = Directory::default();
        let e = d
            .apply(
                Some(b"evil"),
                Some(&record("acme", TenantState::Active).encode()),
            )
            .unwrap_err();
        assert!(e.contains("does not name"), "{e}");
        let e = d.apply(Some(b"acme"), Some(b"{}")).unwrap_err();
        assert!(e.contains("tenant record is not valid"), "{e}");
        assert!(d.apply(None, None).is_err());
        assert!(d.list().is_empty());
    }
}
