//! A million runs waiting on a `wait_for_event` step, held by one orchestrator process
//! and restored after a SIGKILL.
//!
//! The runs are started in the orchestrator's core (no Kafka: starting a million runs
//! through the pipeline would measure the pipeline, not the restore) and the changelog
//! entries the core writes for them are produced to a fresh changelog topic, byte for
//! byte what a running orchestrator would have committed. Then an orchestrator process
//! (`aiq-load hold`, a real `aiq_orchestrator::spawn` in a process of its own) joins the
//! group, restores every partition and reports its resident memory; it is SIGKILLed and
//! started again, and the second restore is timed the same way. Last, a thousand of the
//! restored runs are signalled through the signals topic and their ends are read from
//! the events topic: the restored state is not only present but alive.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiq_engine::Catalog;
use aiq_kafka::{KafkaSettings, tail::tail_topic};
use aiq_orchestrator::{Core, InputTopic, OrchestratorMetrics, OrchestratorSettings, Record};
use aiq_topics::{
    DefinitionRecord, Event, RunId, SignalAction, SignalEvent, TenantId, TopicKind, TriggerEvent,
    TriggerSource, WorkflowId, partition_for_key,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::backlog::{Backlog, fresh_topics};

/// Runs signalled after the second restore.
const SIGNALLED: usize = 1_000;

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    #[arg(long, env = "AIQ_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[arg(long, default_value_t = 1_000_000)]
    pub runs: usize,
    #[arg(long, default_value_t = 100)]
    pub tenants: usize,
}

#[derive(clap::Args, Debug)]
pub struct HoldArgs {
    #[arg(long, env = "AIQ_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// The topic prefix `aiq-load restore` created.
    #[arg(long)]
    pub prefix: String,
}

/// What the holding process reports once it owns and has restored every partition.
#[derive(Debug, Serialize, Deserialize)]
pub struct Held {
    /// From the process's start to every partition restored (joining the group
    /// included).
    pub ready_secs: f64,
    /// The restore itself (`aiq_orchestrator_restore_seconds`).
    pub restore_secs: f64,
    pub rss_bytes: u64,
    pub running_runs: i64,
}

fn definition() -> serde_json::Value {
    json!({
        "id": "approval",
        "steps": [
            {"id": "ask", "set": {"vars": {"asked": true}}},
            {"id": "wait", "wait_for_event": {"signal": "approved", "timeout": "7d"}},
            {"id": "done", "succeed": {}}
        ]
    })
}

pub async fn run(a: RestoreArgs) -> anyhow::Result<()> {
    let kafka = fresh_topics(&a.brokers, "restore").await?;
    let topic = |k: TopicKind| kafka.topics().get(k).name.clone();
    let backlog = Backlog::new(&kafka)?;
    let catalog = Catalog::default();
    let workflow = WorkflowId::new("approval")?;
    let tenants: Vec<TenantId> = (0..a.tenants)
        .map(|i| TenantId::new(format!("t{i}")))
        .collect::<Result<_, _>>()?;
    for t in &tenants {
        let rec = DefinitionRecord {
            tenant: t.clone(),
            workflow: workflow.clone(),
            version: 1,
            content_hash: "h".into(),
            created_at: chrono::Utc::now(),
            definition: definition(),
        };
        backlog.send(
            &topic(TopicKind::Definitions),
            rec.key().as_bytes(),
            &rec.encode(),
        );
        catalog.apply(rec)?;
    }
    let settings = OrchestratorSettings {
        quota: aiq_orchestrator::settings::TenantQuota {
            max_concurrent_runs: u32::MAX,
            max_inflight_tasks: u32::MAX,
            max_queued_runs: 100_000,
        },
        ..OrchestratorSettings::default()
    };
    let parts = kafka.tenant_partitions;
    let mut core = Core::new(Arc::new(settings), Arc::new(catalog), parts as i32);
    for p in 0..parts as i32 {
        core.restore(p, Vec::new());
    }
    let started = Instant::now();
    let now = chrono::Utc::now();
    let mut bytes = 0usize;
    let mut signalled = Vec::new();
    let changelog = topic(TopicKind::Changelog);
    for i in 0..a.runs {
        let tenant = &tenants[i % tenants.len()];
        let p = partition_for_key(tenant.as_str().as_bytes(), parts) as i32;
        let mut t = TriggerEvent::new(
            tenant.clone(),
            workflow.clone(),
            TriggerSource::Api,
            json!({"order": i}),
        );
        let key = format!("k{i}");
        t.idempotency_key = Some(key.clone());
        let payload = t.encode();
        let _ = core.handle(
            Record {
                topic: InputTopic::Triggers,
                partition: p,
                offset: i as i64,
                key: Some(tenant.as_str().as_bytes()),
                payload: Some(&payload),
            },
            now,
            true,
        );
        let _ = core.take_outputs();
        for w in core.take_changelog() {
            let value = w.value.unwrap_or_default();
            bytes += w.key.len() + value.len();
            backlog.send_to(&changelog, w.partition, w.key.as_bytes(), &value);
        }
        if i % (a.runs / SIGNALLED).max(1) == 0 && signalled.len() < SIGNALLED {
            signalled.push((
                tenant.clone(),
                RunId::from_idempotency_key(tenant, &workflow, &key),
            ));
        }
    }
    backlog.flush()?;
    let waiting: usize = core.load().values().map(|(running, _)| running).sum();
    anyhow::ensure!(waiting == a.runs, "{waiting} of {} runs wait", a.runs);
    drop(core);
    println!(
        "wrote {} waiting runs' changelog ({:.0} MiB) in {:.1} s",
        a.runs,
        bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );

    let mut first = spawn_holder(&a.brokers, &kafka.topic_prefix)?;
    let held = wait_held(&mut first)?;
    report("first start", &held, a.runs);
    first.kill()?;
    first.wait()?;
    let killed = Instant::now();
    let mut second = spawn_holder(&a.brokers, &kafka.topic_prefix)?;
    let again = wait_held(&mut second)?;
    report("after SIGKILL", &again, a.runs);
    println!(
        "SIGKILL to restored: {:.1} s",
        killed.elapsed().as_secs_f64()
    );

    let ended = signal_and_count(&kafka, &backlog, &signalled)?;
    println!(
        "signalled {} restored runs: {ended} ended (succeeded) within 120 s",
        signalled.len()
    );
    second.kill()?;
    second.wait()?;
    anyhow::ensure!(ended == signalled.len(), "not every signalled run ended");
    Ok(())
}

fn report(what: &str, h: &Held, runs: usize) {
    println!(
        "{what}: {} runs held, restore {:.1} s (ready {:.1} s after start), resident {:.0} MiB ({:.0} B per run)",
        h.running_runs,
        h.restore_secs,
        h.ready_secs,
        h.rss_bytes as f64 / (1 << 20) as f64,
        h.rss_bytes as f64 / runs as f64
    );
}

fn spawn_holder(brokers: &str, prefix: &str) -> anyhow::Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .args(["hold", "--brokers", brokers, "--prefix", prefix])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?)
}

fn wait_held(child: &mut Child) -> anyhow::Result<Held> {
    let out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("holder has no stdout"))?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("holder said {line:?}: {e}"))
}

/// Signals each run and counts the ones whose terminal event arrives.
fn signal_and_count(
    kafka: &KafkaSettings,
    backlog: &Backlog,
    runs: &[(TenantId, RunId)],
) -> anyhow::Result<usize> {
    let events_topic = kafka.topics().get(TopicKind::Events).name.clone();
    let events: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("{}reader", kafka.topic_prefix))
        .set("isolation.level", "read_committed")
        .create()?;
    // From the ends as they are now, read before the first signal goes out (`End` would
    // be resolved at the first fetch, after some runs may already have ended).
    let mut tpl = TopicPartitionList::new();
    for p in 0..kafka.work_partitions as i32 {
        let (_, end) = events.fetch_watermarks(&events_topic, p, Duration::from_secs(10))?;
        tpl.add_partition_offset(&events_topic, p, Offset::Offset(end))?;
    }
    events.assign(&tpl)?;
    let signals = kafka.topics().get(TopicKind::Signals).name.clone();
    let wanted: HashSet<RunId> = runs.iter().map(|(_, r)| *r).collect();
    for (tenant, run) in runs {
        let s = SignalEvent {
            tenant: tenant.clone(),
            run: *run,
            action: SignalAction::Signal {
                name: "approved".into(),
                correlation: None,
                payload: json!({"ok": true}),
            },
        };
        backlog.send(&signals, tenant.as_str().as_bytes(), &s.encode());
    }
    backlog.flush()?;
    let mut ended = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while ended.len() < wanted.len() && Instant::now() < deadline {
        if let Some(Ok(m)) = events.poll(Duration::from_millis(100))
            && let Some(Ok(Event::Run(e))) = m.payload().map(Event::decode)
            && e.status.is_terminal()
            && wanted.contains(&e.run)
        {
            ended.insert(e.run);
        }
    }
    Ok(ended.len())
}

/// The holding process: one orchestrator over the prefix's topics; prints a [`Held`]
/// line once every partition is restored, then holds them until killed.
pub async fn hold(a: HoldArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let kafka = KafkaSettings::plaintext(&a.brokers, a.prefix.clone(), 12, 12);
    let catalog = Arc::new(Catalog::default());
    let feed = Arc::clone(&catalog);
    let topic = kafka.topics().get(TopicKind::Definitions).name.clone();
    let mut tail = tail_topic(&kafka, &topic, move |r| {
        if let Some(p) = r.payload {
            let _ = feed.apply_bytes(p);
        }
    })
    .await?;
    tail.caught_up().await;
    let registry = prometheus::Registry::new();
    let _orch = aiq_orchestrator::spawn(
        kafka.clone(),
        OrchestratorSettings {
            // The same id on every start: static membership gives the partitions back
            // at once instead of after the dead member's session times out.
            instance_id: "restore-bench".into(),
            ..OrchestratorSettings::default()
        },
        catalog,
        tail.sync(),
        Arc::default(),
        Arc::default(),
        Arc::new(OrchestratorMetrics::new(&registry)),
    )?;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let families = registry.gather();
        let value = |name: &str| families.iter().find(|f| f.name() == name);
        let owned = value("aiq_orchestrator_owned_partitions")
            .and_then(|f| f.get_metric().first().map(|m| m.get_gauge().get_value()))
            .unwrap_or(0.0);
        let restore = value("aiq_orchestrator_restore_seconds")
            .and_then(|f| {
                f.get_metric()
                    .first()
                    .map(|m| m.get_histogram().get_sample_sum())
            })
            .unwrap_or(0.0);
        if owned as u32 == kafka.tenant_partitions && restore > 0.0 {
            let ready_secs = started.elapsed().as_secs_f64();
            // The load gauges are sampled every second.
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let families = registry.gather();
            let running_runs = families
                .iter()
                .find(|f| f.name() == "aiq_orchestrator_running_runs")
                .map(|f| {
                    f.get_metric()
                        .iter()
                        .map(|m| m.get_gauge().get_value() as i64)
                        .sum()
                })
                .unwrap_or(0);
            let held = Held {
                ready_secs,
                restore_secs: restore,
                rss_bytes: crate::state_memory::rss_bytes().unwrap_or(0),
                running_runs,
            };
            println!("{}", serde_json::to_string(&held)?);
            break;
        }
    }
    // Held until the parent kills this process.
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
