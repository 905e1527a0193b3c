//! Which offsets may be committed: a partition's committable offset is the first one
//! whose task has not finished, so a crash redoes unfinished tasks, never skips them.

use std::collections::{BTreeSet, HashMap};

#[derive(Default)]
pub struct Pending {
    in_flight: HashMap<(String, i32), BTreeSet<i64>>,
    /// The next offset after the highest one seen, per partition.
    seen_to: HashMap<(String, i32), i64>,
}

impl Pending {
    pub fn started(&mut self, topic: &str, partition: i32, offset: i64) {
        let key = (topic.to_owned(), partition);
        self.in_flight
            .entry(key.clone())
            .or_default()
            .insert(offset);
        let next = self.seen_to.entry(key).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }

    pub fn finished(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(s) = self.in_flight.get_mut(&(topic.to_owned(), partition)) {
            s.remove(&offset);
        }
    }

    /// (topic, partition, offset to commit) for every partition seen.
    pub fn committable(&self) -> Vec<(String, i32, i64)> {
        self.seen_to
            .iter()
            .map(|((t, p), next)| {
                let first_open = self
                    .in_flight
                    .get(&(t.clone(), *p))
                    .and_then(|s| s.first().copied());
                (t.clone(), *p, first_open.unwrap_or(*next))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_stop_at_the_first_unfinished_task() {
        let mut p = Pending::default();
        for o in 10..15 {
            p.started("tasks", 0, o);
        }
        p.finished("tasks", 0, 10);
        p.finished("tasks", 0, 12);
        assert_eq!(p.committable(), vec![("tasks".into(), 0, 11)]);
        p.finished("tasks", 0, 11);
        p.finished("tasks", 0, 13);
        p.finished("tasks", 0, 14);
        assert_eq!(p.committable(), vec![("tasks".into(), 0, 15)]);
    }
}
