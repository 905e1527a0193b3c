//! Reads a partition's state back from the compacted changelog before the partition's
//! first input is processed, handing each record to the partition's
//! [`PartitionRestore`] as it arrives (decoded once, nothing buffered beside it).
//!
//! The deadline follows progress: the restore fails only when `stall` passes with no
//! record read and no partition finished, so a large partition takes what it takes
//! while a stuck one (a broker away, an open transaction never aborted) is reported.
//!
//! Read committed, to the end: the end is where the partition holds no open
//! transaction any more (last stable offset = high watermark). A crashed previous owner
//! can leave a transaction open; the broker aborts it after `transaction.timeout.ms`,
//! so restoring waits for that rather than building on a state that may still change.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aiq_kafka::{Isolation, KafkaSettings};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::OrchestratorError;
use crate::core::PartitionRestore;

/// How long the broker may hold a restore fetch that finds nothing more, in ms.
const RESTORE_FETCH_WAIT_MS: &str = "10";

/// Reaching a partition's end is how a restore finishes, not an error worth a log line.
struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: RdError, reason: &str) {
        let eof = matches!(
            error,
            RdError::PartitionEOF(_) | RdError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !eof {
            tracing::error!(%error, reason, "changelog restore client error");
        }
    }
}

impl ConsumerContext for QuietEof {}

/// An entry's value as the core reads it (opened from its seal); `None` reads as a
/// delete.
pub type OpenEntry<'a> = &'a dyn Fn(&[u8], &[u8]) -> Option<Vec<u8>>;

/// Reads every record of the changelog partitions of `into` into them, to the end.
pub fn restore(
    kafka: &KafkaSettings,
    topic: &str,
    into: &mut [PartitionRestore],
    stall: Duration,
    open_entry: OpenEntry<'_>,
) -> Result<(), OrchestratorError> {
    let partitions: Vec<i32> = into.iter().map(PartitionRestore::partition).collect();
    if partitions.is_empty() {
        return Ok(());
    }
    let slot: HashMap<i32, usize> = partitions
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, i))
        .collect();
    // Read committed, a client's watermark query answers the last stable offset; read
    // uncommitted, the high watermark. Equal means no transaction is open. Both are
    // asked of clients that do not fetch: a broker answers one connection's requests in
    // order, so a query sent where a fetch is waiting waits for the fetch first (an
    // empty changelog of 12 partitions took 7 s to restore that way).
    let watermark_client = |isolation: Isolation| {
        kafka
            .watermark_client(
                &format!(
                    "aiq-restore-{}-{}",
                    isolation.as_librdkafka(),
                    std::process::id()
                ),
                isolation,
            )
            .map_err(|e| OrchestratorError::kafka("create a restore watermark client", e))
    };
    let committed = watermark_client(Isolation::ReadCommitted)?;
    let uncommitted = watermark_client(Isolation::ReadUncommitted)?;
    let wm = Duration::from_secs(5);
    let stable_offset = |p: i32| {
        committed
            .fetch_watermarks(topic, p, wm)
            .map(|(_, stable)| stable)
            .map_err(|e| OrchestratorError::kafka("changelog stable offset", e))
    };
    let watermarks = |p: i32| {
        uncommitted
            .fetch_watermarks(topic, p, wm)
            .map_err(|e| OrchestratorError::kafka("changelog high watermark", e))
    };

    // Each partition is read from its first offset, asked here rather than left to the
    // consumer (whose own offset query waited ~0.5 s); an empty partition with no
    // transaction open is done without a fetch.
    let mut open: BTreeSet<i32> = BTreeSet::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = watermarks(p)?;
        if high <= low && stable_offset(p)? >= high {
            continue;
        }
        open.insert(p);
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .map_err(|e| OrchestratorError::kafka("assign changelog partitions", e))?;
    }
    if open.is_empty() {
        return Ok(());
    }
    let consumer: BaseConsumer<QuietEof> = kafka
        .client_config()
        .set("group.id", format!("aiq-restore-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        // A first offset that compaction or retention removed meanwhile reads from the
        // new first one.
        .set("auto.offset.reset", "earliest")
        // The end of a partition is only seen in a fetch response, and the broker holds
        // a fetch of a partition with nothing more for up to this long (librdkafka's
        // default is 500 ms).
        .set("fetch.wait.max.ms", RESTORE_FETCH_WAIT_MS)
        .create_with_context(QuietEof)
        .map_err(|e| OrchestratorError::kafka("create the restore consumer", e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| OrchestratorError::kafka("assign changelog partitions", e))?;

    let mut last_seen: HashMap<i32, String> = HashMap::new();
    let mut progress = Instant::now();
    while !open.is_empty() {
        if progress.elapsed() > stall {
            let detail: Vec<String> = open
                .iter()
                .map(|p| {
                    format!(
                        "partition {p}: {}",
                        last_seen
                            .get(p)
                            .map_or("no end of partition seen", String::as_str)
                    )
                })
                .collect();
            return Err(OrchestratorError::RestoreTimeout {
                partitions: open.into_iter().collect(),
                waited: stall,
                detail: detail.join("; "),
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                progress = Instant::now();
                let Some(key) = m.key() else { continue };
                if let Some(r) = slot.get(&m.partition()).and_then(|i| into.get_mut(*i)) {
                    let value = m.payload().and_then(|v| open_entry(key, v));
                    r.apply(key, value.as_deref());
                }
            }
            // The fetch reached the last stable offset. The application position does
            // not move past aborted records, so it cannot tell; the watermarks can.
            Some(Err(RdError::PartitionEOF(p))) if open.contains(&p) => {
                let stable = stable_offset(p)?;
                let (_, high) = watermarks(p)?;
                if stable >= high {
                    open.remove(&p);
                    progress = Instant::now();
                } else {
                    // An open transaction; the end is signalled again once it ends.
                    last_seen.insert(
                        p,
                        format!("a transaction is open from before offset {stable} to {high}"),
                    );
                }
            }
            Some(Err(RdError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "changelog restore: consumer error"),
        }
    }

    Ok(())
}
