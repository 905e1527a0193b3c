//! Transactional producer calls without rust-rdkafka's built-in waits.
//!
//! rust-rdkafka's `flush` (which `commit_transaction` runs first) polls the producer in
//! slices of up to 100 ms until nothing is in flight. Beside a `ThreadedProducer`,
//! whose own thread takes every delivery report, such a slice never has anything to
//! serve and runs out in full: every commit with records in flight waited 100 ms.
//! Flushing in 1 ms slices first leaves the commit's own flush nothing to wait for.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use rdkafka::util::Timeout;

/// The longest one flush slice waits.
const SLICE: Duration = Duration::from_millis(1);

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
        match producer.flush(Timeout::After(SLICE)) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                if Instant::now() < deadline => {}
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
