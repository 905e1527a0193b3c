//! Which offsets may be committed: a partition's committable offset is the first one
//! whose task has not finished, so a crash redoes unfinished tasks, never skips them.
//! The worker hands each changed one to librdkafka's offset store, whose auto-commit
//! sends what moved (and retries what failed) for the partitions still assigned.
//!
//! Only partitions of the tasks topic this worker owns are tracked (the worker reads
//! that one topic, so a partition number names one). Once a partition is revoked its
//! state is dropped, and the tasks it had in flight no longer count when they finish:
//! their results are still written (at least once), but another worker owns the
//! offsets now and this one must never commit them. Each assignment of a partition is
//! a new epoch; a task's [`Ticket`] carries the epoch it started in.

use std::collections::{BTreeSet, HashMap};

/// One task's place: the partition and offset it was read from, and in which
/// assignment of that partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    partition: i32,
    offset: i64,
    /// [`NOT_OWNED`] for a record of a partition that is not assigned.
    epoch: u64,
}

const NOT_OWNED: u64 = 0;

struct Part {
    epoch: u64,
    in_flight: BTreeSet<i64>,
    /// The next offset after the highest one seen in this epoch.
    seen_to: Option<i64>,
    /// The offset last handed over to be committed, unless that failed.
    handed_over: Option<i64>,
}

impl Part {
    fn committable(&self) -> Option<i64> {
        self.in_flight.first().copied().or(self.seen_to)
    }
}

pub struct Pending {
    parts: HashMap<i32, Part>,
    last_epoch: u64,
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            parts: HashMap::new(),
            last_epoch: NOT_OWNED,
        }
    }
}

impl Pending {
    /// Makes the owned partitions exactly `assigned`: new ones start a fresh epoch,
    /// ones no longer there are dropped without a commit.
    pub fn set_assignment(&mut self, assigned: &[i32]) {
        self.parts.retain(|p, _| assigned.contains(p));
        for &p in assigned {
            if !self.parts.contains_key(&p) {
                self.last_epoch += 1;
                self.parts.insert(
                    p,
                    Part {
                        epoch: self.last_epoch,
                        in_flight: BTreeSet::new(),
                        seen_to: None,
                        handed_over: None,
                    },
                );
            }
        }
    }

    /// Drops `revoked`, returning the offsets the partitions among them had reached
    /// and not yet handed over: the last chance to commit them, while still owned.
    pub fn revoke(&mut self, revoked: &[i32]) -> Vec<(i32, i64)> {
        revoked
            .iter()
            .filter_map(|p| {
                let part = self.parts.remove(p)?;
                let o = part.committable()?;
                (part.handed_over != Some(o)).then_some((*p, o))
            })
            .collect()
    }

    /// A task read at `offset` starts. A record of a partition not owned (it cannot
    /// happen with the rebalance callbacks in place) is run but never committed.
    pub fn started(&mut self, partition: i32, offset: i64) -> Ticket {
        let epoch = match self.parts.get_mut(&partition) {
            Some(part) => {
                part.in_flight.insert(offset);
                part.seen_to = Some(part.seen_to.map_or(offset + 1, |s| s.max(offset + 1)));
                part.epoch
            }
            None => {
                tracing::debug!(partition, offset, "task of a partition not assigned");
                NOT_OWNED
            }
        };
        Ticket {
            partition,
            offset,
            epoch,
        }
    }

    /// The task has its result (or dead letter) acknowledged. Ignored if its partition
    /// was revoked since it started.
    pub fn finished(&mut self, t: Ticket) {
        if let Some(part) = self.parts.get_mut(&t.partition)
            && part.epoch == t.epoch
        {
            part.in_flight.remove(&t.offset);
        }
    }

    /// (partition, offset) to commit for every owned partition whose committable
    /// offset changed since it was last handed over; those count as handed over.
    pub fn take_changed(&mut self) -> Vec<(i32, i64)> {
        self.parts
            .iter_mut()
            .filter_map(|(p, part)| {
                let o = part.committable()?;
                if part.handed_over == Some(o) {
                    return None;
                }
                part.handed_over = Some(o);
                Some((*p, o))
            })
            .collect()
    }

    /// Handing `offset` over failed: offer it again next time, unless the partition
    /// moved on (or away) meanwhile.
    pub fn hand_over_failed(&mut self, partition: i32, offset: i64) {
        if let Some(part) = self.parts.get_mut(&partition)
            && part.handed_over == Some(offset)
        {
            part.handed_over = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<(i32, i64)>) -> Vec<(i32, i64)> {
        v.sort_unstable();
        v
    }

    #[test]
    fn commits_stop_at_the_first_unfinished_task() {
        let mut p = Pending::default();
        p.set_assignment(&[0]);
        let t: Vec<Ticket> = (10..15).map(|o| p.started(0, o)).collect();
        p.finished(t[0]);
        p.finished(t[2]);
        assert_eq!(p.take_changed(), vec![(0, 11)]);
        p.finished(t[1]);
        p.finished(t[3]);
        p.finished(t[4]);
        assert_eq!(p.take_changed(), vec![(0, 15)]);
    }

    #[test]
    fn only_offsets_that_moved_are_committed_again() {
        let mut p = Pending::default();
        p.set_assignment(&[0, 1, 2]);
        assert!(
            p.take_changed().is_empty(),
            "nothing read, nothing to commit"
        );
        let a = p.started(0, 5);
        let b = p.started(1, 7);
        assert_eq!(sorted(p.take_changed()), vec![(0, 5), (1, 7)]);
        assert!(p.take_changed().is_empty());
        p.finished(a);
        assert_eq!(p.take_changed(), vec![(0, 6)]);
        assert!(p.take_changed().is_empty());
        // What failed to be handed over is offered again; a stale failure is ignored.
        p.hand_over_failed(0, 6);
        p.hand_over_failed(1, 3);
        assert_eq!(p.take_changed(), vec![(0, 6)]);
        p.finished(b);
        p.hand_over_failed(1, 7);
        assert_eq!(p.take_changed(), vec![(1, 8)]);
    }

    #[test]
    fn a_revoked_partition_is_never_committed_again() {
        let mut p = Pending::default();
        p.set_assignment(&[0, 1]);
        let done = p.started(0, 3);
        let running = p.started(0, 4);
        let other = p.started(1, 9);
        p.finished(done);
        assert_eq!(sorted(p.take_changed()), vec![(0, 4), (1, 9)]);
        let late = p.started(1, 10);
        p.finished(other);
        // Revocation hands over what was reached and not committed yet, once.
        assert_eq!(sorted(p.revoke(&[0, 1])), vec![(1, 10)]);
        assert!(p.revoke(&[0, 1]).is_empty());
        // Tasks that were running finish later: nothing to commit for them.
        p.finished(running);
        p.finished(late);
        assert!(p.take_changed().is_empty());
        // A record of a partition not assigned runs, but is never committed.
        let stray = p.started(2, 1);
        p.finished(stray);
        assert!(p.take_changed().is_empty());
    }

    #[test]
    fn a_reassigned_partition_ignores_the_tasks_of_its_earlier_assignment() {
        let mut p = Pending::default();
        p.set_assignment(&[0]);
        let old_20 = p.started(0, 20);
        let old_21 = p.started(0, 21);
        p.set_assignment(&[]);
        // The partition comes back, redelivered from the committed offset 20.
        p.set_assignment(&[0]);
        let new_20 = p.started(0, 20);
        let _new_21 = p.started(0, 21);
        p.finished(old_20);
        p.finished(old_21);
        assert_eq!(
            p.take_changed(),
            vec![(0, 20)],
            "the redelivered 20 still runs"
        );
        p.finished(new_20);
        assert_eq!(p.take_changed(), vec![(0, 21)]);
    }

    #[test]
    fn setting_the_assignment_keeps_partitions_still_owned() {
        let mut p = Pending::default();
        p.set_assignment(&[0, 1]);
        let kept = p.started(0, 1);
        let dropped = p.started(1, 1);
        p.set_assignment(&[0, 2]);
        p.finished(kept);
        p.finished(dropped);
        assert_eq!(p.take_changed(), vec![(0, 2)]);
    }
}
