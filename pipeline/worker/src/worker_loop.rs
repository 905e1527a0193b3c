//! The worker's consume loop: bounded concurrency, results before commits.
//!
//! A record is taken only once a slot is free, so when every slot is busy the loop stops
//! polling and the backlog stays in Kafka. Rebalance callbacks (`commits.rs`) run inside
//! the consumer's `recv`, on this loop's task, which is why the loop never waits for a
//! task to finish. On a stop it lets the running tasks finish, stores what they reached
//! and leaves the group.

use std::sync::Arc;
use std::time::Duration;

use aiq_stage::StopSignal;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::WorkerError;
use crate::commits::{TaskConsumer, lock, store};
use crate::shared::Shared;
use crate::task;

/// How long a stop lets running tasks finish before abandoning them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct WorkerLoop {
    pub(crate) consumer: Arc<TaskConsumer>,
    pub(crate) shared: Arc<Shared>,
    /// One permit per task running; a record is taken only with a permit in hand.
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) max_in_flight: usize,
    /// How often finished offsets are handed to librdkafka's store.
    pub(crate) store_every: Duration,
}

impl WorkerLoop {
    /// Takes and starts tasks until a stop is asked for, then drains and leaves.
    pub(crate) async fn run(self, stop: StopSignal) -> Result<(), WorkerError> {
        let storer = self.spawn_storer();
        while let Some((permit, msg)) = self.next(&stop).await {
            self.dispatch(permit, &msg);
        }
        self.drain().await;
        storer.abort();
        let _ = storer.await;
        self.leave().await;
        Ok(())
    }

    /// Hands finished offsets to librdkafka's store every `store_every`.
    fn spawn_storer(&self) -> JoinHandle<()> {
        let (consumer, shared) = (Arc::clone(&self.consumer), Arc::clone(&self.shared));
        let every = self.store_every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                store(&consumer, &shared.pending);
            }
        })
    }

    /// A free slot and the next task record; `None` once a stop is asked for.
    async fn next(&self, stop: &StopSignal) -> Option<(OwnedSemaphorePermit, BorrowedMessage<'_>)> {
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&self.slots).acquire_owned() => p.ok()?,
                () = stop.stopped() => return None,
            };
            let msg = tokio::select! {
                m = self.consumer.recv() => m,
                () = stop.stopped() => return None,
            };
            match msg {
                Ok(m) => return Some((permit, m)),
                Err(e) => tracing::warn!(error = %e, "task consumer error"),
            }
        }
    }

    /// Starts the record's task, or sets the record aside if it holds none; its slot
    /// goes with it.
    fn dispatch(&self, permit: OwnedSemaphorePermit, msg: &BorrowedMessage<'_>) {
        let ticket = lock(&self.shared.pending).started(msg.partition(), msg.offset());
        match task::decode(msg) {
            Ok(t) => task::start(&self.shared, t, ticket, permit),
            Err(reason) => task::set_aside(&self.shared, msg, &reason, ticket, permit),
        }
    }

    /// Lets running tasks finish (bounded by their timeouts, and by `DRAIN_TIMEOUT`).
    async fn drain(&self) {
        let all = u32::try_from(self.max_in_flight.max(1)).unwrap_or(u32::MAX);
        if tokio::time::timeout(DRAIN_TIMEOUT, self.slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                "tasks still running at stop are abandoned; their offsets stay uncommitted"
            );
            self.shared.abandon.send_replace(true);
        }
    }

    /// Stores what finished and leaves the group.
    async fn leave(self) {
        store(&self.consumer, &self.shared.pending);
        let consumer = self.consumer;
        // Leave the group now, not whenever the last reference happens to go: closing
        // serves the revocation, commits what is stored and waits for that commit. It
        // blocks.
        let _ = tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
    }
}
