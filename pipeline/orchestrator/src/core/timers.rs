//! Time-driven work besides cron: the runs' own timers (waits, step timeouts, retry
//! backoffs), fired in due order, and the expiry of finished runs past their retention.

use aiq_engine::Input;
use aiq_topics::{RunId, TenantId};
use chrono::{DateTime, Duration, Utc};

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
        let mut fired = 0;
        let partitions: Vec<i32> = self.parts.keys().copied().collect();
        for p in partitions {
            while let Some(st) = self.parts.get_mut(&p) {
                let Some(first) = st.timers.first().cloned() else {
                    break;
                };
                if first.0 > now {
                    break;
                }
                st.timers.remove(&first);
                let (_, run, id) = first;
                // Only a record's input can ask for the definitions.
                let _ = self.drive(p, run, Input::TimerFired { id }, now, Origin::Timer);
                fired += 1;
            }
        }
        fired
    }

    /// Forgets finished runs older than the retention, with tombstones.
    pub fn expire_finished(&mut self, now: DateTime<Utc>) -> usize {
        let keep = Duration::seconds(self.settings.finished_run_retention_secs as i64);
        let mut n = 0;
        for (p, st) in &mut self.parts {
            let old: Vec<(RunId, TenantId)> = st
                .finished
                .iter()
                .filter(|(_, f)| now - f.finished_at > keep)
                .map(|(r, f)| (*r, f.tenant.clone()))
                .collect();
            for (run, tenant) in old {
                st.finished.remove(&run);
                self.dirty.insert((*p, EntryKey::Run(tenant, run)));
                n += 1;
            }
        }
        n
    }
}
