//! The worker's edges, against a real Kafka: records it cannot or must not run do not
//! hold up their partition, results over the size limit become clean step errors, and
//! tasks past their expiry are answered without running.
#![allow(clippy::unwrap_used)]

#[path = "../../orchestrator/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiq_connectors::{ConnectorSettings, Connectors, SecretStore};
use aiq_stage::StageHandle;
use aiq_topics::{ErrorClass, RunId, StepId, TaskMessage, TaskOutcome, TaskResult, TopicKind};
use aiq_worker::WorkerSettings;
use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

fn task(step: &str, connector: &str, args: Value) -> TaskMessage {
    TaskMessage {
        tenant: common::tenant("acme"),
        run: RunId::random(),
        step: StepId::new(step).unwrap(),
        attempt: 1,
        connector: connector.into(),
        args,
        timeout_ms: 10_000,
        dispatched_at: Utc::now(),
        expires_at: None,
    }
}

fn start(env: &common::Env, settings: WorkerSettings, file_root: &Path) -> StageHandle {
    let connectors = ConnectorSettings {
        file_root: file_root.display().to_string(),
        ..ConnectorSettings::default()
    };
    env.rt.block_on(async {
        aiq_worker::spawn(
            &env.kafka,
            settings,
            Connectors::builtin(
                &connectors,
                Arc::new(SecretStore::fixed(None, Vec::new())),
                None,
                &prometheus::Registry::new(),
            )
            .unwrap(),
            Arc::default(),
            &prometheus::Registry::new(),
        )
        .unwrap()
    })
}

fn send(env: &common::Env, topic: &str, t: &TaskMessage) {
    env.send(
        topic,
        Some(0),
        format!("{}/{}", t.tenant, t.run).as_bytes(),
        &serde_json::to_vec(t).unwrap(),
    );
}

fn results(reader: &common::Reader) -> Vec<TaskResult> {
    reader
        .records
        .iter()
        .map(|r| serde_json::from_slice(&r.payload).unwrap())
        .collect()
}

fn result_of(reader: &common::Reader, t: &TaskMessage) -> TaskResult {
    results(reader)
        .into_iter()
        .find(|r| r.run == t.run)
        .unwrap_or_else(|| panic!("no result for {}", t.step))
}

/// The worker group's committed offset of tasks partition 0, waiting up to `timeout`
/// for it to reach `want`.
fn committed(env: &common::Env, group: &str, want: i64, timeout: Duration) -> Option<i64> {
    let consumer: BaseConsumer = env
        .kafka
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&env.topic(TopicKind::Tasks), 0);
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Ok(c) = consumer.committed_offsets(tpl.clone(), Duration::from_secs(5))
            && let Some(Offset::Offset(o)) = c.elements().first().map(|e| e.offset())
        {
            last = Some(o);
        }
        if last == Some(want) || Instant::now() > deadline {
            return last;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An undecodable record and a task whose result is over `max_result_bytes`, ahead of
/// good tasks in one partition: the first is dead-lettered, the second answered
/// `too_large` naming the limit and the size, the good ones answered, and the committed
/// offset passes all of them.
#[test]
fn poison_tasks_do_not_hold_up_their_partition() {
    let Some(env) = common::env("worker_poison", 1) else {
        return;
    };
    let tasks = env.topic(TopicKind::Tasks);
    let settings = WorkerSettings {
        max_result_bytes: 2048,
        commit_interval_ms: 50,
        ..WorkerSettings::default()
    };
    let group = format!("{}{}", env.kafka.topic_prefix, settings.group_id);
    env.send(&tasks, Some(0), b"acme/bad", b"{not a task");
    let oversized = task("big", "noop", json!({ "output": "x".repeat(5000) }));
    send(&env, &tasks, &oversized);
    let good: Vec<_> = (0..3)
        .map(|i| task(&format!("good{i}"), "noop", json!({ "output": i })))
        .collect();
    for t in &good {
        send(&env, &tasks, t);
    }
    let root = std::env::temp_dir().join(aiq_testkit::unique("worker-poison"));
    let worker = start(&env, settings, &root);

    let mut reader = env.reader(TopicKind::Results);
    assert!(reader.read_until(Duration::from_secs(60), |rs| rs.len() >= 4));
    for (i, t) in good.iter().enumerate() {
        assert_eq!(
            result_of(&reader, t).outcome,
            TaskOutcome::Ok { output: json!(i) }
        );
    }
    match result_of(&reader, &oversized).outcome {
        TaskOutcome::Error { class, message } => {
            assert_eq!(class, ErrorClass::TooLarge, "{message}");
            assert!(message.contains("limit of 2048 bytes"), "{message}");
            let size: usize = message
                .split_whitespace()
                .nth(3)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no size in {message:?}"));
            assert!(size > 5000, "{message}");
        }
        ok => panic!("the oversized result was written: {ok:?}"),
    }
    let mut dlq = env.reader(TopicKind::DeadLetters);
    assert!(dlq.read_until(Duration::from_secs(30), |rs| !rs.is_empty()));
    assert_eq!(dlq.records[0].key, b"acme/bad");
    assert_eq!(
        dlq.records[0]
            .headers
            .get("aiq-dlq-offset")
            .map(String::as_str),
        Some("0")
    );
    // Five records, all done: committed past every one, poison included.
    assert_eq!(committed(&env, &group, 5, Duration::from_secs(20)), Some(5));
    env.rt.block_on(worker.shutdown()).unwrap();
    let _ = std::fs::remove_dir_all(&root);
}

/// A task picked up after its `expires_at` is answered `timeout` without its connector
/// being called; one expiring before its own timeout would end is cut off at the
/// expiry; one without `expires_at` (written before it existed) runs as always.
#[test]
fn expired_tasks_are_answered_timeout_without_running() {
    let Some(env) = common::env("worker_expiry", 1) else {
        return;
    };
    let tasks = env.topic(TopicKind::Tasks);
    let root = std::env::temp_dir().join(aiq_testkit::unique("worker-expiry"));
    let write = |name: &str| json!({ "op": "write", "path": name, "content": "ran" });
    let mut expired = task("expired", "file", write("expired.txt"));
    expired.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
    let mut live = task("live", "file", write("live.txt"));
    live.expires_at = Some(Utc::now() + chrono::Duration::minutes(10));
    let old = task("old", "file", write("old.txt"));
    let mut cut = task("cut", "noop", json!({ "delay_ms": 8000 }));
    cut.expires_at = Some(Utc::now() + chrono::Duration::seconds(2));
    for t in [&expired, &live, &old, &cut] {
        send(&env, &tasks, t);
    }
    let worker = start(&env, WorkerSettings::default(), &root);

    let mut reader = env.reader(TopicKind::Results);
    assert!(reader.read_until(Duration::from_secs(60), |rs| rs.len() >= 4));
    match result_of(&reader, &expired).outcome {
        TaskOutcome::Error { class, message } => {
            assert_eq!(class, ErrorClass::Timeout);
            assert!(
                message.starts_with("expired before a worker picked it up"),
                "{message}"
            );
        }
        ok => panic!("an expired task ran: {ok:?}"),
    }
    assert!(
        !root.join("acme/expired.txt").exists(),
        "the connector was called"
    );
    for t in [&live, &old] {
        assert!(
            matches!(result_of(&reader, t).outcome, TaskOutcome::Ok { .. }),
            "{}",
            t.step
        );
    }
    assert!(root.join("acme/live.txt").exists());
    assert!(root.join("acme/old.txt").exists());
    let r = result_of(&reader, &cut);
    assert!(
        matches!(
            r.outcome,
            TaskOutcome::Error {
                class: ErrorClass::Timeout,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );
    let ran = (r.finished_at - r.started_at).num_milliseconds();
    assert!(ran < 4000, "ran {ran} ms, past its expiry");
    env.rt.block_on(worker.shutdown()).unwrap();
    let _ = std::fs::remove_dir_all(&root);
}
