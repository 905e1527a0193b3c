//! Failed and timed-out runs kept for redrive: their whole state, under the run's own
//! changelog key (where a live run's state was), for `redrive_retention_secs` and at
//! most `redrive_max_runs` per partition (the oldest goes first). A redrive signal
//! moves a kept run back among the live ones and lets the engine resume it; the
//! engine's `Input::Redrive` applies only to the failure it names, so a repeated
//! request resumes it once.
//!
//! A sub-workflow's run is not kept: its parent was told it failed, and is the run to
//! redrive.

use std::collections::{BTreeSet, HashMap};

use aiq_engine::Input;
use aiq_topics::{DeadLetterKind, RunId, RunStatus, SignalEvent, TenantId};
use chrono::{DateTime, Utc};

use super::state::StoredRun;
use super::{Core, NeedDefinitions, Origin, Record};
use crate::changelog::EntryKey;

/// The kept runs of one partition, with their end times for expiry.
#[derive(Default)]
pub(super) struct Redrivable {
    runs: HashMap<RunId, (DateTime<Utc>, StoredRun)>,
    by_end: BTreeSet<(DateTime<Utc>, RunId)>,
}

impl Redrivable {
    pub(super) fn get(&self, run: &RunId) -> Option<&StoredRun> {
        self.runs.get(run).map(|(_, s)| s)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.runs.len()
    }

    /// Keeps `run`; returns the runs the bound of `max` pushed out (their entries are
    /// to be tombstoned).
    pub(super) fn insert(
        &mut self,
        run: RunId,
        ended: DateTime<Utc>,
        stored: StoredRun,
        max: usize,
    ) -> Vec<(TenantId, RunId)> {
        if let Some((old, _)) = self.runs.insert(run, (ended, stored)) {
            self.by_end.remove(&(old, run));
        }
        self.by_end.insert((ended, run));
        let mut out = Vec::new();
        while self.runs.len() > max {
            let Some((_, oldest)) = self.by_end.pop_first() else {
                break;
            };
            if let Some((_, s)) = self.runs.remove(&oldest) {
                out.push((s.tenant, oldest));
            }
        }
        out
    }

    pub(super) fn remove(&mut self, run: &RunId) -> Option<StoredRun> {
        let (ended, s) = self.runs.remove(run)?;
        self.by_end.remove(&(ended, *run));
        Some(s)
    }

    /// Takes out up to `max` runs that ended at or before `horizon`, oldest first.
    pub(super) fn expire(&mut self, horizon: DateTime<Utc>, max: usize) -> Vec<(TenantId, RunId)> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.by_end.first() {
                Some((ended, _)) if *ended <= horizon => {}
                _ => break,
            }
            let Some((_, run)) = self.by_end.pop_first() else {
                break;
            };
            if let Some((_, s)) = self.runs.remove(&run) {
                out.push((s.tenant, run));
            }
        }
        out
    }
}

/// Whether a run that ended so is kept for redrive.
pub(super) fn keeps(status: RunStatus, has_parent: bool, has_resume: bool) -> bool {
    matches!(status, RunStatus::Failed | RunStatus::TimedOut) && !has_parent && has_resume
}

impl Core {
    /// A redrive request: resumes the kept run it names, if its tenant's; anything else
    /// goes to the dead letters saying why.
    pub(super) fn redrive(
        &mut self,
        rec: &Record<'_>,
        s: SignalEvent,
        now: DateTime<Utc>,
        definitions_fresh: bool,
    ) -> Result<(), NeedDefinitions> {
        let p = rec.partition;
        let Some(st) = self.parts.get_mut(&p) else {
            return Ok(());
        };
        let kept = st
            .redrivable
            .get(&s.run)
            .filter(|k| k.tenant == s.tenant)
            .and_then(StoredRun::live);
        let Some(live) = kept else {
            let reason = format!(
                "run {} of tenant {:?} has no failed state kept for redrive: it did not fail \
                 or time out, was redriven already, or ended longer ago than \
                 orchestrator.redrive_retention_secs",
                s.run,
                s.tenant.as_str()
            );
            self.dead_letter(rec, DeadLetterKind::UnknownRun, reason);
            return Ok(());
        };
        let (tenant, workflow, v) = (
            live.state.tenant.clone(),
            live.state.workflow.clone(),
            live.state.version,
        );
        if self.catalog.version(&tenant, &workflow, v).is_none() {
            if !definitions_fresh {
                return Err(NeedDefinitions);
            }
            let reason = format!(
                "run {} is at version {v} of workflow {:?}, which the catalog does not hold",
                s.run,
                workflow.as_str()
            );
            self.dead_letter(rec, DeadLetterKind::Internal, reason);
            return Ok(());
        }
        // Back among the live runs, counted as running: the engine either resumes it
        // or (another failure named) leaves it ended, and ending uncounts it again.
        if let Some(stored) = st.redrivable.remove(&s.run) {
            st.running.add(&tenant, &workflow);
            st.runs.insert(s.run, stored);
        }
        let input = Input::from(s.action);
        self.drive(p, s.run, input, now, Origin::Record(rec, definitions_fresh))
    }

    /// An ended run's payloads were erased: the state kept for its redrive holds its
    /// input and step outputs, so it goes, and its changelog entry is tombstoned. Only
    /// the tenant's own run; nothing kept is nothing to do (and no dead letter: the
    /// request did what it asked).
    pub(super) fn forget_erased(&mut self, p: i32, s: &SignalEvent) {
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        if st
            .redrivable
            .get(&s.run)
            .is_some_and(|k| k.tenant == s.tenant)
        {
            st.redrivable.remove(&s.run);
            self.dirty
                .insert((p, EntryKey::Run(s.tenant.clone(), s.run)));
        }
    }

    /// Forgets kept runs past the retention, at most `max`; returns how many.
    pub(super) fn expire_redrivable(&mut self, now: DateTime<Utc>, max: usize) -> usize {
        // Never past the finished-run markers: a kept run's id must stay known, so that
        // a late duplicate trigger of it starts nothing.
        let secs = self
            .settings
            .redrive_retention_secs
            .min(self.settings.finished_run_retention_secs);
        let retention = i64::try_from(secs).unwrap_or(i64::MAX);
        let horizon = now - chrono::Duration::seconds(retention.min(100 * 365 * 86_400));
        let mut n = 0;
        for (p, st) in &mut self.parts {
            if n >= max {
                break;
            }
            for (tenant, run) in st.redrivable.expire(horizon, max - n) {
                self.dirty.insert((*p, EntryKey::Run(tenant, run)));
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::TimeZone;

    use super::*;

    fn stored(tenant: &str) -> StoredRun {
        StoredRun {
            tenant: TenantId::new(tenant).unwrap(),
            entry: Box::new([]),
        }
    }

    #[test]
    fn the_bound_pushes_out_the_oldest_and_expiry_takes_what_ended_before_the_horizon() {
        let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let mut r = Redrivable::default();
        let runs: Vec<RunId> = (0..4).map(|_| RunId::random()).collect();
        for (i, run) in runs.iter().enumerate() {
            let out = r.insert(
                *run,
                t0 + chrono::Duration::minutes(i as i64),
                stored("acme"),
                3,
            );
            if i < 3 {
                assert!(out.is_empty());
            } else {
                assert_eq!(out, vec![(TenantId::new("acme").unwrap(), runs[0])]);
            }
        }
        assert_eq!(r.len(), 3);
        assert!(r.get(&runs[0]).is_none());
        let gone = r.expire(t0 + chrono::Duration::minutes(2), 10);
        assert_eq!(
            gone.iter().map(|(_, run)| *run).collect::<Vec<_>>(),
            runs[1..3]
        );
        assert!(r.remove(&runs[3]).is_some());
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn only_failed_or_timed_out_top_level_runs_with_a_place_to_resume_are_kept() {
        assert!(keeps(RunStatus::Failed, false, true));
        assert!(keeps(RunStatus::TimedOut, false, true));
        assert!(!keeps(RunStatus::Failed, true, true));
        assert!(!keeps(RunStatus::Failed, false, false));
        assert!(!keeps(RunStatus::Succeeded, false, true));
        assert!(!keeps(RunStatus::Cancelled, false, true));
    }
}
