//! Every accepted workflow version, in memory. Stages feed it from the compacted
//! definitions topic, so neither the request path nor the orchestrator asks a database
//! for a definition. Pure: callers bring the records.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use crate::workflow::Workflow;
use aiq_topics::{DefinitionRecord, DefinitionsEntry, TenantId, WorkflowId, WorkflowState};

/// One accepted version, compiled.
#[derive(Debug, Clone)]
pub struct Version {
    pub record: DefinitionRecord,
    pub workflow: Arc<Workflow>,
}

#[derive(Default)]
pub struct Catalog {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    versions: HashMap<(TenantId, WorkflowId), BTreeMap<u32, Arc<Version>>>,
    /// Lifecycle states; a workflow without one is enabled and starts its newest.
    states: HashMap<(TenantId, WorkflowId), WorkflowState>,
}

impl Inner {
    fn state(&self, key: &(TenantId, WorkflowId)) -> Option<&WorkflowState> {
        self.states.get(key)
    }

    fn deleted(&self, key: &(TenantId, WorkflowId)) -> bool {
        self.state(key).is_some_and(|s| s.deleted)
    }

    /// Starts from no trigger: disabled or deleted.
    fn stopped(&self, key: &(TenantId, WorkflowId)) -> bool {
        self.state(key).is_some_and(|s| s.disabled || s.deleted)
    }

    /// The version a trigger without one starts: the pinned one, else the newest.
    fn current(&self, key: &(TenantId, WorkflowId)) -> Option<&Arc<Version>> {
        let versions = self.versions.get(key)?;
        let pinned = self
            .state(key)
            .and_then(|s| s.default_version)
            .and_then(|v| versions.get(&v));
        pinned.or_else(|| versions.values().next_back())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("definition record does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("definition {key} no longer validates: {errors}")]
    Invalid { key: String, errors: String },
}

impl Catalog {
    /// Adds a record read from the definitions topic (or just written by this process).
    /// Versions are immutable, so a repeated record changes nothing (and is not
    /// compiled again).
    pub fn apply(&self, record: DefinitionRecord) -> Result<(), CatalogError> {
        if self
            .version(&record.tenant, &record.workflow, record.version)
            .is_some()
        {
            return Ok(());
        }
        let text = record.definition.to_string();
        let workflow = crate::validate_source(&format!("{}.json", record.key()), &text)
            .map_err(|errs| CatalogError::Invalid {
                key: record.key(),
                errors: errs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            })?
            .with_version(record.version);
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner
            .versions
            .entry((record.tenant.clone(), record.workflow.clone()))
            .or_default()
            .entry(record.version)
            .or_insert_with(|| {
                Arc::new(Version {
                    record,
                    workflow: Arc::new(workflow),
                })
            });
        Ok(())
    }

    /// A record of the definitions topic: a version, or a workflow's state.
    pub fn apply_bytes(&self, payload: &[u8]) -> Result<(), CatalogError> {
        match DefinitionsEntry::decode(payload)? {
            DefinitionsEntry::Version(r) => self.apply(*r),
            DefinitionsEntry::State(s) => {
                self.apply_state(s);
                Ok(())
            }
        }
    }

    /// A workflow's lifecycle state (the latest wins: states are written in order by
    /// the one ingest request that changes them, and the topic is compacted).
    pub fn apply_state(&self, state: WorkflowState) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner
            .states
            .insert((state.tenant.clone(), state.workflow.clone()), state);
    }

    /// The workflow's state, if it was ever changed.
    pub fn state(&self, tenant: &TenantId, workflow: &WorkflowId) -> Option<WorkflowState> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.state(&(tenant.clone(), workflow.clone())).cloned()
    }

    /// Why no trigger may start a run of the workflow now (disabled, deleted), if so.
    pub fn refusal(&self, tenant: &TenantId, workflow: &WorkflowId) -> Option<String> {
        let s = self.state(tenant, workflow)?;
        if s.deleted {
            Some(format!("workflow {:?} was deleted", workflow.as_str()))
        } else if s.disabled {
            Some(format!(
                "workflow {:?} is disabled; enable it to start runs",
                workflow.as_str()
            ))
        } else {
            None
        }
    }

    /// The version a trigger without one starts: the default version when one is
    /// pinned, else the newest; none for a deleted workflow. Versions are shared, not
    /// copied: the request path asks for one on every run start.
    pub fn latest(&self, tenant: &TenantId, workflow: &WorkflowId) -> Option<Arc<Version>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.clone(), workflow.clone());
        if inner.deleted(&key) {
            return None;
        }
        inner.current(&key).cloned()
    }

    pub fn version(
        &self,
        tenant: &TenantId,
        workflow: &WorkflowId,
        version: u32,
    ) -> Option<Arc<Version>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .versions
            .get(&(tenant.clone(), workflow.clone()))?
            .get(&version)
            .cloned()
    }

    /// The tenant's workflows (but deleted ones) with their newest version, sorted by
    /// id.
    pub fn list(&self, tenant: &TenantId) -> Vec<Arc<Version>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Arc<Version>> = inner
            .versions
            .iter()
            .filter(|(k, _)| &k.0 == tenant && !inner.deleted(k))
            .filter_map(|(_, versions)| versions.values().next_back().cloned())
            .collect();
        out.sort_by(|a, b| a.record.workflow.cmp(&b.record.workflow));
        out
    }

    /// Every version of every workflow of the tenant, deleted ones too (an export).
    pub fn all_versions(&self, tenant: &TenantId) -> Vec<Arc<Version>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Arc<Version>> = inner
            .versions
            .iter()
            .filter(|(k, _)| &k.0 == tenant)
            .flat_map(|(_, versions)| versions.values().cloned())
            .collect();
        out.sort_by(|a, b| {
            (&a.record.workflow, a.record.version).cmp(&(&b.record.workflow, b.record.version))
        });
        out
    }

    /// The lifecycle state of each of the tenant's workflows that has one.
    pub fn states_of(&self, tenant: &TenantId) -> Vec<WorkflowState> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<WorkflowState> = inner
            .states
            .iter()
            .filter(|(k, _)| &k.0 == tenant)
            .map(|(_, s)| s.clone())
            .collect();
        out.sort_by(|a, b| a.workflow.cmp(&b.workflow));
        out
    }

    /// The current version (see [`Catalog::latest`]) of every workflow that has cron
    /// triggers and is neither disabled nor deleted, for tenants that `owned` accepts
    /// (the orchestrator passes the tenants of its partitions).
    pub fn scheduled(&self, owned: impl Fn(&TenantId) -> bool) -> Vec<Arc<Version>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .versions
            .keys()
            .filter(|k| owned(&k.0) && !inner.stopped(k))
            .filter_map(|k| inner.current(k))
            .filter(|v| !v.workflow.definition().triggers.cron.is_empty())
            .cloned()
            .collect()
    }

    /// The workflow whose current version declares the webhook `hook` (the first by id
    /// if several do); a disabled or deleted workflow declares none.
    pub fn by_webhook(&self, tenant: &TenantId, hook: &str) -> Option<Arc<Version>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .versions
            .keys()
            .filter(|k| &k.0 == tenant && !inner.stopped(k))
            .filter_map(|k| inner.current(k))
            .filter(|v| {
                v.workflow
                    .definition()
                    .triggers
                    .webhooks
                    .iter()
                    .any(|w| w.name == hook)
            })
            .min_by(|a, b| a.record.workflow.cmp(&b.record.workflow))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use serde_json::json;

    fn record(workflow: &str, version: u32, hook: Option<&str>) -> DefinitionRecord {
        let mut def = json!({"id": workflow, "steps": [{"id": "a", "succeed": {}}]});
        if let Some(h) = hook {
            def["triggers"] = json!({"webhooks": [{"name": h}]});
        }
        DefinitionRecord {
            tenant: TenantId::new("acme").unwrap(),
            workflow: WorkflowId::new(workflow).unwrap(),
            version,
            content_hash: format!("h{version}"),
            created_at: DateTime::from_timestamp(0, 0).unwrap(),
            definition: def,
        }
    }

    #[test]
    fn keeps_versions_and_answers_latest_list_and_webhooks() {
        let c = Catalog::default();
        c.apply(record("sync", 1, None)).unwrap();
        c.apply(record("sync", 2, Some("shop"))).unwrap();
        c.apply(record("other", 1, None)).unwrap();
        c.apply(record("sync", 1, None)).unwrap();
        let t = TenantId::new("acme").unwrap();
        let sync = WorkflowId::new("sync").unwrap();
        assert_eq!(c.latest(&t, &sync).unwrap().record.version, 2);
        assert_eq!(c.latest(&t, &sync).unwrap().workflow.version(), 2);
        assert_eq!(c.version(&t, &sync, 1).unwrap().record.content_hash, "h1");
        let listed: Vec<String> = c
            .list(&t)
            .iter()
            .map(|v| v.record.workflow.to_string())
            .collect();
        assert_eq!(listed, vec!["other", "sync"]);
        assert_eq!(
            c.by_webhook(&t, "shop").unwrap().record.workflow.as_str(),
            "sync"
        );
        assert!(
            c.by_webhook(&TenantId::new("globex").unwrap(), "shop")
                .is_none()
        );
        assert!(c.apply_bytes(b"not json").is_err());
        // A version held is not compiled again: a repeat that would not validate is
        // not even looked at.
        let mut repeat = record("sync", 1, None);
        repeat.definition = json!({"id": "sync", "steps": []});
        repeat.content_hash = "other".into();
        c.apply(repeat.clone()).unwrap();
        assert_eq!(c.version(&t, &sync, 1).unwrap().record.content_hash, "h1");
        repeat.version = 3;
        assert!(matches!(c.apply(repeat), Err(CatalogError::Invalid { .. })));
        assert!(c.scheduled(|_| true).is_empty());
    }

    #[test]
    fn a_state_pins_a_version_stops_triggers_or_hides_the_workflow() {
        let c = Catalog::default();
        c.apply(record("sync", 1, Some("shop"))).unwrap();
        c.apply(record("sync", 2, Some("shop"))).unwrap();
        let t = TenantId::new("acme").unwrap();
        let sync = WorkflowId::new("sync").unwrap();
        let at = DateTime::from_timestamp(0, 0).unwrap();
        let mut state = WorkflowState::new(t.clone(), sync.clone(), at);
        state.default_version = Some(1);
        c.apply_bytes(&state.encode()).unwrap();
        assert_eq!(c.latest(&t, &sync).unwrap().record.version, 1);
        assert_eq!(c.by_webhook(&t, "shop").unwrap().record.version, 1);
        assert!(c.refusal(&t, &sync).is_none());
        state.default_version = None;
        state.disabled = true;
        c.apply_state(state.clone());
        assert_eq!(c.latest(&t, &sync).unwrap().record.version, 2);
        assert!(c.refusal(&t, &sync).unwrap().contains("disabled"));
        assert!(c.by_webhook(&t, "shop").is_none());
        assert_eq!(c.list(&t).len(), 1);
        state.deleted = true;
        c.apply_state(state);
        assert!(c.latest(&t, &sync).is_none());
        assert!(c.list(&t).is_empty());
        assert!(c.refusal(&t, &sync).unwrap().contains("deleted"));
        // Runs in flight still find their version.
        assert!(c.version(&t, &sync, 1).is_some());
    }
}
