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
        self.fire_cron_up_to(now, usize::MAX).0
    }

    /// As [`Core::fire_cron`], handling at most `max` due ticks (fired, or skipped by a
    /// policy): after downtime a `fire_all` backlog over many schedules is worked off
    /// over several transactions. Returns when the next tick is due (`now` when the
    /// budget ran out with ticks left) and how many ticks were handled.
    pub fn fire_cron_up_to(
        &mut self,
        now: DateTime<Utc>,
        max: usize,
    ) -> (Option<DateTime<Utc>>, usize) {
        let n = self.tenant_partitions as u32;
        let owned: HashSet<i32> = self.parts.keys().copied().collect();
        // A suspended tenant's schedules are paused: their ticks pass as missed, and
        // on resume each schedule's misfire policy decides what the gap fires.
        let scheduled = self.catalog.scheduled(|t| {
            owned.contains(&(partition_for_key(t.as_str().as_bytes(), n) as i32))
                && !self.tenants.is_suspended(t)
        });
        let grace = Duration::milliseconds(self.settings.misfire_grace_ms as i64);
        let mut next_due: Option<DateTime<Utc>> = None;
        let mut handled = 0usize;
        let mut exhausted = false;
        'schedules: for version in scheduled {
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
                if handled >= max {
                    exhausted = true;
                    break 'schedules;
                }
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
                    if handled >= max {
                        exhausted = true;
                        break;
                    }
                    handled += 1;
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
        if exhausted {
            next_due = Some(now);
        }
        (next_due, handled)
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

#[cfg(test)]
mod tests {
    //! The budget only; the policies are tested in `core/tests.rs`.
    #![allow(clippy::unwrap_used)]

    use std::collections::HashSet;
    use std::sync::Arc;

    use aiq_engine::Catalog;
    use aiq_topics::DefinitionRecord;
    use serde_json::json;

    use super::*;
    use crate::settings::OrchestratorSettings;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn a_cron_backlog_is_worked_off_in_slices_each_tick_once() {
        let catalog = Catalog::default();
        for id in ["a", "b", "c"] {
            catalog
                .apply(DefinitionRecord {
                    tenant: TenantId::new("acme").unwrap(),
                    workflow: WorkflowId::new(id).unwrap(),
                    version: 1,
                    content_hash: "h".into(),
                    created_at: t0(),
                    definition: json!({"id": id,
                        "triggers": {"cron": [{"schedule": "*/10 * * * * *", "misfire": "fire_all"}]},
                        "steps": [{"id": "t", "task": {"connector": "noop"}}]}),
                })
                .unwrap();
        }
        let mut core = Core::new(
            Arc::new(OrchestratorSettings::default()),
            Arc::new(catalog),
            1,
        );
        core.restore(0, Vec::new());
        // Down for 5 minutes: 30 ticks of each of the 3 schedules are due.
        let now = t0() + Duration::seconds(305);
        let mut keys = HashSet::new();
        let mut slices = Vec::new();
        loop {
            let (next, handled) = core.fire_cron_up_to(now, 40);
            let fired: Vec<String> = core
                .take_outputs()
                .into_iter()
                .filter_map(|o| match o {
                    Output::Trigger { trigger, .. } => Some(format!(
                        "{}/{:?}",
                        trigger.workflow, trigger.idempotency_key
                    )),
                    _ => None,
                })
                .collect();
            assert_eq!(fired.len(), handled);
            keys.extend(fired);
            slices.push(handled);
            if next != Some(now) {
                assert_eq!(next, Some(t0() + Duration::seconds(310)));
                break;
            }
            assert!(slices.len() < 10, "{slices:?}");
        }
        assert_eq!(slices, [40, 40, 10]);
        assert_eq!(keys.len(), 90, "each tick fired once");
        assert_eq!(
            core.fire_cron_up_to(now, 40),
            (Some(t0() + Duration::seconds(310)), 0)
        );
    }
}
