//! Transactional producer calls without rust-rdkafka's built-in waits.
//!
//! rust-rdkafka's `flush` (which `commit_transaction` runs first) polls the producer in
//! slices of up to 100 ms until nothing is in flight. Beside a `ThreadedProducer`,
//! whose own thread takes every delivery report, such a slice never has anything to
//! serve and runs out in full: every commit with records in flight waited 100 ms.
//! Flushing first, waiting in sleeps of a fraction of a millisecond between
//! non-blocking flush calls (a blocking slice would be the same 100 ms poll; a loop of
//! them spins on the clock), leaves the commit's own flush nothing to wait for.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use rdkafka::util::Timeout;

/// The pause between two non-blocking flush calls: short against a commit's round
/// trips, long enough not to take a core from the broker beside it.
const PAUSE: Duration = Duration::from_micros(300);

/// Waits until every record handed to `producer` is acknowledged (or failed), for at
/// most `timeout`.
pub fn flush_promptly<P, C, Part>(producer: &P, timeout: Duration) -> KafkaResult<()>
where
    P: Producer<C, Part>,
    C: rdkafka::producer::ProducerContext<Part>,
    Part: rdkafka::producer::Partitioner,
{
    let deadline = Instant::now() + timeout;
    loop {
        // Zero: librdkafka sends what lingers at once and answers whether anything is
        // still in flight, without polling.
        match producer.flush(Timeout::After(Duration::ZERO)) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                if Instant::now() < deadline =>
            {
                std::thread::sleep(PAUSE);
            }
            Err(e) => return Err(e),
        }
    }
}

/// `commit_transaction` after [`flush_promptly`]: what a commit costs is then the
/// broker's round trips, not a poll slice.
pub fn commit_promptly<P, C, Part>(producer: &P, timeout: Duration) -> KafkaResult<()>
where
    P: Producer<C, Part>,
    C: rdkafka::producer::ProducerContext<Part>,
    Part: rdkafka::producer::Partitioner,
{
    let started = Instant::now();
    flush_promptly(producer, timeout)?;
    producer.commit_transaction(timeout.saturating_sub(started.elapsed()))
}
