//! A suspension that cancels: one `CancelTenant` signal in the tenant's partition ends
//! every run of the tenant there, queued ones first (so that no run ending here starts
//! one of them), then top-level runs (whose sub-workflows end with them), then whatever
//! is left. The work is bounded by the tenant's quotas: its running runs by
//! `max_concurrent_runs`, its queued ones by `max_queued_runs`.

use aiq_engine::run::Input;
use aiq_topics::RunId;
use chrono::{DateTime, Utc};

use super::state::StoredRun;
use super::{Core, NeedDefinitions, Origin, Record};

impl Core {
    pub(super) fn cancel_tenant(
        &mut self,
        rec: &Record<'_>,
        tenant: &aiq_topics::TenantId,
        reason: &str,
        now: DateTime<Utc>,
        definitions_fresh: bool,
    ) -> Result<(), NeedDefinitions> {
        let p = rec.partition;
        let Some(st) = self.parts.get(&p) else {
            return Ok(());
        };
        let mut queued: Vec<RunId> = st
            .queued
            .iter()
            .filter(|(_, q)| &q.tenant == tenant)
            .map(|(r, _)| *r)
            .collect();
        let mut top = Vec::new();
        let mut children = Vec::new();
        for (run, stored) in st.runs.iter().filter(|(_, s)| &s.tenant == tenant) {
            match StoredRun::live(stored).map(|l| l.parent) {
                Some(Some(_)) => children.push(*run),
                _ => top.push(*run),
            }
        }
        // Runs are kept in hash maps: sort, so a restored instance does the same.
        queued.sort_unstable_by_key(RunId::as_uuid);
        top.sort_unstable_by_key(RunId::as_uuid);
        children.sort_unstable_by_key(RunId::as_uuid);
        let total = queued.len() + top.len() + children.len();
        tracing::info!(tenant = %tenant, runs = total, %reason, "cancelling a suspended tenant's runs");
        for run in queued.into_iter().chain(top).chain(children) {
            let still = self
                .parts
                .get(&p)
                .is_some_and(|st| st.runs.contains_key(&run) || st.queued.contains_key(&run));
            if still {
                let input = Input::Cancel {
                    reason: reason.to_owned(),
                };
                self.drive(p, run, input, now, Origin::Record(rec, definitions_fresh))?;
            }
        }
        Ok(())
    }
}
