//! Follows the events topic from its end and hands every terminal run event to the
//! tally: a run is complete when its terminal event is committed, which is what a
//! subscriber of the events topic would see.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aiq_topics::Event;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::loadgen::LoadError;
use crate::loadgen::tally::Tally;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

pub struct EventWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl EventWatch {
    /// Assigns every partition of `topic` at its current end, then reads on a thread of
    /// its own (the consumer's poll blocks).
    pub fn start(
        brokers: &str,
        topic: &str,
        group: &str,
        tally: Arc<Mutex<Tally>>,
    ) -> Result<Self, LoadError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            // The orchestrator writes events in transactions: aborted ones never happened.
            .set("isolation.level", "read_committed")
            .create()
            .map_err(LoadError::kafka("events consumer"))?;
        let mut tpl = TopicPartitionList::new();
        add_at_end(&consumer, topic, &mut tpl)?;
        consumer
            .assign(&tpl)
            .map_err(LoadError::kafka(format!("assigning {topic}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut seen = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let at = Instant::now();
                if let Some(Ok(Event::Run(e))) = m.payload().map(Event::decode)
                    && e.status.is_terminal()
                {
                    seen += 1;
                    if let Ok(mut t) = tally.lock() {
                        t.ended(e.run, e.tenant.as_str(), e.status, at);
                    }
                }
            }
            seen
        });
        Ok(Self { stop, thread })
    }

    /// Stops reading; returns how many terminal events were read (anyone's).
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// Adds every partition of `topic` to `tpl` at its current end: an explicit offset, not
/// `Offset::End`, which would be resolved only at the first fetch, after the first runs
/// may have ended.
pub(super) fn add_at_end(
    consumer: &BaseConsumer,
    topic: &str,
    tpl: &mut TopicPartitionList,
) -> Result<(), LoadError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(LoadError::kafka(format!("metadata of {topic}")))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(LoadError::Broker(format!(
            "topic {topic} does not exist (is --topic-prefix the one aiq serve uses?)"
        )));
    }
    for p in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, METADATA_TIMEOUT)
            .map_err(LoadError::kafka(format!("end of {topic}/{p}")))?;
        tpl.add_partition_offset(topic, p, Offset::Offset(high))
            .map_err(LoadError::kafka("assignment"))?;
    }
    Ok(())
}
