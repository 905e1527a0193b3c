//! Transactional producer calls without rust-rdkafka's built-in waits.
//!
//! rust-rdkafka's `flush` (which `commit_transaction` runs first) asks librdkafka to
//! flush without waiting, then polls the producer in slices of up to 100 ms until
//! nothing is in flight. Beside a `ThreadedProducer`, whose own thread takes every
//! delivery report, such a slice never has anything to serve and runs out in full:
//! every commit with records in flight waited 100 ms. [`flush_promptly`] makes
//! librdkafka's own blocking flush instead, which leaves the commit's flush nothing to
//! wait for.

use std::time::{Duration, Instant};

use rdkafka::bindings::{rd_kafka_flush, rd_kafka_resp_err_t};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::Producer;

/// Waits until every record handed to `producer` is acknowledged (or failed), for at
/// most `timeout`. Records waiting out `linger.ms` are sent at once.
///
/// This is librdkafka's `rd_kafka_flush` with the whole timeout, which rust-rdkafka only
/// ever calls with zero. Made that way it holds librdkafka's "flushing" flag for as long
/// as it waits: every broker thread treats `linger.ms` as over and sends what lingers.
/// Zero-timeout calls in a loop hold the flag for microseconds, and a broker thread that
/// wakes after one has returned waits out the linger. With the records' delivery
/// reports taken as events (how rust-rdkafka configures every producer), the call only
/// waits on librdkafka's in-flight count; it takes no report from the thread that polls.
#[allow(unsafe_code)]
pub fn flush_promptly<P, C, Part>(producer: &P, timeout: Duration) -> KafkaResult<()>
where
    P: Producer<C, Part>,
    C: rdkafka::producer::ProducerContext<Part>,
    Part: rdkafka::producer::Partitioner,
{
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `native_ptr` is the live handle of `producer`, which the borrow keeps
    // alive for the call; `rd_kafka_flush` is thread-safe and takes no ownership.
    let code = unsafe { rd_kafka_flush(producer.client().native_ptr(), ms) };
    match code {
        rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
        e => Err(KafkaError::Flush(e.into())),
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
