//! Time-driven work besides cron: the runs' own timers (waits, step timeouts, retry
//! backoffs), fired in due order, and the expiry of finished runs past their retention.

use aiq_engine::Input;
use chrono::{DateTime, Utc};

use super::{Core, Origin};
use crate::changelog::EntryKey;

impl Core {
    /// When the earliest timer of any owned partition is due.
    pub fn next_timer(&self) -> Option<DateTime<Utc>> {
        self.parts
            .values()
            .filter_map(|s| s.timers.first().map(|(due, _, _)| *due))
            .min()
    }

    /// Fires every timer due at `now`, earliest first.
    pub fn fire_timers(&mut self, now: DateTime<Utc>) -> usize {
        self.fire_timers_up_to(now, usize::MAX)
    }

    /// Fires at most `max` timers due at `now`, earliest first across the owned
    /// partitions (so that a cut-off backlog leaves the latest ones, in every partition,
    /// for the next call). Returns how many fired.
    pub fn fire_timers_up_to(&mut self, now: DateTime<Utc>, max: usize) -> usize {
        let mut fired = 0;
        while fired < max {
            let earliest = self
                .parts
                .iter()
                .filter_map(|(p, s)| s.timers.first().map(|(due, _, _)| (*due, *p)))
                .min();
            let Some((due, p)) = earliest else { break };
            if due > now {
                break;
            }
            let Some((_, run, id)) = self.parts.get_mut(&p).and_then(|s| s.timers.pop_first())
            else {
                break;
            };
            // Only a record's input can ask for the definitions.
            let _ = self.drive(p, run, Input::TimerFired { id }, now, Origin::Timer);
            fired += 1;
        }
        fired
    }

    /// Forgets finished runs older than the retention, with tombstones.
    pub fn expire_finished(&mut self, now: DateTime<Utc>) -> usize {
        self.expire_finished_up_to(now, usize::MAX)
    }

    /// Forgets finished runs older than the retention, a bucket at a time, writing
    /// at most `max` chunk tombstones. Returns how many; `max` means more may be left.
    /// Failed runs kept for redrive past their retention go too, within the same `max`.
    pub fn expire_finished_up_to(&mut self, now: DateTime<Utc>, max: usize) -> usize {
        let mut n = self.expire_redrivable(now, max);
        for (p, st) in &mut self.parts {
            if n >= max {
                break;
            }
            for (bucket, seq) in st.finished.expire(now, max - n) {
                self.dirty.insert((*p, EntryKey::Finished(bucket, seq)));
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    //! Budgets only; what a fired timer does is tested in `core/tests.rs`.
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use aiq_engine::Catalog;
    use chrono::TimeZone;

    use super::*;
    use crate::settings::OrchestratorSettings;

    /// `per_partition` finished runs in each of two partitions, each in a bucket (and so
    /// a changelog chunk) of its own, long past the retention.
    fn core_with_finished(per_partition: usize) -> Core {
        let settings = Arc::new(OrchestratorSettings {
            finished_run_retention_secs: 60,
            ..OrchestratorSettings::default()
        });
        let mut core = Core::new(settings, Arc::new(Catalog::default()), 2);
        let tenant = aiq_topics::TenantId::new("acme").unwrap();
        let long_ago = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        for p in 0..2 {
            core.restore(p, Vec::new());
            let st = core.parts.get_mut(&p).unwrap();
            for i in 0..per_partition {
                let at = long_ago + chrono::Duration::minutes(i as i64);
                let status = aiq_topics::RunStatus::Succeeded;
                st.finished
                    .record(aiq_topics::RunId::random(), &tenant, status, at);
            }
        }
        assert_eq!(core.take_changelog().len(), 2 * per_partition);
        core
    }

    #[test]
    fn timers_fire_earliest_first_across_partitions_up_to_the_budget() {
        let mut core = core_with_finished(0);
        let t = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        // Runs unknown to the partition: firing their timers changes nothing else, which
        // leaves only the budget and the order to look at.
        for (p, secs) in [(0, 1), (0, 3), (1, 2), (1, 4), (1, 100)] {
            let st = core.parts.get_mut(&p).unwrap();
            st.timers.insert((
                t + chrono::Duration::seconds(secs),
                aiq_topics::RunId::random(),
                "x".into(),
            ));
        }
        let now = t + chrono::Duration::seconds(10);
        assert_eq!(core.fire_timers_up_to(now, 3), 3);
        assert_eq!(core.next_timer(), Some(t + chrono::Duration::seconds(4)));
        assert_eq!(core.fire_timers_up_to(now, 3), 1);
        assert_eq!(core.next_timer(), Some(t + chrono::Duration::seconds(100)));
        assert_eq!(core.fire_timers_up_to(now, 3), 0);
    }

    #[test]
    fn expiry_stops_at_its_budget_and_the_rest_follows() {
        let mut core = core_with_finished(7);
        let now = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        assert_eq!(core.expire_finished_up_to(now, 5), 5);
        assert_eq!(core.dirty.len(), 5);
        assert_eq!(core.expire_finished_up_to(now, 5), 5);
        assert_eq!(core.expire_finished_up_to(now, 5), 4);
        assert_eq!(core.expire_finished_up_to(now, 5), 0);
        assert_eq!(core.dirty.len(), 14);
    }
}
