//! Which offsets may be committed. A partition's offset moves only once every record
//! before it is in the store and handed to the Parquet writer, and is committed only
//! after the Parquet files are flushed. Each assignment of a partition is a new epoch:
//! records read in an earlier one never move the offset of a later one.

use std::collections::HashMap;

/// The topics the sink reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Events,
    Audit,
    DeadLetters,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Events => "events",
            Source::Audit => "audit",
            Source::DeadLetters => "dead_letters",
        }
    }
}

pub type Tp = (Source, i32);

#[derive(Debug)]
struct Part {
    epoch: u64,
    /// The offset after the last record fully written in this epoch.
    done: Option<i64>,
    /// The group's committed offset, as read at assignment or last committed here.
    committed: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Progress {
    parts: HashMap<Tp, Part>,
    last_epoch: u64,
}

/// An offset to commit, and the epoch it was reached in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToCommit {
    pub tp: Tp,
    pub offset: i64,
    epoch: u64,
}

impl Progress {
    /// `tp` is (newly) assigned, with the group's committed offset.
    pub fn assign(&mut self, tp: Tp, committed: Option<i64>) {
        self.last_epoch += 1;
        self.parts.insert(
            tp,
            Part {
                epoch: self.last_epoch,
                done: None,
                committed,
            },
        );
    }

    /// Owns exactly `assigned`: others are dropped, missing ones start a fresh epoch.
    pub fn set_assignment(&mut self, assigned: &[Tp]) {
        self.parts.retain(|tp, _| assigned.contains(tp));
        for &tp in assigned {
            if !self.parts.contains_key(&tp) {
                self.assign(tp, None);
            }
        }
    }

    pub fn epoch(&self, tp: Tp) -> Option<u64> {
        self.parts.get(&tp).map(|p| p.epoch)
    }

    pub fn is_current(&self, tp: Tp, epoch: u64) -> bool {
        self.epoch(tp) == Some(epoch)
    }

    /// Every record of `tp` before `next` is written (ignored for a past epoch).
    pub fn done(&mut self, tp: Tp, epoch: u64, next: i64) {
        if let Some(p) = self.parts.get_mut(&tp)
            && p.epoch == epoch
        {
            p.done = Some(p.done.map_or(next, |d| d.max(next)));
        }
    }

    /// Offsets that moved past what is committed. A partition re-read from before its
    /// committed offset (to rebuild a Parquet window) commits nothing until it passes
    /// it, so the committed offset never moves backwards.
    pub fn to_commit(&self) -> Vec<ToCommit> {
        self.parts
            .iter()
            .filter_map(|(&tp, p)| {
                let done = p.done?;
                (p.committed.is_none_or(|c| done > c)).then_some(ToCommit {
                    tp,
                    offset: done,
                    epoch: p.epoch,
                })
            })
            .collect()
    }

    /// `offsets` are committed.
    pub fn committed(&mut self, offsets: &[ToCommit]) {
        for c in offsets {
            if let Some(p) = self.parts.get_mut(&c.tp)
                && p.epoch == c.epoch
            {
                p.committed = Some(p.committed.map_or(c.offset, |o| o.max(c.offset)));
            }
        }
    }

    /// Drops `revoked`, returning what they reached and did not commit: the last chance
    /// to commit it, while still owned.
    pub fn revoke(&mut self, revoked: &[Tp]) -> Vec<ToCommit> {
        let out = self
            .to_commit()
            .into_iter()
            .filter(|c| revoked.contains(&c.tp))
            .collect();
        self.parts.retain(|tp, _| !revoked.contains(tp));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E0: Tp = (Source::Events, 0);
    const A1: Tp = (Source::Audit, 1);

    #[test]
    fn a_rebuilt_window_never_commits_backwards() {
        let mut p = Progress::default();
        p.assign(E0, Some(100));
        let e = p.epoch(E0).unwrap();
        // Re-reading from 50 to rebuild the open Parquet window.
        p.done(E0, e, 60);
        assert!(p.to_commit().is_empty());
        p.done(E0, e, 101);
        let c = p.to_commit();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].offset, 101);
        p.committed(&c);
        assert!(p.to_commit().is_empty());
    }

    #[test]
    fn records_of_an_earlier_assignment_do_not_count() {
        let mut p = Progress::default();
        p.set_assignment(&[E0, A1]);
        let old = p.epoch(A1).unwrap();
        assert_eq!(p.revoke(&[A1]), vec![]);
        p.set_assignment(&[E0, A1]);
        p.done(A1, old, 9);
        assert!(p.to_commit().is_empty());
        let new = p.epoch(A1).unwrap();
        assert!(!p.is_current(A1, old) && p.is_current(A1, new));
        p.done(A1, new, 4);
        let last = p.revoke(&[A1]);
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].offset, 4);
        assert_eq!(p.epoch(A1), None);
        assert!(p.epoch(E0).is_some());
    }
}
