//! What the engine is compared with on the same broker, both with messages of a trigger's
//! size on fresh topics with the triggers topic's partition count, deleted afterwards:
//!
//! - `measure` (`aiq-load baseline`), the ceiling: bare messages produced as ingest
//!   produces (acks=all, idempotent, linger 2 ms) and consumed back as the orchestrator
//!   consumes (read_committed) while they are being produced.
//! - `pipe` (`aiq-load pipe`), the fair floor: a do-nothing transactional consume →
//!   produce hop with the orchestrator's settings and batching (a read_committed group
//!   consumer, a transactional producer, one transaction per `batch_max_records` inputs
//!   or `batch_max_ms`, the input offsets sent into it). One record out per record in,
//!   over an input filled beforehand, so that its rate is the hop's own and not the
//!   filling producer's; the output is read back read_committed and checked against the
//!   input record by record. Every step of a run pays at least this hop, several times.
//!   Committed as the orchestrator commits, or plainly, with the client libraries'
//!   defaults and their ~100 ms waits per transaction (`Commit`).

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aiq_kafka::KafkaSettings;
use aiq_topics::{RunId, TenantId, TriggerEvent, TriggerSource, WorkflowId};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::loadgen::LoadError;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Gives up on consuming when nothing arrived for this long.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub messages: u64,
    pub message_bytes: usize,
    pub partitions: i32,
    pub produced: u64,
    pub failed: u64,
    pub consumed: u64,
    /// Until every message was acknowledged.
    pub produce_seconds: f64,
    /// Until every message was consumed back.
    pub total_seconds: f64,
}

impl Baseline {
    pub fn produce_per_sec(&self) -> f64 {
        self.produced as f64 / self.produce_seconds.max(1e-9)
    }

    /// Messages produced and consumed back per second: the figure runs/s is compared with.
    pub fn round_trip_per_sec(&self) -> f64 {
        self.consumed as f64 / self.total_seconds.max(1e-9)
    }

    pub fn markdown(&self) -> String {
        format!(
            "| messages | bytes each | partitions | produced | consumed | produce msg/s | produce+consume msg/s |\n\
             | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n\
             | {} | {} | {} | {} | {} | {:.0} | {:.0} |\n",
            self.messages,
            self.message_bytes,
            self.partitions,
            self.produced,
            self.consumed,
            self.produce_per_sec(),
            self.round_trip_per_sec()
        )
    }
}

/// A trigger as ingest writes it, to size the baseline's messages.
pub fn trigger_sample() -> Vec<u8> {
    numbered_trigger(&sample_tenant(12), 123_456)
}

/// A tenant named as `aiq-load run` names them.
fn sample_tenant(k: usize) -> TenantId {
    let Ok(tenant) = TenantId::new(format!("load1764400000-{k}")) else {
        unreachable!("valid sample tenant")
    };
    tenant
}

/// A trigger of `tenant` whose input is `{"n": n}`: the pipe finds an output's input by it.
fn numbered_trigger(tenant: &TenantId, n: u64) -> Vec<u8> {
    let Ok(workflow) = WorkflowId::new("ten-steps") else {
        unreachable!("valid sample workflow")
    };
    let mut t = TriggerEvent::new(
        tenant.clone(),
        workflow,
        TriggerSource::Api,
        json!({"n": n}),
    );
    t.run_id = Some(RunId::random());
    t.occurred_at = Some(chrono::Utc::now());
    t.encode()
}

#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    /// When the newest acknowledgement came: flush() returns only at its next poll tick.
    last: Mutex<Option<Instant>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let n = if result.is_ok() {
            &self.ok
        } else {
            &self.failed
        };
        n.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Instant::now());
        }
    }
}

/// The partition count of `<prefix>triggers`, when it exists.
pub fn triggers_partitions(brokers: &str, topic_prefix: &str) -> Result<Option<i32>, LoadError> {
    let topic = format!("{topic_prefix}triggers");
    let consumer: BaseConsumer = settings(brokers)
        .client_config()
        .create()
        .map_err(LoadError::kafka("metadata client"))?;
    let md = consumer
        .fetch_metadata(Some(&topic), TIMEOUT)
        .map_err(LoadError::kafka(format!("metadata of {topic}")))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

fn settings(brokers: &str) -> KafkaSettings {
    KafkaSettings::plaintext(brokers, "", 1, 1)
}

/// Names that no earlier run used.
fn stamp() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn admin(kafka: &KafkaSettings) -> Result<AdminClient<DefaultClientContext>, LoadError> {
    kafka
        .client_config()
        .create()
        .map_err(LoadError::kafka("admin client"))
}

/// Creates `topics` with `partitions` partitions each. A broker that just started may
/// refuse the first creation, so it is tried three times; a topic that exists by then
/// was created by the earlier try.
async fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[&str],
    partitions: i32,
) -> Result<(), LoadError> {
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let mut attempt = 1;
    loop {
        let outcome = match admin.create_topics(&new, &opts).await {
            Ok(results) => results
                .into_iter()
                .filter_map(|r| match r {
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if attempt > 1 => None,
                    Err((t, code)) => Some(format!("creating {t}: {code}")),
                    Ok(_) => None,
                })
                .collect::<Vec<_>>(),
            Err(e) => vec![format!("creating {}: {e}", topics.join(", "))],
        };
        if outcome.is_empty() {
            return Ok(());
        }
        if attempt == 3 {
            return Err(LoadError::Broker(outcome.join("; ")));
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Produces `messages` copies of a trigger-sized record to a fresh topic of `partitions`
/// partitions and consumes them back concurrently; deletes the topic afterwards.
pub async fn measure(brokers: &str, partitions: i32, messages: u64) -> Result<Baseline, LoadError> {
    let topic = format!("aiq-load-baseline-{:x}", stamp());
    let kafka = settings(brokers);
    let admin = admin(&kafka)?;
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    create_topics(&admin, &[&topic], partitions).await?;
    let run = {
        let (kafka, topic) = (kafka.clone(), topic.clone());
        tokio::task::spawn_blocking(move || round_trip(&kafka, &topic, partitions, messages)).await
    };
    // The topic goes whatever happened; a failed delete only leaves litter.
    let _ = admin.delete_topics(&[&topic], &opts).await;
    run?
}

fn round_trip(
    kafka: &KafkaSettings,
    topic: &str,
    partitions: i32,
    messages: u64,
) -> Result<Baseline, LoadError> {
    let payload = trigger_sample();
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(LoadError::kafka("baseline consumer"))?;
    wait_for_leaders(&consumer, topic, partitions)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(LoadError::kafka("assignment"))?;
    }
    consumer
        .assign(&tpl)
        .map_err(LoadError::kafka("assigning the baseline topic"))?;
    let producer: ThreadedProducer<Deliveries> = kafka
        .producer_config()
        .set("linger.ms", "2")
        .create_with_context(Deliveries::default())
        .map_err(LoadError::kafka("baseline producer"))?;

    let keys: Vec<String> = (0..100).map(|k| format!("load-t{k}")).collect();
    // Start-up is not throughput: the idempotent producer fetches its id and the consumer
    // makes its first fetch with one record before the clock starts.
    send(&producer, topic, keys[0].as_bytes(), &payload)?;
    producer
        .flush(TIMEOUT)
        .map_err(LoadError::kafka("flushing the warm-up record"))?;
    let warm_until = Instant::now() + TIMEOUT;
    while !matches!(consumer.poll(Duration::from_millis(100)), Some(Ok(_))) {
        if Instant::now() > warm_until {
            return Err(LoadError::Broker(format!(
                "the warm-up record did not come back from {topic} within {TIMEOUT:?}"
            )));
        }
    }
    let warm_up_records = producer.context().ok.load(Ordering::Relaxed);

    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut consumed = 0u64;
        let mut last = Instant::now();
        let mut done_at = Duration::ZERO;
        while consumed < messages && last.elapsed() < IDLE_LIMIT {
            if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                consumed += 1;
                last = Instant::now();
                done_at = start.elapsed();
            }
        }
        (consumed, done_at)
    });
    for i in 0..messages {
        send(
            &producer,
            topic,
            keys[(i % 100) as usize].as_bytes(),
            &payload,
        )?;
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(LoadError::kafka("flushing the baseline producer"))?;
    let (consumed, done_at) = reader
        .join()
        .map_err(|_| LoadError::Broker("the baseline reader panicked".into()))?;
    let ctx = producer.context();
    let acknowledged = ctx.last.lock().ok().and_then(|l| *l);
    let produce_seconds = acknowledged.map_or(0.0, |at| at.duration_since(start).as_secs_f64());
    Ok(Baseline {
        messages,
        message_bytes: payload.len(),
        partitions,
        produced: ctx.ok.load(Ordering::Relaxed) - warm_up_records,
        failed: ctx.failed.load(Ordering::Relaxed),
        consumed,
        produce_seconds,
        total_seconds: done_at.as_secs_f64(),
    })
}

/// Queues one record, waiting while the client's queue is full.
fn send(
    producer: &ThreadedProducer<Deliveries>,
    topic: &str,
    key: &[u8],
    payload: &[u8],
) -> Result<(), LoadError> {
    send_record(producer, BaseRecord::to(topic).key(key).payload(payload))
}

fn wait_for_leaders(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> Result<(), LoadError> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let md = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(LoadError::kafka(format!("metadata of {topic}")))?;
        let ready = md.topics().iter().any(|t| {
            t.name() == topic
                && t.error().is_none()
                && t.partitions().len() == partitions as usize
                && t.partitions().iter().all(|p| p.leader() >= 0)
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(LoadError::Broker(format!(
                "{topic} has no leaders after {TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The orchestrator's timeout for one transactional call (`runner::TXN_CALL_TIMEOUT`).
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a retriable transactional call is repeated, as the orchestrator does.
const RETRY_FOR: Duration = Duration::from_secs(120);

/// What the pipe is run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeSettings {
    /// Of the input topic and of the output topic.
    pub partitions: i32,
    /// Inputs put through.
    pub messages: u64,
    /// `orchestrator.batch_max_records`: inputs per transaction at most.
    pub batch_max_records: usize,
    /// `orchestrator.batch_max_ms`: how long a transaction takes inputs at most.
    pub batch_max_ms: u64,
    /// `orchestrator.transaction_timeout_ms`.
    pub transaction_timeout_ms: u64,
    pub commit: Commit,
    /// `orchestrator.transactional_producers`: producers the batches take in turn.
    pub producers: usize,
    /// Leaves the topics and the consumer group in place when the pipe ran to its end.
    pub keep_topics: bool,
}

impl PipeSettings {
    /// The orchestrator's defaults (those of `config/aiq.toml`), committed as it commits.
    pub fn orchestrator(partitions: i32, messages: u64) -> Self {
        let o = aiq_orchestrator::OrchestratorSettings::default();
        Self {
            partitions,
            messages,
            batch_max_records: o.batch_max_records,
            batch_max_ms: o.batch_max_ms,
            transaction_timeout_ms: o.transaction_timeout_ms,
            commit: Commit::Orchestrator,
            producers: o.transactional_producers,
            keep_topics: false,
        }
    }
}

/// How a batch is closed and its transaction committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// As the orchestrator does (`runner`): a batch also closes as soon as the input
    /// already fetched is drained, the commit goes through `aiq_kafka::commit_promptly`,
    /// and `retry.backoff.ms` is 2 ms.
    Orchestrator,
    /// With the client libraries' defaults, as the orchestrator did before: a batch closes
    /// only when full or old; rust-rdkafka's `commit_transaction` flushes in 100 ms poll
    /// slices, and beside a `ThreadedProducer` the first slice runs out in full; the next
    /// transaction's first call meets CONCURRENT_TRANSACTIONS while the broker completes
    /// the previous one and is sent again after librdkafka's 100 ms `retry.backoff.ms`.
    Plain,
}

impl Commit {
    fn label(self) -> &'static str {
        match self {
            Commit::Orchestrator => "as the orchestrator",
            Commit::Plain => "plain",
        }
    }
}

/// A do-nothing transactional consume → produce hop with the orchestrator's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipe {
    pub settings: PipeSettings,
    /// Mean bytes of an input's payload.
    pub message_bytes: usize,
    /// Inputs consumed whose outputs and offsets were committed.
    pub records: u64,
    pub transactions: u64,
    /// From the first input consumed to the last commit.
    pub seconds: f64,
    /// Outputs read back read_committed, duplicates included.
    pub read_back: u64,
    /// Inputs without an output among those read back.
    pub missing: u64,
    /// Outputs read back beyond the first one for their input.
    pub duplicated: u64,
    /// Outputs whose key or payload is not their input's.
    pub altered: u64,
    /// The input and output topics, when they were kept.
    pub kept_topics: Option<(String, String)>,
}

impl Pipe {
    /// Records through the pipe per second: consumed, produced and committed.
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.seconds.max(1e-9)
    }

    pub fn records_per_transaction(&self) -> f64 {
        self.records as f64 / self.transactions.max(1) as f64
    }

    /// Every input came out once, unchanged, and nothing else came out.
    pub fn exactly_once(&self) -> bool {
        self.records == self.settings.messages
            && self.read_back == self.settings.messages
            && self.missing == 0
            && self.duplicated == 0
            && self.altered == 0
    }

    pub fn markdown(&self) -> String {
        format!(
            "| messages | bytes each | partitions | batch at most | commit | producers | transactions | records per transaction | seconds | transactions/s | pipe records/s | read back | missing | duplicated | altered |\n\
             | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n\
             | {} | {} | {} | {} records / {} ms | {} | {} | {} | {:.0} | {:.2} | {:.0} | {:.0} | {} | {} | {} | {} |\n",
            self.settings.messages,
            self.message_bytes,
            self.settings.partitions,
            self.settings.batch_max_records,
            self.settings.batch_max_ms,
            self.settings.commit.label(),
            self.settings.producers,
            self.transactions,
            self.records_per_transaction(),
            self.seconds,
            self.transactions as f64 / self.seconds.max(1e-9),
            self.records_per_sec(),
            self.read_back,
            self.missing,
            self.duplicated,
            self.altered
        )
    }
}

/// Fills a fresh input topic with `settings.messages` triggers, pipes them transactionally
/// to a fresh output topic in the orchestrator's batches, and reads the output back.
/// Topic names, the consumer group and the transactional id start with `prefix`; the
/// topics and the group are deleted afterwards unless `settings.keep_topics` and the
/// pipe ran to its end (whatever its check found). The blocking work runs on a thread of
/// the blocking pool.
pub async fn pipe(brokers: &str, prefix: &str, settings: &PipeSettings) -> Result<Pipe, LoadError> {
    let id = format!("{prefix}load-pipe-{:x}", stamp());
    let names = PipeNames {
        input: format!("{id}-in"),
        output: format!("{id}-out"),
        id,
    };
    let kafka = self::settings(brokers);
    let admin = admin(&kafka)?;
    create_topics(&admin, &[&names.input, &names.output], settings.partitions).await?;
    let settings = PipeSettings {
        batch_max_records: settings.batch_max_records.max(1),
        producers: settings.producers.max(1),
        ..*settings
    };
    let run = {
        let (kafka, names) = (kafka.clone(), names.clone());
        tokio::task::spawn_blocking(move || run_pipe(&kafka, &names, &settings)).await
    };
    // Kept only when the pipe ran: an error does not carry the names.
    if settings.keep_topics && matches!(run, Ok(Ok(_))) {
        return run?.map(|p| Pipe {
            kept_topics: Some((names.input, names.output)),
            ..p
        });
    }
    // Whatever happened; a failed delete only leaves litter. The transactional id
    // expires on its own (`transactional.id.expiration.ms`).
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let _ = admin
        .delete_topics(&[&names.input, &names.output], &opts)
        .await;
    let _ = admin.delete_groups(&[&names.id], &opts).await;
    run?
}

#[derive(Debug, Clone)]
struct PipeNames {
    input: String,
    output: String,
    /// The consumer group and the transactional id.
    id: String,
}

fn run_pipe(
    kafka: &KafkaSettings,
    names: &PipeNames,
    settings: &PipeSettings,
) -> Result<Pipe, LoadError> {
    let filled = fill(kafka, &names.input, settings.messages)?;
    let through = transact(kafka, names, settings)?;
    let check = read_back(
        kafka,
        &names.output,
        settings.partitions,
        &filled.fingerprints,
    )?;
    Ok(Pipe {
        settings: *settings,
        message_bytes: (filled.bytes / settings.messages.max(1)) as usize,
        records: through.records,
        transactions: through.transactions,
        seconds: through.seconds,
        read_back: check.read,
        missing: check.missing,
        duplicated: check.duplicated,
        altered: check.altered,
        kept_topics: None,
    })
}

/// What the input holds: the fingerprint of input n at index n.
struct Filled {
    fingerprints: Vec<u64>,
    bytes: u64,
}

fn fingerprint(key: &[u8], payload: &[u8]) -> u64 {
    // `DefaultHasher::new` hashes alike within a process, which is all the check needs.
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    payload.hash(&mut h);
    h.finish()
}

/// The number an output's input carried, when the output is a well-formed trigger of it.
fn numbered(key: Option<&[u8]>, payload: Option<&[u8]>) -> Option<u64> {
    let t = TriggerEvent::decode(key, payload?).ok()?;
    t.input.get("n")?.as_u64()
}

/// Produces triggers numbered 0..messages over 100 tenants, keyed by tenant as ingest
/// keys them, and waits until all of them are acknowledged.
fn fill(kafka: &KafkaSettings, topic: &str, messages: u64) -> Result<Filled, LoadError> {
    let producer: ThreadedProducer<Deliveries> = kafka
        .producer_config()
        .set("linger.ms", "2")
        .create_with_context(Deliveries::default())
        .map_err(LoadError::kafka("pipe input producer"))?;
    let tenants: Vec<TenantId> = (0..100).map(sample_tenant).collect();
    let mut fingerprints = Vec::with_capacity(messages as usize);
    let mut bytes = 0u64;
    for n in 0..messages {
        let tenant = &tenants[(n % 100) as usize];
        let payload = numbered_trigger(tenant, n);
        let key = tenant.as_str().as_bytes();
        fingerprints.push(fingerprint(key, &payload));
        bytes += payload.len() as u64;
        send(&producer, topic, key, &payload)?;
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(LoadError::kafka(format!("filling {topic}")))?;
    let ctx = producer.context();
    let (ok, failed) = (
        ctx.ok.load(Ordering::Relaxed),
        ctx.failed.load(Ordering::Relaxed),
    );
    if ok != messages || failed > 0 {
        return Err(LoadError::Broker(format!(
            "filling {topic}: {ok} of {messages} acknowledged, {failed} failed"
        )));
    }
    Ok(Filled {
        fingerprints,
        bytes,
    })
}

struct Through {
    records: u64,
    transactions: u64,
    seconds: f64,
}

/// The orchestrator's loop without the core: poll one record, produce its output into
/// the open transaction, and once the batch is full or old send the offsets into the
/// transaction and commit it. An abortable or fatal error ends the measurement instead
/// of being recovered from: a floor is measured on the path where nothing fails.
fn transact(
    kafka: &KafkaSettings,
    names: &PipeNames,
    settings: &PipeSettings,
) -> Result<Through, LoadError> {
    // As `runner::create_producer` makes them, one per lane, taken in turn.
    let mut producers = Vec::with_capacity(settings.producers);
    for lane in 0..settings.producers.max(1) {
        let id = aiq_orchestrator::settings::lane_id(&names.id, lane);
        let mut config = kafka.producer_config();
        config
            .set("transactional.id", &id)
            .set(
                "transaction.timeout.ms",
                settings.transaction_timeout_ms.to_string(),
            )
            .set("linger.ms", "2");
        if settings.commit == Commit::Orchestrator {
            config.set("retry.backoff.ms", "2");
        }
        let producer: ThreadedProducer<Deliveries> = config
            .create_with_context(Deliveries::default())
            .map_err(LoadError::kafka("pipe transactional producer"))?;
        retrying("init transactions", || {
            producer.init_transactions(TXN_CALL_TIMEOUT)
        })?;
        producers.push(producer);
    }
    let mut lane = 0;
    // As `runner::Runner::new` makes it, but without static membership: a static member
    // does not leave the group when it closes, and the group could not be deleted.
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", &names.id)
        .set("group.protocol", "classic")
        .set("partition.assignment.strategy", "range")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .map_err(LoadError::kafka("pipe consumer"))?;
    wait_for_leaders(&consumer, &names.output, settings.partitions)?;
    consumer
        .subscribe(&[&names.input])
        .map_err(LoadError::kafka(format!("subscribing to {}", names.input)))?;

    let max_age = Duration::from_millis(settings.batch_max_ms);
    let mut offsets: HashMap<i32, i64> = HashMap::new();
    let (mut committed, mut transactions, mut batch) = (0u64, 0u64, 0u64);
    let mut batch_started: Option<Instant> = None;
    let mut in_txn = false;
    // The clock starts at the first input: joining the group is not throughput.
    let mut first: Option<Instant> = None;
    let mut last_commit = Instant::now();
    let mut last_progress = Instant::now();
    let mut last_error = None;
    while committed < settings.messages {
        // With a batch open the orchestrator takes only what is already fetched.
        let wait = match (batch_started, settings.commit) {
            (None, _) => Duration::from_millis(100),
            (Some(_), Commit::Orchestrator) => Duration::ZERO,
            (Some(s), Commit::Plain) => {
                Duration::from_millis(100).min(max_age.saturating_sub(s.elapsed()))
            }
        };
        let polled = consumer.poll(wait);
        let drained = polled.is_none();
        match polled {
            Some(Ok(m)) => {
                let now = Instant::now();
                first.get_or_insert(now);
                batch_started.get_or_insert(now);
                last_progress = now;
                let producer = &producers[lane];
                if !in_txn {
                    retrying("begin transaction", || producer.begin_transaction())?;
                    in_txn = true;
                }
                let mut out = BaseRecord::<[u8], [u8]>::to(&names.output);
                if let Some(k) = m.key() {
                    out = out.key(k);
                }
                if let Some(p) = m.payload() {
                    out = out.payload(p);
                }
                send_record(producer, out)?;
                offsets.insert(m.partition(), m.offset() + 1);
                batch += 1;
            }
            // As in the orchestrator, a consumer error does not end the loop; one that
            // lasts shows up as the stall below, which names it.
            Some(Err(e)) => last_error = Some(e),
            None => {}
        }
        let full = batch >= settings.batch_max_records as u64;
        let old = batch_started.is_some_and(|s| s.elapsed() >= max_age);
        let drained = drained && settings.commit == Commit::Orchestrator;
        if batch > 0 && (full || old || drained) {
            let mut tpl = TopicPartitionList::new();
            for (p, next) in &offsets {
                tpl.add_partition_offset(&names.input, *p, Offset::Offset(*next))
                    .map_err(LoadError::kafka("pipe offsets"))?;
            }
            let group = consumer
                .group_metadata()
                .ok_or_else(|| LoadError::Broker("the pipe consumer has no group".into()))?;
            let producer = &producers[lane];
            retrying("send offsets to transaction", || {
                producer.send_offsets_to_transaction(&tpl, &group, TXN_CALL_TIMEOUT)
            })?;
            retrying("commit transaction", || match settings.commit {
                Commit::Orchestrator => aiq_kafka::commit_promptly(producer, TXN_CALL_TIMEOUT),
                Commit::Plain => producer.commit_transaction(TXN_CALL_TIMEOUT),
            })?;
            in_txn = false;
            lane = (lane + 1) % producers.len();
            committed += batch;
            transactions += 1;
            batch = 0;
            batch_started = None;
            offsets.clear();
            last_commit = Instant::now();
            last_progress = last_commit;
        }
        if last_progress.elapsed() > IDLE_LIMIT {
            return Err(LoadError::Broker(format!(
                "the pipe stalled for {IDLE_LIMIT:?} after committing {committed} of {} records \
                 (last consumer error: {})",
                settings.messages,
                last_error.map_or_else(|| "none".to_owned(), |e| e.to_string())
            )));
        }
    }
    consumer.unsubscribe();
    Ok(Through {
        records: committed,
        transactions,
        seconds: first.map_or(0.0, |f| last_commit.duration_since(f).as_secs_f64()),
    })
}

/// Calls a transactional operation until it succeeds, fails with an error librdkafka does
/// not call retriable, or `RETRY_FOR` has passed (the orchestrator's `call_retrying`).
fn retrying(op: &'static str, call: impl Fn() -> KafkaResult<()>) -> Result<(), LoadError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match call() {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(e))
                if e.is_retriable() && started.elapsed() < RETRY_FOR =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(LoadError::kafka(op)(e)),
        }
    }
}

/// Queues one record, waiting while the client's queue is full.
fn send_record(
    producer: &ThreadedProducer<Deliveries>,
    mut r: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), LoadError> {
    while let Err((e, back)) = producer.send(r) {
        if e.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
            return Err(LoadError::kafka("producing")(e));
        }
        r = back;
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Check {
    read: u64,
    missing: u64,
    duplicated: u64,
    altered: u64,
}

/// Reads `topic` read_committed from the beginning to its end and matches every record
/// with the input of its number.
fn read_back(
    kafka: &KafkaSettings,
    topic: &str,
    partitions: i32,
    fingerprints: &[u64],
) -> Result<Check, LoadError> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("{topic}-check"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        // The end of each partition is where the committed output ends.
        .set("enable.partition.eof", "true")
        .create()
        .map_err(LoadError::kafka("pipe output reader"))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(LoadError::kafka("assignment"))?;
    }
    consumer
        .assign(&tpl)
        .map_err(LoadError::kafka(format!("assigning {topic}")))?;
    let mut seen = vec![false; fingerprints.len()];
    let mut check = Check::default();
    let mut at_end = HashSet::new();
    let mut last = Instant::now();
    while at_end.len() < partitions as usize {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = Instant::now();
                at_end.remove(&m.partition());
                check.read += 1;
                let n = numbered(m.key(), m.payload()).and_then(|n| usize::try_from(n).ok());
                match n.filter(|n| *n < seen.len()) {
                    Some(n) if seen[n] => check.duplicated += 1,
                    Some(n) => {
                        seen[n] = true;
                        let (k, p) = (m.key().unwrap_or_default(), m.payload().unwrap_or_default());
                        if fingerprint(k, p) != fingerprints[n] {
                            check.altered += 1;
                        }
                    }
                    None => check.altered += 1,
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(_)) | None => {}
        }
        if last.elapsed() > IDLE_LIMIT {
            return Err(LoadError::Broker(format!(
                "reading {topic} back: {} of {partitions} partitions reached their end after {} records",
                at_end.len(),
                check.read
            )));
        }
    }
    check.missing = seen.iter().filter(|s| !**s).count() as u64;
    Ok(check)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_counts_and_seconds() {
        let b = Baseline {
            messages: 1000,
            message_bytes: 200,
            partitions: 12,
            produced: 1000,
            failed: 0,
            consumed: 1000,
            produce_seconds: 0.5,
            total_seconds: 2.0,
        };
        assert!((b.produce_per_sec() - 2000.0).abs() < 1e-9);
        assert!((b.round_trip_per_sec() - 500.0).abs() < 1e-9);
        assert!(
            b.markdown()
                .contains("| 1000 | 200 | 12 | 1000 | 1000 | 2000 | 500 |")
        );
        let sample = trigger_sample();
        assert!(sample.len() > 100, "{}", sample.len());
    }

    #[test]
    fn the_pipe_is_exactly_once_only_when_every_input_came_out_once_unchanged() {
        let p = Pipe {
            settings: PipeSettings {
                partitions: 12,
                messages: 1000,
                batch_max_records: 500,
                batch_max_ms: 20,
                transaction_timeout_ms: 10_000,
                commit: Commit::Orchestrator,
                producers: 2,
                keep_topics: false,
            },
            message_bytes: 200,
            records: 1000,
            transactions: 4,
            seconds: 0.5,
            read_back: 1000,
            missing: 0,
            duplicated: 0,
            altered: 0,
            kept_topics: None,
        };
        assert!(p.exactly_once());
        assert!((p.records_per_sec() - 2000.0).abs() < 1e-9);
        assert!(
            p.markdown().contains(
                "| 1000 | 200 | 12 | 500 records / 20 ms | as the orchestrator | 2 | 4 | 250 | 0.50 | 8 | 2000 | 1000 | 0 | 0 | 0 |"
            ),
            "{}",
            p.markdown()
        );
        let duplicated = Pipe {
            read_back: 1001,
            duplicated: 1,
            ..p.clone()
        };
        assert!(!duplicated.exactly_once());
        let altered = Pipe { altered: 1, ..p };
        assert!(!altered.exactly_once());
    }

    #[test]
    fn an_output_is_matched_with_its_input_by_number_and_fingerprint() {
        let tenant = sample_tenant(3);
        let payload = numbered_trigger(&tenant, 42);
        let key = tenant.as_str().as_bytes();
        assert_eq!(numbered(Some(key), Some(&payload)), Some(42));
        // The key must name the trigger's tenant, as ingest's records do.
        assert_eq!(numbered(Some(b"other".as_slice()), Some(&payload)), None);
        assert_eq!(numbered(Some(key), None), None);
        let again = numbered_trigger(&tenant, 42);
        assert_ne!(fingerprint(key, &payload), fingerprint(key, &again));
        assert_eq!(
            fingerprint(key, &payload),
            fingerprint(key, &payload.clone())
        );
    }
}
