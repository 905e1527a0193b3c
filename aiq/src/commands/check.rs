//! `aiq check`: writes a probe record through Kafka and a probe row through the store,
//! reads both back, and says what happened. Needs `aiq topics apply` and
//! `aiq schema apply` to have run.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use aiq_topics::TopicKind;
use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

use crate::config::Config;

const TIMEOUT: Duration = Duration::from_secs(20);

async fn kafka_probe(config: &Config, probe: Uuid) -> anyhow::Result<()> {
    let topic = config.kafka.topics().name(TopicKind::Probes).to_owned();
    let payload = serde_json::json!({ "probe": probe, "at": chrono::Utc::now() }).to_string();
    let key = probe.to_string();

    let producer: FutureProducer = config
        .kafka
        .producer_config()
        .create()
        .context("creating the Kafka producer")?;
    let started = Instant::now();
    let delivery = producer
        .send(
            FutureRecord::to(&topic).key(&key).payload(&payload),
            TIMEOUT,
        )
        .await
        .map_err(|(e, _)| e)
        .with_context(|| format!("producing a probe to {topic} (did `aiq topics apply` run?)"))?;
    println!(
        "kafka: produced probe {probe} to {topic} partition {} offset {} in {} ms (acks=all)",
        delivery.partition,
        delivery.offset,
        started.elapsed().as_millis()
    );

    let consumer: StreamConsumer = config
        .kafka
        .client_config()
        .set("group.id", format!("aiq-check-{probe}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .context("creating the Kafka consumer")?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, delivery.partition, Offset::Offset(delivery.offset))
        .context("building the partition list")?;
    consumer
        .assign(&tpl)
        .context("assigning the probe partition")?;
    let started = Instant::now();
    let msg = tokio::time::timeout(TIMEOUT, consumer.recv())
        .await
        .with_context(|| format!("no probe came back from {topic} within {TIMEOUT:?}"))?
        .context("reading the probe back")?;
    anyhow::ensure!(
        msg.payload() == Some(payload.as_bytes()) && msg.key() == Some(key.as_bytes()),
        "the record read back from {topic} at offset {} is not the probe written",
        msg.offset()
    );
    println!(
        "kafka: read it back from offset {} in {} ms, key and payload identical",
        msg.offset(),
        started.elapsed().as_millis()
    );
    Ok(())
}

async fn cql_probe(config: &Config, probe: Uuid) -> anyhow::Result<()> {
    let ks = &config.cql.keyspace;
    let session = aiq_sql::connect(&config.cql).await?;
    let note = format!("aiq check at {}", chrono::Utc::now().to_rfc3339());
    let written_at = chrono::Utc::now();
    let started = Instant::now();
    session
        .query_unpaged(
            format!(
                "INSERT INTO {ks}.service_probes (probe_id, written_at, note) VALUES (?, ?, ?)"
            ),
            (probe, written_at, note.as_str()),
        )
        .await
        .with_context(|| {
            format!("writing a probe row to {ks}.service_probes (did `aiq schema apply` run?)")
        })?;
    println!(
        "cql:   wrote probe row {probe} to {ks}.service_probes in {} ms",
        started.elapsed().as_millis()
    );
    let started = Instant::now();
    let (read_note,): (String,) = session
        .query_unpaged(
            format!("SELECT note FROM {ks}.service_probes WHERE probe_id = ?"),
            (probe,),
        )
        .await
        .context("reading the probe row back")?
        .into_rows_result()
        .context("reading the probe row back")?
        .single_row()
        .context("the probe row did not come back")?;
    anyhow::ensure!(
        read_note == note,
        "the probe row read back differs: {read_note:?}"
    );
    println!(
        "cql:   read it back in {} ms, identical",
        started.elapsed().as_millis()
    );
    Ok(())
}

pub async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let probe = Uuid::new_v4();
    kafka_probe(config, probe).await?;
    cql_probe(config, probe).await?;
    println!(
        "check: Kafka at {} and the store at {} work",
        config.kafka.brokers, config.cql.contact_points
    );
    Ok(ExitCode::SUCCESS)
}
