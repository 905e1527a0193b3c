//! Reads the three witnesses of a chaos run: the events topic (read_committed, from the
//! beginning), the store's `runs` table (a full scan in token ranges) and the Parquet
//! `runs` table (through the analytics engine, every tenant).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aiq_analytics::{Analytics, AnalyticsSettings, Scope};
use aiq_topics::Event;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

use crate::chaos::compare::Record;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Follows the events topic from its beginning; each [`EventsReader::catch_up`] reads on
/// to the end as it is then.
pub struct EventsReader {
    consumer: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
    /// Run id → tenant, for every `running` event.
    pub started: HashMap<String, String>,
    /// Every terminal run event, one per record.
    pub terminal: Vec<Record>,
    pub records: u64,
    /// Partition and timestamp (ms since the epoch: when the orchestrator produced it,
    /// inside the transaction that committed it) of every run and step event.
    pub stamps: Vec<(i32, i64)>,
    /// Run ids with a second `running` event, or a second step event with the same
    /// step, iteration, attempt and status: how many extra records each had.
    pub doubled_events: BTreeMap<String, u64>,
    /// Keys of the step events seen: (run, step, iteration, attempt, status).
    step_keys: HashSet<(String, String, Option<u64>, u32, &'static str)>,
}

impl EventsReader {
    pub fn new(brokers: &str, topic: &str) -> Result<EventsReader, String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("{topic}.chaos-check"))
            .set("enable.auto.commit", "false")
            // Aborted transactions never happened; what a subscriber sees is the truth.
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| format!("events consumer: {e}"))?;
        let md = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(|e| format!("metadata of {topic}: {e}"))?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(format!("topic {topic} does not exist"));
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(topic, *p, Offset::Beginning)
                .map_err(|e| e.to_string())?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| format!("assign {topic}: {e}"))?;
        Ok(EventsReader {
            consumer,
            topic: topic.to_owned(),
            partitions,
            started: HashMap::new(),
            terminal: Vec::new(),
            records: 0,
            stamps: Vec::new(),
            doubled_events: BTreeMap::new(),
            step_keys: HashSet::new(),
        })
    }

    /// Reads until every partition's position reaches the end it had when called (or
    /// nothing came for `idle`: an open transaction holds read_committed back).
    pub fn catch_up(&mut self, idle: Duration) -> Result<(), String> {
        let mut ends = HashMap::new();
        for p in &self.partitions {
            let (_, high) = self
                .consumer
                .fetch_watermarks(&self.topic, *p, TIMEOUT)
                .map_err(|e| format!("end of {}/{p}: {e}", self.topic))?;
            ends.insert(*p, high);
        }
        let mut last = Instant::now();
        loop {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    last = Instant::now();
                    self.records += 1;
                    let event = m.payload().map(Event::decode);
                    if let (Some(Ok(_)), Some(ts)) = (&event, m.timestamp().to_millis()) {
                        self.stamps.push((m.partition(), ts));
                    }
                    if let Some(Ok(Event::Step(e))) = &event {
                        let run = e.run.to_string();
                        let key = (
                            run.clone(),
                            e.step.to_string(),
                            e.iteration,
                            e.attempt,
                            e.status.as_str(),
                        );
                        if !self.step_keys.insert(key) {
                            *self.doubled_events.entry(run).or_default() += 1;
                        }
                    }
                    if let Some(Ok(Event::Run(e))) = event {
                        let run = e.run.to_string();
                        if e.status.is_terminal() {
                            let error = e.error.as_ref().map(|f| f.message.as_str());
                            self.terminal.push(Record::new(
                                &run,
                                e.tenant.as_str(),
                                e.status.as_str(),
                                error,
                            ));
                        } else if self
                            .started
                            .insert(run.clone(), e.tenant.as_str().to_owned())
                            .is_some()
                        {
                            *self.doubled_events.entry(run).or_default() += 1;
                        }
                    }
                }
                Some(Err(e)) => {
                    eprintln!("chaos: reading {}: {e}", self.topic);
                }
                None => {}
            }
            if self.at_end(&ends) || last.elapsed() > idle {
                return Ok(());
            }
        }
    }

    fn at_end(&self, ends: &HashMap<i32, i64>) -> bool {
        let Ok(pos) = self.consumer.position() else {
            return false;
        };
        ends.iter().all(|(p, high)| {
            *high == 0
                || matches!(
                    pos.find_partition(&self.topic, *p).map(|e| e.offset()),
                    Some(Offset::Offset(o)) if o >= *high
                )
        })
    }
}

/// The store's `runs` table, every row, scanned in token ranges.
pub struct Store {
    session: Session,
    keyspace: String,
}

/// Token ranges a scan is cut into.
const RANGES: i128 = 32;

impl Store {
    pub async fn connect(contact_points: &str, keyspace: &str) -> Result<Store, String> {
        let mut b = SessionBuilder::new();
        for node in contact_points
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            b = b.known_node(node);
        }
        let session = b
            .build()
            .await
            .map_err(|e| format!("connecting to {contact_points}: {e}"))?;
        Ok(Store {
            session,
            keyspace: keyspace.to_owned(),
        })
    }

    pub async fn runs(&self) -> Result<Vec<Record>, String> {
        let q = format!(
            "SELECT tenant, run_id, status, error FROM {}.runs \
             WHERE token(tenant, run_id) >= ? AND token(tenant, run_id) <= ?",
            self.keyspace
        );
        let (min, max) = (i128::from(i64::MIN), i128::from(i64::MAX));
        let step = (max - min) / RANGES;
        let mut out = Vec::new();
        for k in 0..RANGES {
            let lo = min + k * step;
            let hi = if k == RANGES - 1 { max } else { lo + step - 1 };
            let (lo, hi) = (lo as i64, hi as i64);
            let rows = self
                .session
                .query_unpaged(q.as_str(), (lo, hi))
                .await
                .map_err(|e| format!("scanning {}.runs: {e}", self.keyspace))?
                .into_rows_result()
                .map_err(|e| e.to_string())?;
            for row in rows
                .rows::<(String, uuid::Uuid, Option<String>, Option<String>)>()
                .map_err(|e| e.to_string())?
            {
                let (tenant, run, status, error) = row.map_err(|e| e.to_string())?;
                out.push(Record::new(
                    &run.to_string(),
                    &tenant,
                    status.as_deref().unwrap_or("running"),
                    error.as_deref(),
                ));
            }
        }
        Ok(out)
    }
}

/// The terminal rows of the Parquet `runs` table of every tenant under `root`.
pub async fn history(root: PathBuf) -> Result<Vec<Record>, String> {
    if !root.join("warm").exists() {
        return Ok(Vec::new());
    }
    let analytics = Analytics::new(AnalyticsSettings {
        root: root.into(),
        max_result_rows: 50_000_000,
        timeout_ms: 300_000,
        memory_limit_bytes: 1 << 30,
        target_partitions: 2,
        ..AnalyticsSettings::default()
    })
    .map_err(|e| e.to_string())?;
    let r = analytics
        .query(
            &Scope::Platform,
            "SELECT tenant, run_id, status, error_message FROM runs WHERE status <> 'running'",
        )
        .await
        .map_err(|e| format!("querying the Parquet history: {e}"))?;
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    Ok(r.rows
        .iter()
        .filter_map(|row| {
            let tenant = text(row.first()?)?;
            let run = text(row.get(1)?)?;
            let status = text(row.get(2)?)?;
            let error = row.get(3).and_then(text);
            Some(Record::new(&run, &tenant, &status, error.as_deref()))
        })
        .collect())
}
