//! Memory: one DataFusion pool for every query of the process, and one query's share of it.
//!
//! The process pool is a `FairSpillPool` of `memory_pool_bytes`: spilling operators
//! (sorts, aggregates) of all running queries get equal shares of it, and what one query
//! holds is taken from what the others could use. Each query reaches it through a
//! [`QueryPool`] that also stops the query at `memory_limit_bytes`, so one query cannot
//! take the whole process pool either.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// One query's view of the process pool: at most `limit` bytes of it.
#[derive(Debug)]
pub(crate) struct QueryPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl QueryPool {
    pub fn new(shared: Arc<dyn MemoryPool>, limit: usize) -> QueryPool {
        QueryPool {
            shared,
            limit,
            used: AtomicUsize::new(0),
        }
    }
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "query pool ({} of {} bytes, within {})",
            self.used.load(Ordering::Relaxed),
            self.limit,
            self.shared
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        self.shared.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        // Never below zero, whatever a consumer reports.
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(shrink))
            });
        self.shared.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let taken = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                u.checked_add(additional).filter(|n| *n <= self.limit)
            });
        if taken.is_err() {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{} asked for {additional} bytes more, past the {} bytes one query may hold \
                 (analytics.memory_limit_bytes)",
                reservation.consumer().name(),
                self.limit
            )));
        }
        self.shared.try_grow(reservation, additional).map_err(|e| {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            match e {
                DataFusionError::ResourcesExhausted(m) => {
                    DataFusionError::ResourcesExhausted(format!(
                        "the memory all queries share (analytics.memory_pool_bytes) is taken: {m}"
                    ))
                }
                e => e,
            }
        })
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn queries_take_from_one_pool_and_each_stops_at_its_own_limit() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(10 * MIB));
        let q1: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(Arc::clone(&shared), 8 * MIB));
        let q2: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(Arc::clone(&shared), 8 * MIB));
        let r1 = MemoryConsumer::new("join").register(&q1);
        let r2 = MemoryConsumer::new("sort").register(&q2);

        r1.try_grow(6 * MIB).unwrap();
        assert_eq!((q1.reserved(), shared.reserved()), (6 * MIB, 6 * MIB));
        // Within its own limit, but the process pool has 4 MiB left.
        let e = r2.try_grow(6 * MIB).unwrap_err().to_string();
        assert!(e.contains("analytics.memory_pool_bytes"), "{e}");
        assert_eq!(q2.reserved(), 0);
        // Past its own limit, though the pool would have room.
        let e = r1.try_grow(3 * MIB).unwrap_err().to_string();
        assert!(
            e.contains("analytics.memory_limit_bytes") && e.contains("join"),
            "{e}"
        );

        r1.shrink(4 * MIB);
        r2.try_grow(6 * MIB).unwrap();
        assert_eq!(shared.reserved(), 8 * MIB);
        drop(r1);
        drop(r2);
        assert_eq!((q1.reserved(), q2.reserved(), shared.reserved()), (0, 0, 0));
    }
}
