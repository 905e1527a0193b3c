//! A real Kafka and Cassandra, topics and a keyspace of the test's own, a producer of
//! events, and ways to wait for the sink and read back what it wrote.
#![allow(clippy::unwrap_used, dead_code)]

pub mod proxy;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiq_kafka::{KafkaSettings, apply_topics};
use aiq_sink::{RetentionSettings, SinkSettings};
use aiq_sql::{CqlSettings, apply_schema, connect};
use aiq_stage::StageHandle;
use aiq_topics::{AuditEvent, Event, TopicKind, TopicSet};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::serialize::row::SerializeRow;
use scylla::value::Row;

pub struct Env {
    pub kafka: KafkaSettings,
    pub topics: TopicSet,
    pub cql: CqlSettings,
    pub session: Arc<Session>,
    producer: FutureProducer,
}

/// Topics under a fresh prefix (`partitions` each for events and audit) and the schema
/// in a fresh keyspace; `None` when the services are not configured.
pub async fn env(label: &str, partitions: u32) -> Option<Env> {
    let brokers = aiq_testkit::service(aiq_testkit::KAFKA)?;
    let contact = aiq_testkit::service(aiq_testkit::CQL)?;
    let prefix = format!("{}.", aiq_testkit::unique(label));
    let kafka = KafkaSettings::plaintext(&brokers, &prefix, 1, partitions);
    let topics = kafka.topics();
    apply_topics(&kafka, &topics).await.unwrap();
    let cql = CqlSettings {
        contact_points: contact,
        keyspace: aiq_testkit::unique(label).to_lowercase(),
        replication_factor: 1,
        datacenters: vec![],
        username: None,
        password: None,
    };
    let session = Arc::new(connect(&cql).await.unwrap());
    apply_schema(&session, &cql, chrono::Utc::now())
        .await
        .unwrap();
    let producer = kafka
        .producer_config()
        .set("linger.ms", "5")
        .create()
        .unwrap();
    Some(Env {
        kafka,
        topics,
        cql,
        session,
        producer,
    })
}

/// The retention the tests configure: `short` and `long` classes beside the default.
pub fn retention() -> RetentionSettings {
    let mut r = RetentionSettings::default();
    r.classes.insert("short".into(), 7);
    r.classes.insert("long".into(), 400);
    r.tenants.insert("tshort".into(), "short".into());
    r.tenants.insert("acme".into(), "long".into());
    r
}

impl Env {
    pub fn topic(&self, k: TopicKind) -> String {
        self.topics.name(k).to_owned()
    }

    /// Settings for one sink run: its own group, quick batches and commits.
    pub fn settings(&self, group: &str, parquet_root: &Path) -> SinkSettings {
        let mut s = SinkSettings {
            group_id: group.to_owned(),
            batch_max_ms: 20,
            commit_interval_ms: 200,
            retry_backoff_min_ms: 50,
            retry_backoff_max_ms: 1000,
            retention: retention(),
            ..SinkSettings::default()
        };
        s.parquet.root = parquet_root.into();
        s.parquet.window_offsets = 500;
        s
    }

    pub fn group(&self, group: &str) -> String {
        format!("{}{group}", self.kafka.topic_prefix)
    }

    /// The sink stage over this environment.
    pub async fn start(&self, settings: SinkSettings, session: Arc<Session>) -> StageHandle {
        self.start_with(settings, session, &prometheus::Registry::new())
            .await
    }

    pub async fn start_with(
        &self,
        settings: SinkSettings,
        session: Arc<Session>,
        registry: &prometheus::Registry,
    ) -> StageHandle {
        self.start_reporting(settings, session, registry, aiq_stage::Health::new())
            .await
    }

    /// The sink stage, reporting its problems to `health`.
    pub async fn start_reporting(
        &self,
        settings: SinkSettings,
        session: Arc<Session>,
        registry: &prometheus::Registry,
        health: aiq_stage::Health,
    ) -> StageHandle {
        aiq_sink::spawn(
            &self.kafka,
            &self.topics,
            session,
            &self.cql.keyspace,
            settings,
            registry,
            health,
        )
        .await
        .unwrap()
    }

    async fn send(&self, topic: &str, key: &str, payload: &[u8]) {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    pub async fn event(&self, e: &Event) {
        let topic = self.topic(TopicKind::Events);
        self.send(&topic, e.tenant().as_str(), &e.encode()).await;
    }

    pub async fn audit(&self, a: &AuditEvent) {
        let topic = self.topic(TopicKind::Audit);
        self.send(&topic, a.tenant.as_str(), &a.encode()).await;
    }

    /// Sends all of `events` at once, then waits for every acknowledgement.
    pub async fn events(&self, events: &[Event]) {
        let topic = self.topic(TopicKind::Events);
        let mut acks = Vec::with_capacity(events.len());
        for e in events {
            let payload = e.encode();
            let record = FutureRecord::to(&topic)
                .key(e.tenant().as_str())
                .payload(&payload);
            acks.push(
                self.producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .unwrap(),
            );
        }
        for a in acks {
            a.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
    }

    pub async fn raw_event(&self, key: &str, payload: &[u8]) {
        let topic = self.topic(TopicKind::Events);
        self.send(&topic, key, payload).await;
    }

    fn offsets_consumer(&self, group: &str) -> BaseConsumer {
        self.kafka
            .client_config()
            .set("group.id", self.group(group))
            .create()
            .unwrap()
    }

    fn partitions(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for k in [TopicKind::Events, TopicKind::Audit] {
            let spec = self.topics.get(k);
            for p in 0..spec.partitions {
                tpl.add_partition(&spec.name, i32::try_from(p).unwrap());
            }
        }
        tpl
    }

    /// (topic, partition) → the group's committed offset (absent: none yet).
    pub async fn committed(&self, group: &str) -> BTreeMap<(String, i32), i64> {
        let c = self.offsets_consumer(group);
        let tpl = self.partitions();
        tokio::task::spawn_blocking(move || {
            let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
            got.elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                    _ => None,
                })
                .collect()
        })
        .await
        .unwrap()
    }

    /// (topic, partition) → high watermark.
    pub async fn ends(&self) -> BTreeMap<(String, i32), i64> {
        let c = self.offsets_consumer("watermarks");
        let tpl = self.partitions();
        tokio::task::spawn_blocking(move || {
            tpl.elements()
                .iter()
                .map(|e| {
                    let (_, high) = c
                        .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))
                        .unwrap();
                    ((e.topic().to_owned(), e.partition()), high)
                })
                .collect()
        })
        .await
        .unwrap()
    }

    /// Waits until the group has committed every partition to its end; the time taken.
    pub async fn wait_drained(&self, group: &str, timeout: Duration) -> Duration {
        let clock = Instant::now();
        let ends = self.ends().await;
        loop {
            let committed = self.committed(group).await;
            let behind: Vec<_> = ends
                .iter()
                .filter(|(tp, end)| **end > 0 && committed.get(*tp).copied().unwrap_or(0) < **end)
                .collect();
            if behind.is_empty() {
                return clock.elapsed();
            }
            assert!(
                clock.elapsed() < timeout,
                "sink did not drain within {timeout:?}: behind {behind:?}, committed {committed:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every row of `cql` bound to `values`, typed, in the order the store returns them.
    pub async fn select<T>(&self, cql: impl AsRef<str>, values: impl SerializeRow) -> Vec<T>
    where
        T: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        self.session
            .query_unpaged(cql.as_ref(), values)
            .await
            .unwrap()
            .into_rows_result()
            .unwrap()
            .rows::<T>()
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Every row of `cql` (a SELECT without keyspace placeholders), formatted, sorted.
    pub async fn rows(&self, cql: &str) -> Vec<String> {
        let cql = cql.replace("{ks}", &self.cql.keyspace);
        let rows = self
            .session
            .query_unpaged(cql, ())
            .await
            .unwrap()
            .into_rows_result()
            .unwrap();
        let mut out: Vec<String> = rows
            .rows::<Row>()
            .unwrap()
            .map(|r| format!("{:?}", r.unwrap().columns))
            .collect();
        out.sort();
        out
    }
}

/// Every `.parquet` file under `root`: its path relative to `root` and its row count.
pub fn parquet_files(root: &Path) -> Vec<(String, i64)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, i64)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                let file = std::fs::File::open(&path).unwrap();
                let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
                let rows = parquet::file::reader::FileReader::metadata(&reader)
                    .file_metadata()
                    .num_rows();
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, rows));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}
