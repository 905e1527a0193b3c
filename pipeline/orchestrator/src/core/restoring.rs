//! Taking a partition over from its changelog, one record at a time as the reader
//! streams them: each value is decoded once, as it arrives, into what the partition
//! keeps of it (a run stays the encoded bytes it was read as, beside the few fields its
//! indexes need), and a later value or a tombstone of the same key replaces it. Nothing
//! holds the raw partition, so a restore needs about the memory the restored state
//! does, not that plus a copy of the topic.

use std::collections::{BTreeSet, HashMap};

use aiq_topics::{QueueState, RunId, StepId, TenantId, WorkflowId};
use chrono::{DateTime, Utc};

use super::Core;
use super::admission::enqueue;
use super::state::{PartitionState, StoredRun, inflight_of};
use crate::changelog::{
    CronCursor, EarlySignal, Entry, EntryKey, FinishedRun, HeldTask, MarkerChunk, QueuedRun,
};

/// A run in flight as read back: its bytes, and what the indexes need of it.
struct RestoredRun {
    tenant: TenantId,
    workflow: WorkflowId,
    timers: Vec<(DateTime<Utc>, String)>,
    inflight: BTreeSet<(StepId, u32)>,
    /// When a failed run kept for redrive ended; None for a run in flight.
    ended: Option<DateTime<Utc>>,
    entry: Box<[u8]>,
}

/// The latest value of every key read so far.
#[derive(Default)]
struct Latest {
    runs: HashMap<RunId, RestoredRun>,
    /// Written by builds before finished runs became marker chunks: rewritten as chunks
    /// (and their run entries tombstoned) by the first commit after the restore.
    legacy_finished: HashMap<RunId, FinishedRun>,
    queued: HashMap<RunId, QueuedRun>,
    held: HashMap<(RunId, StepId, u32), (TenantId, HeldTask)>,
    cron: HashMap<(TenantId, WorkflowId, u32), CronCursor>,
    early: HashMap<(RunId, u64), EarlySignal>,
    markers: HashMap<(i64, u64), MarkerChunk>,
}

/// A partition being restored: fed every changelog record in offset order, then handed
/// to [`Core::finish_restore`].
pub struct PartitionRestore {
    partition: i32,
    latest: Latest,
    records: u64,
    skipped: u64,
}

impl PartitionRestore {
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Records applied, and records skipped because their key or value did not decode.
    pub fn counts(&self) -> (u64, u64) {
        (self.records, self.skipped)
    }

    /// Applies one changelog record: `value` `None` is a tombstone. A key or value that
    /// does not decode, or a value of the wrong kind for its key, is logged and skipped.
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.records += 1;
        let key = match EntryKey::decode(key) {
            Ok(k) => k,
            Err(e) => return self.skip(&e.to_string()),
        };
        let Some(bytes) = value else {
            self.remove(&key);
            return;
        };
        let entry = match Entry::decode(bytes) {
            Ok(e) => e,
            Err(e) => return self.skip(&format!("{}: {e}", key.encode())),
        };
        let l = &mut self.latest;
        match (key, entry) {
            (EntryKey::Run(_, run), Entry::Run(live)) => {
                l.legacy_finished.remove(&run);
                let state = &live.state;
                l.runs.insert(
                    run,
                    RestoredRun {
                        tenant: state.tenant.clone(),
                        workflow: state.workflow.clone(),
                        timers: state
                            .timers
                            .iter()
                            .map(|(id, t)| (t.due, id.clone()))
                            .collect(),
                        inflight: inflight_of(state),
                        ended: state
                            .is_terminal()
                            .then(|| state.finished_at.unwrap_or(DateTime::<Utc>::MIN_UTC)),
                        entry: bytes.into(),
                    },
                );
            }
            (EntryKey::Run(_, run), Entry::Finished(f)) => {
                l.runs.remove(&run);
                l.legacy_finished.insert(run, f);
            }
            (EntryKey::Queued(_, run), Entry::Queued(q)) => {
                l.queued.insert(run, q);
            }
            (EntryKey::Held(t, run, step, attempt), Entry::Held(h)) => {
                l.held.insert((run, step, attempt), (t, h));
            }
            (EntryKey::Cron(t, w, i), Entry::Cron(c)) => {
                l.cron.insert((t, w, i), c);
            }
            (EntryKey::Early(_, run, seq), Entry::Early(e)) => {
                l.early.insert((run, seq), e);
            }
            (EntryKey::Finished(bucket, seq), Entry::Markers(m)) => {
                l.markers.insert((bucket, seq), m);
            }
            (key, _) => self.skip(&format!(
                "changelog entry of the wrong kind for {}",
                key.encode()
            )),
        }
    }

    fn remove(&mut self, key: &EntryKey) {
        let l = &mut self.latest;
        match key {
            EntryKey::Run(_, run) => {
                l.runs.remove(run);
                l.legacy_finished.remove(run);
            }
            EntryKey::Queued(_, run) => {
                l.queued.remove(run);
            }
            EntryKey::Held(_, run, step, attempt) => {
                l.held.remove(&(*run, step.clone(), *attempt));
            }
            EntryKey::Cron(t, w, i) => {
                l.cron.remove(&(t.clone(), w.clone(), *i));
            }
            EntryKey::Early(_, run, seq) => {
                l.early.remove(&(*run, *seq));
            }
            EntryKey::Finished(bucket, seq) => {
                l.markers.remove(&(*bucket, *seq));
            }
        }
    }

    fn skip(&mut self, why: &str) {
        self.skipped += 1;
        tracing::error!(partition = self.partition, why, "changelog record skipped");
    }
}

impl Core {
    /// Starts taking over `partition`; feed it the changelog, then `finish_restore`.
    pub fn begin_restore(&self, partition: i32) -> PartitionRestore {
        PartitionRestore {
            partition,
            latest: Latest::default(),
            records: 0,
            skipped: 0,
        }
    }

    /// Takes over a partition from entries already decoded (the latest value of each
    /// key, in any order): for tests and tools.
    pub fn restore(&mut self, partition: i32, entries: Vec<(EntryKey, Entry)>) {
        let mut r = self.begin_restore(partition);
        for (key, entry) in entries {
            r.apply(key.encode().as_bytes(), Some(&entry.encode()));
        }
        self.finish_restore(r, DateTime::<Utc>::MIN_UTC);
    }

    /// Replaces the partition's state with what `r` read, and builds its indexes. The
    /// state of every non-empty queue is announced again (`now` dates it): the limit may
    /// have changed since it was last announced.
    pub fn finish_restore(&mut self, r: PartitionRestore, now: DateTime<Utc>) {
        let p = r.partition;
        let l = r.latest;
        let mut st = PartitionState::new(self.settings.finished_run_retention_secs);
        for ((run, step, attempt), (tenant, h)) in l.held {
            st.next_seq = st.next_seq.max(h.seq + 1);
            st.held_index.insert((run, step, attempt), h.seq);
            st.held.entry(tenant).or_default().insert(h.seq, h);
        }
        let max_kept = self.settings.redrive_max_runs;
        for (run, r) in l.runs {
            if let Some(ended) = r.ended {
                let kept = StoredRun {
                    tenant: r.tenant,
                    entry: r.entry,
                };
                for (t, pushed) in st.redrivable.insert(run, ended, kept, max_kept) {
                    self.dirty.insert((p, EntryKey::Run(t, pushed)));
                }
                continue;
            }
            for (due, id) in r.timers {
                st.timers.insert((due, run, id));
            }
            st.running.add(&r.tenant, &r.workflow);
            // Dispatched = what the engine waits for, less what still waits for a slot.
            for (step, attempt) in r.inflight {
                if !st.held_index.contains_key(&(run, step, attempt)) {
                    st.tasks.add(&r.tenant, &r.workflow);
                }
            }
            st.runs.insert(
                run,
                StoredRun {
                    tenant: r.tenant,
                    entry: r.entry,
                },
            );
        }
        for ((bucket, seq), chunk) in l.markers {
            st.next_seq = st.next_seq.max(seq + 1);
            st.finished.restore_chunk(bucket, seq, chunk);
        }
        for (key, c) in l.cron {
            st.cron.insert(key, c);
        }
        for (_, e) in l.early {
            st.next_seq = st.next_seq.max(e.seq + 1);
            st.early.insert(e);
        }
        let mut queued: Vec<QueuedRun> = l.queued.into_values().collect();
        queued.sort_by_key(|q| q.seq);
        for q in queued {
            st.next_seq = st.next_seq.max(q.seq + 1);
            enqueue(&mut st, &q);
        }
        self.drop_partition(p);
        for (run, f) in l.legacy_finished {
            st.finished.record(run, &f.tenant, f.status, f.finished_at);
            self.dirty.insert((p, EntryKey::Run(f.tenant, run)));
        }
        let tenants: Vec<TenantId> = st.queued_by_tenant.keys().cloned().collect();
        self.parts.insert(p, st);
        for tenant in tenants {
            let max = self.quota_for(&tenant).max_queued_runs;
            let queued = self
                .parts
                .get(&p)
                .map_or(0, |st| st.queued_of(&tenant) as u64);
            // In the band between 95% and 100% the flag depends on the way there: full
            // is the side that cannot accept a run the orchestrator would set aside.
            let full = queued > QueueState::clear_at(max) || queued >= u64::from(max);
            self.announce_queue(p, &tenant, full, now);
        }
    }
}
