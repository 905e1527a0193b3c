//! Reads a partition's state back from the compacted changelog before the partition's
//! first input is processed.
//!
//! Read committed, to the end: the end is where the partition holds no open
//! transaction any more (last stable offset = high watermark). A crashed previous owner
//! can leave a transaction open; the broker aborts it after `transaction.timeout.ms`,
//! so restoring waits for that rather than building on a state that may still change.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aiq_kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::orchestrator::OrchestratorError;
use crate::orchestrator::changelog::{Entry, EntryKey};

pub type Restored = HashMap<i32, Vec<(EntryKey, Entry)>>;

pub fn restore(
    kafka: &KafkaSettings,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<Restored, OrchestratorError> {
    let mut out: Restored = partitions.iter().map(|p| (*p, Vec::new())).collect();
    if partitions.is_empty() {
        return Ok(out);
    }
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("aiq-restore-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| OrchestratorError::kafka("create the restore consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(|e| OrchestratorError::kafka("assign changelog partitions", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| OrchestratorError::kafka("assign changelog partitions", e))?;

    let mut latest: HashMap<i32, HashMap<Vec<u8>, Option<Vec<u8>>>> = HashMap::new();
    let mut open: BTreeSet<i32> = partitions.iter().copied().collect();
    let started = Instant::now();
    let mut last_check = Instant::now();
    while !open.is_empty() {
        if started.elapsed() > timeout {
            return Err(OrchestratorError::RestoreTimeout {
                partitions: open.into_iter().collect(),
                waited: timeout,
            });
        }
        let mut check = false;
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let Some(key) = m.key() else { continue };
                latest
                    .entry(m.partition())
                    .or_default()
                    .insert(key.to_vec(), m.payload().map(<[u8]>::to_vec));
            }
            Some(Err(RdError::PartitionEOF(_))) => check = true,
            Some(Err(e)) => tracing::warn!(error = %e, "changelog restore: consumer error"),
            None => check = true,
        }
        if check || last_check.elapsed() > Duration::from_millis(500) {
            last_check = Instant::now();
            let positions = consumer
                .position()
                .map_err(|e| OrchestratorError::kafka("changelog position", e))?;
            for e in positions.elements() {
                if !open.contains(&e.partition()) {
                    continue;
                }
                let (low, high) = consumer
                    .fetch_watermarks(topic, e.partition(), Duration::from_secs(5))
                    .map_err(|e| OrchestratorError::kafka("changelog watermarks", e))?;
                let at_end = match e.offset() {
                    Offset::Offset(o) => o >= high,
                    // Nothing fetched yet: only an empty partition is at its end.
                    _ => low >= high,
                };
                if at_end {
                    open.remove(&e.partition());
                }
            }
        }
    }

    for (p, entries) in latest {
        let list = out.entry(p).or_default();
        for (key, value) in entries {
            let Some(value) = value else { continue };
            match (EntryKey::decode(&key), Entry::decode(&value)) {
                (Ok(k), Ok(v)) => list.push((k, v)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(partition = p, error = %e, "changelog entry skipped");
                }
            }
        }
    }
    Ok(out)
}
