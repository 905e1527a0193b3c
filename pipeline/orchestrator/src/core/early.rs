//! Early signals: triggers and signals are different topics, so a signal or cancel sent
//! right after its trigger can be consumed before it, and a run waiting in the quota
//! queue cannot take a signal yet. Such a record is kept (in the changelog, key
//! `tenant/early/<run>/<n>`) and applied, in arrival order, when the run appears: a
//! cancel ends a queued run at once, a signal waits until the run starts. Only one
//! whose run never appears goes to the dead letters as `unknown_run`: past
//! `early_signal_ttl_secs`, or as the oldest of a tenant past
//! `max_early_signals_per_tenant`.

use aiq_engine::Input;
use aiq_topics::{DeadLetterKind, RunId, SignalAction, SignalEvent};
use chrono::{DateTime, Duration, Utc};

use super::{Core, DeadLetter, InputTopic, Origin, Output, Record};
use crate::changelog::{EarlySignal, EntryKey};

impl Core {
    /// Keeps a signal of `rec` for its run; the tenant's oldest goes if the bound is full.
    pub(super) fn keep_early(&mut self, rec: &Record<'_>, s: SignalEvent, now: DateTime<Utc>) {
        let p = rec.partition;
        let max = self.settings.max_early_signals_per_tenant;
        if max == 0 {
            let reason = format!(
                "run {} is not in flight for tenant {:?} (early signals are off: \
                 orchestrator.max_early_signals_per_tenant = 0)",
                s.run,
                s.tenant.as_str()
            );
            self.dead_letter(rec, DeadLetterKind::UnknownRun, reason);
            return;
        }
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        let mut evicted = Vec::new();
        while st.early.count(&s.tenant) >= max {
            let Some(e) = st
                .early
                .oldest_of(&s.tenant)
                .and_then(|o| st.early.remove(o))
            else {
                break;
            };
            evicted.push(e);
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let tenant = s.tenant.clone();
        let run = s.run;
        st.early.insert(EarlySignal {
            seq,
            received_at: now,
            offset: rec.offset,
            signal: s,
        });
        self.dirty.insert((p, EntryKey::Early(tenant, run, seq)));
        for e in evicted {
            let reason = format!(
                "run {} did not appear while {max} newer signals of its tenant waited for \
                 their runs (orchestrator.max_early_signals_per_tenant)",
                e.signal.run
            );
            self.drop_early_signal(p, e, reason);
        }
    }

    /// A run was just queued: a cancel kept for it ends it now. Signals wait.
    pub(super) fn cancel_queued_early(&mut self, p: i32, run: RunId, now: DateTime<Utc>) {
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        let Some(seqs) = st.early.by_run.get(&run) else {
            return;
        };
        let cancel = seqs.iter().copied().find(|s| {
            st.early
                .all
                .get(s)
                .is_some_and(|e| matches!(e.signal.action, SignalAction::Cancel { .. }))
        });
        let Some(e) = cancel.and_then(|s| st.early.remove(s)) else {
            return;
        };
        self.dirty
            .insert((p, EntryKey::Early(e.signal.tenant.clone(), run, e.seq)));
        if let SignalAction::Cancel { reason } = e.signal.action {
            // Ends the run and sets aside the signals kept before the cancel.
            self.cancel_queued(p, run, &reason, now);
        }
    }

    /// A run just started: the signals kept for it go in, in arrival order. Should the
    /// run end on the way, the rest are what a signal for an ended run is.
    pub(super) fn deliver_early(&mut self, p: i32, run: RunId, now: DateTime<Utc>) {
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        if !st.early.by_run.contains_key(&run) {
            return;
        }
        for e in st.early.take_run(&run) {
            self.dirty
                .insert((p, EntryKey::Early(e.signal.tenant.clone(), run, e.seq)));
            let in_flight = self
                .parts
                .get(&p)
                .is_some_and(|st| st.runs.contains_key(&run));
            if !in_flight {
                let reason = format!("run {run} ended before this signal could reach it");
                self.drop_early_signal(p, e, reason);
                continue;
            }
            let input = Input::from(e.signal.action);
            // Only a record's input can ask for the definitions; the run just started
            // with its own, so they are at hand.
            let _ = self.drive(p, run, input, now, Origin::Early);
        }
    }

    /// The run ended while signals waited for it (a queued run cancelled): each goes to
    /// the dead letters, as a signal for an ended run does.
    pub(super) fn drop_early_of(&mut self, p: i32, run: RunId, why: &str) {
        let Some(st) = self.parts.get_mut(&p) else {
            return;
        };
        for e in st.early.take_run(&run) {
            let reason = format!("run {run} {why} before this signal could reach it");
            self.drop_early_signal(p, e, reason);
        }
    }

    /// Sets aside the signals whose run has not appeared within `early_signal_ttl_secs`.
    pub fn expire_early_signals(&mut self, now: DateTime<Utc>) -> usize {
        let ttl = Duration::seconds(
            i64::try_from(self.settings.early_signal_ttl_secs).unwrap_or(i64::MAX),
        );
        let partitions: Vec<i32> = self.parts.keys().copied().collect();
        let mut n = 0;
        for p in partitions {
            while let Some(st) = self.parts.get_mut(&p) {
                // Arrival order is time order (one clock per owner), so the front is oldest.
                let Some((&seq, e)) = st.early.all.first_key_value() else {
                    break;
                };
                if now - e.received_at <= ttl {
                    break;
                }
                let Some(e) = st.early.remove(seq) else {
                    break;
                };
                let reason = format!(
                    "run {} did not appear within {}s (orchestrator.early_signal_ttl_secs)",
                    e.signal.run, self.settings.early_signal_ttl_secs
                );
                self.drop_early_signal(p, e, reason);
                n += 1;
            }
        }
        n
    }

    /// Signals kept across the owned partitions, for metrics and tests.
    pub fn early_signals(&self) -> usize {
        self.parts.values().map(|s| s.early.all.len()).sum()
    }

    fn drop_early_signal(&mut self, p: i32, e: EarlySignal, reason: String) {
        tracing::warn!(partition = p, offset = e.offset, run = %e.signal.run, %reason, "early signal set aside");
        self.dirty.insert((
            p,
            EntryKey::Early(e.signal.tenant.clone(), e.signal.run, e.seq),
        ));
        self.out.push(Output::DeadLetter(dead_letter(p, e, reason)));
    }
}

/// The kept signal as the dead letter its record would have been: its bytes (re-encoded,
/// same fields) and where it was consumed.
fn dead_letter(p: i32, e: EarlySignal, reason: String) -> DeadLetter {
    DeadLetter {
        kind: DeadLetterKind::UnknownRun,
        reason,
        topic: InputTopic::Signals,
        partition: p,
        offset: e.offset,
        key: Some(e.signal.tenant.as_str().as_bytes().to_vec()),
        payload: Some(e.signal.encode()),
    }
}
