//! Cron: the schedules of the tenants this instance owns fire as triggers in the
//! tenant's partition, each schedule's cursor kept in the changelog; misfire and
//! overlap policies decide what a late or overlapping tick does.

use std::collections::HashSet;

use aiq_engine::definition::{MisfirePolicy, OverlapPolicy};
use aiq_topics::{RunId, TenantId, TriggerEvent, TriggerSource, WorkflowId, partition_for_key};
use chrono::{DateTime, Duration, Utc};

use super::{Core, Output};
use crate::changelog::{CronCursor, EntryKey};

impl Core {
    /// Fires due cron ticks of the tenants this instance owns, as triggers in the
    /// tenant's partition. Returns when the next tick is due.
    pub fn fire_cron(&mut self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let n = self.tenant_partitions as u32;
        let owned: HashSet<i32> = self.parts.keys().copied().collect();
        let scheduled = self
            .catalog
            .scheduled(|t| owned.contains(&(partition_for_key(t.as_str().as_bytes(), n) as i32)));
        let grace = Duration::milliseconds(self.settings.misfire_grace_ms as i64);
        let mut next_due: Option<DateTime<Utc>> = None;
        for version in scheduled {
            let tenant = version.record.tenant.clone();
            let workflow = version.record.workflow.clone();
            let p = partition_for_key(tenant.as_str().as_bytes(), n) as i32;
            for (idx, cron) in version
                .workflow
                .definition()
                .triggers
                .cron
                .iter()
                .enumerate()
            {
                let key = (tenant.clone(), workflow.clone(), idx as u32);
                let Some(st) = self.parts.get_mut(&p) else {
                    continue;
                };
                let stored = st.cron.get(&key).cloned();
                // A schedule counts from the moment its version was accepted.
                let mut cursor = stored.clone().unwrap_or(CronCursor {
                    last_tick: version.record.created_at,
                    last_run: None,
                    fired_at: None,
                });
                let mut fired = 0u32;
                while let Some(mut tick) =
                    aiq_engine::cron::next_tick(&cron.schedule, &cron.timezone, cursor.last_tick)
                {
                    if tick > now {
                        break;
                    }
                    if now - tick > grace && cron.misfire != MisfirePolicy::FireAll {
                        // Missed while down: jump to the last missed tick and skip it, or
                        // fire only it.
                        let last_missed = aiq_engine::cron::prev_tick(
                            &cron.schedule,
                            &cron.timezone,
                            now - grace - Duration::milliseconds(1),
                        )
                        .filter(|t| *t >= tick)
                        .unwrap_or(tick);
                        if cron.misfire == MisfirePolicy::Skip {
                            cursor.last_tick = last_missed;
                            continue;
                        }
                        tick = last_missed;
                    }
                    // The run fired for the previous tick: its trigger not consumed back
                    // yet (fired earlier in this very pass, say), queued or running.
                    let previous_active = cursor.last_run.is_some_and(|r| {
                        cursor.fired_at.is_some()
                            || st.runs.contains_key(&r)
                            || st.queued.contains_key(&r)
                    });
                    if previous_active && cron.overlap == OverlapPolicy::Queue {
                        break;
                    }
                    cursor.last_tick = tick;
                    if previous_active && cron.overlap == OverlapPolicy::Skip {
                        continue;
                    }
                    let mut trigger = TriggerEvent::new(
                        tenant.clone(),
                        workflow.clone(),
                        TriggerSource::Cron,
                        cron.input.clone(),
                    );
                    trigger.idempotency_key = Some(format!("cron/{idx}/{}", tick.to_rfc3339()));
                    trigger.occurred_at = Some(tick);
                    let run = trigger.run_id(p, 0);
                    trigger.run_id = Some(run);
                    cursor.last_run = Some(run);
                    cursor.fired_at = Some(now);
                    self.out.push(Output::Trigger {
                        partition: p,
                        trigger,
                    });
                    fired += 1;
                    if fired >= self.settings.misfire_max_ticks.max(1) {
                        break;
                    }
                }
                if stored.as_ref() != Some(&cursor) {
                    st.cron.insert(key.clone(), cursor.clone());
                    self.dirty.insert((p, EntryKey::Cron(key.0, key.1, key.2)));
                }
                if let Some(next) =
                    aiq_engine::cron::next_tick(&cron.schedule, &cron.timezone, cursor.last_tick)
                {
                    next_due = Some(next_due.map_or(next, |d: DateTime<Utc>| d.min(next)));
                }
            }
        }
        next_due
    }

    /// A trigger a schedule fired was consumed back (its run started, queued, was a
    /// duplicate or went to the dead-letter topic): the schedule's run is no longer on
    /// its way, and from now on is active only while queued or running.
    pub(super) fn cron_trigger_arrived(
        &mut self,
        p: i32,
        key: (TenantId, WorkflowId, u32),
        run: RunId,
    ) {
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        if let Some(cursor) = st.cron.get_mut(&key)
            && cursor.last_run == Some(run)
            && cursor.fired_at.is_some()
        {
            cursor.fired_at = None;
            self.dirty.insert((p, EntryKey::Cron(key.0, key.1, key.2)));
        }
    }
}

/// The schedule (cursor key) that fired a cron trigger: its idempotency key is
/// `cron/<n>/<tick>`.
pub(super) fn cron_schedule_of(t: &TriggerEvent) -> Option<(TenantId, WorkflowId, u32)> {
    if t.source != TriggerSource::Cron {
        return None;
    }
    let (idx, _) = t
        .idempotency_key
        .as_deref()?
        .strip_prefix("cron/")?
        .split_once('/')?;
    Some((t.tenant.clone(), t.workflow.clone(), idx.parse().ok()?))
}
