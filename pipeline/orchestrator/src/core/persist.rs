//! The changelog side of the core: forgetting a partition, and the entries a batch
//! changed (coalesced: once per key, at its latest value). Taking a partition over is
//! `restoring`.

use std::collections::BTreeSet;

use super::state::PartitionState;
use super::{ChangelogWrite, Core};

/// A partition's state held outside the core while its partition is not assigned: the
/// runner keeps it across a rebalance that gives the partition back, so it is not
/// restored again.
pub struct Parked(PartitionState);
use crate::changelog::{Entry, EntryKey};

impl Core {
    /// The partitions whose state holds changes not yet committed (after an abort they
    /// differ from the changelog and must be restored, not kept).
    pub fn touched(&self) -> BTreeSet<i32> {
        let mut out: BTreeSet<i32> = self.dirty.iter().map(|(p, _)| *p).collect();
        out.extend(
            self.parts
                .iter()
                .filter(|(_, s)| s.finished.has_pending())
                .map(|(p, _)| *p),
        );
        out
    }

    /// Takes a partition's state out of the core (revoked, maybe assigned back).
    pub fn park(&mut self, partition: i32) -> Option<Parked> {
        self.dirty.retain(|(p, _)| *p != partition);
        self.parts.remove(&partition).map(Parked)
    }

    /// Puts a parked partition's state back, as it was.
    pub fn unpark(&mut self, partition: i32, parked: Parked) {
        self.parts.insert(partition, parked.0);
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
        for st in self.parts.values_mut() {
            st.finished.discard_pending();
        }
    }

    /// Whether state changed since the last `take_changelog` (a cursor moved, a
    /// finished run expired) — work that must be committed even without any output.
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty() || self.parts.values().any(|s| s.finished.has_pending())
    }

    /// The current value of every entry changed since the last call, once per key, and
    /// the chunks of the runs that finished since.
    pub fn take_changelog(&mut self) -> Vec<ChangelogWrite> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut out: Vec<ChangelogWrite> = dirty
            .into_iter()
            .filter_map(|(p, key)| {
                let st = self.parts.get(&p)?;
                let bytes = |b: &[u8]| Some(b.to_vec());
                let value = match &key {
                    EntryKey::Run(_, run) => st
                        .runs
                        .get(run)
                        .or_else(|| st.redrivable.get(run))
                        .and_then(|s| bytes(&s.entry)),
                    EntryKey::Queued(_, run) => st.queued.get(run).and_then(|q| bytes(&q.entry)),
                    EntryKey::Held(t, run, step, attempt) => st
                        .held_index
                        .get(&(*run, step.clone(), *attempt))
                        .and_then(|seq| st.held.get(t)?.get(seq))
                        .cloned()
                        .map(|h| Entry::Held(h).encode()),
                    EntryKey::Cron(t, w, i) => st
                        .cron
                        .get(&(t.clone(), w.clone(), *i))
                        .cloned()
                        .map(|c| Entry::Cron(c).encode()),
                    EntryKey::Early(_, _, seq) => st
                        .early
                        .all
                        .get(seq)
                        .cloned()
                        .map(|e| Entry::Early(e).encode()),
                    // Written below as they are made; dirty only to be tombstoned.
                    EntryKey::Finished(..) => None,
                };
                Some(ChangelogWrite {
                    partition: p,
                    key: key.encode(),
                    value,
                })
            })
            .collect();
        for (p, st) in &mut self.parts {
            let mut seq = st.next_seq;
            for (bucket, chunk_seq, chunk) in st.finished.take_pending(&mut seq) {
                out.push(ChangelogWrite {
                    partition: *p,
                    key: EntryKey::Finished(bucket, chunk_seq).encode(),
                    value: Some(Entry::Markers(chunk).encode()),
                });
            }
            st.next_seq = seq;
        }
        out
    }
}
