//! The changelog side of the core: taking a partition over from its entries, forgetting
//! it, and the entries a batch changed (coalesced: once per key, at its latest value).

use super::admission::enqueue;
use super::state::{PartitionState, StoredRun, inflight_of};
use super::{ChangelogWrite, Core};
use crate::changelog::{Entry, EntryKey};

impl Core {
    /// Takes over a partition from its changelog: `entries` are the latest value of
    /// each key, decoded, in any order (the reader skips what does not decode). An
    /// entry of the wrong kind for its key is logged and skipped.
    pub fn restore(&mut self, partition: i32, entries: Vec<(EntryKey, Entry)>) {
        let mut st = PartitionState::default();
        let mut queued = Vec::new();
        let mut live_runs = Vec::new();
        for (key, entry) in entries {
            match (key, entry) {
                (EntryKey::Held(tenant, run, step, attempt), Entry::Held(h)) => {
                    st.next_seq = st.next_seq.max(h.seq + 1);
                    st.held_index.insert((run, step, attempt), h.seq);
                    st.held.entry(tenant).or_default().insert(h.seq, h);
                }
                (EntryKey::Run(_, run), Entry::Run(live)) => {
                    let live = *live;
                    for (id, t) in &live.state.timers {
                        st.timers.insert((t.due, run, id.clone()));
                    }
                    st.running.add(&live.state.tenant, &live.state.workflow);
                    live_runs.push((
                        run,
                        inflight_of(&live.state),
                        live.state.tenant.clone(),
                        live.state.workflow.clone(),
                    ));
                    st.runs.insert(run, StoredRun::new(live));
                }
                (EntryKey::Run(_, run), Entry::Finished(f)) => {
                    st.finished.insert(run, f);
                }
                (EntryKey::Queued(..), Entry::Queued(q)) => queued.push(q),
                (EntryKey::Cron(t, w, i), Entry::Cron(c)) => {
                    st.cron.insert((t, w, i), c);
                }
                (EntryKey::Early(..), Entry::Early(e)) => {
                    st.next_seq = st.next_seq.max(e.seq + 1);
                    st.early.insert(e);
                }
                (key, _) => {
                    tracing::warn!(
                        key = key.encode(),
                        "changelog entry of the wrong kind; skipped"
                    );
                }
            }
        }
        // Dispatched = what the engine waits for, less what still waits for a slot.
        for (run, tasks, tenant, workflow) in live_runs {
            for (step, attempt) in tasks {
                if !st.held_index.contains_key(&(run, step, attempt)) {
                    st.tasks.add(&tenant, &workflow);
                }
            }
        }
        queued.sort_by_key(|q| q.seq);
        for q in queued {
            st.next_seq = st.next_seq.max(q.seq + 1);
            enqueue(&mut st, q);
        }
        self.parts.insert(partition, st);
    }

    /// Forgets a partition (revoked, or about to be restored again).
    pub fn drop_partition(&mut self, partition: i32) {
        self.parts.remove(&partition);
        self.dirty.retain(|(p, _)| *p != partition);
    }

    /// Forgets every write not yet taken: the transaction they belonged to was aborted.
    pub fn discard_pending(&mut self) {
        self.dirty.clear();
        self.out.clear();
        self.causes.clear();
    }

    /// Whether state changed since the last `take_changelog` (a cursor moved, a
    /// finished run expired) — work that must be committed even without any output.
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The current value of every entry changed since the last call, once per key.
    pub fn take_changelog(&mut self) -> Vec<ChangelogWrite> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|(p, key)| {
                let st = self.parts.get(&p)?;
                let value = match &key {
                    EntryKey::Run(_, run) => {
                        if let Some(stored) = st.runs.get(run) {
                            return Some(ChangelogWrite {
                                partition: p,
                                key: key.encode(),
                                value: Some(stored.entry.to_vec()),
                            });
                        }
                        st.finished.get(run).cloned().map(Entry::Finished)
                    }
                    EntryKey::Queued(t, run) => st
                        .queued
                        .get(run)
                        .and_then(|(_, w)| st.queues.get(t)?.get(w))
                        .and_then(|q| q.iter().find(|q| q.run == *run))
                        .cloned()
                        .map(Entry::Queued),
                    EntryKey::Held(t, run, step, attempt) => st
                        .held_index
                        .get(&(*run, step.clone(), *attempt))
                        .and_then(|seq| st.held.get(t)?.get(seq))
                        .cloned()
                        .map(Entry::Held),
                    EntryKey::Cron(t, w, i) => st
                        .cron
                        .get(&(t.clone(), w.clone(), *i))
                        .cloned()
                        .map(Entry::Cron),
                    EntryKey::Early(_, _, seq) => st.early.all.get(seq).cloned().map(Entry::Early),
                };
                Some(ChangelogWrite {
                    partition: p,
                    key: key.encode(),
                    value: value.map(|v| v.encode()),
                })
            })
            .collect()
    }
}
