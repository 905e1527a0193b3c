//! The worker stage with the orchestrator, against a real Kafka.
#![allow(clippy::unwrap_used)]

// The orchestrator's test environment, shared rather than copied: these tests run
// an orchestrator too.
#[path = "../../orchestrator/tests/common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiq_connectors::{ConnectorSettings, Connectors, SecretStore};
use aiq_topics::{
    ErrorClass, Event, RunId, RunStatus, StepId, StepStatus, TaskMessage, TaskResult, TopicKind,
};
use aiq_worker::WorkerSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

const NOOP: &str = r#"
id: noop
steps:
  - id: one
    task: { connector: noop, args: { output: "${ input.n }", delay_ms: 5 } }
  - id: two
    task: { connector: noop, args: { output: "${ steps.one.output + 1 }" } }
"#;

const FILES: &str = r#"
id: files
steps:
  - id: save
    task: { connector: file, args: { op: write, path: "reports/${ input.name }.txt", content: "n=${ string(input.n) }" } }
  - id: load
    task: { connector: file, args: { op: read, path: "reports/${ input.name }.txt" } }
  - id: done
    succeed: { output: "${ steps.load.output.content }" }
"#;

const TOO_SLOW: &str = r#"
id: too-slow
steps:
  - id: sleepy
    task: { connector: noop, args: { delay_ms: 3000 }, timeout: 200ms }
"#;

#[test]
fn the_worker_runs_tasks_reports_results_and_cuts_off_a_task_at_its_timeout() {
    const RUNS: usize = 300;
    let Some(env) = common::env("worker", 4) else {
        return;
    };
    env.register("acme", 1, NOOP);
    env.register("acme", 1, TOO_SLOW);
    env.register("acme", 1, FILES);
    let file_root = std::env::temp_dir().join(aiq_testkit::unique("files"));
    let settings = WorkerSettings {
        max_in_flight: 16,
        ..WorkerSettings::default()
    };
    let connector_settings = ConnectorSettings {
        file_root: file_root.display().to_string(),
        ..ConnectorSettings::default()
    };
    let orch = env.orchestrator("worker-test");
    let worker = env.rt.block_on(async {
        aiq_worker::spawn(
            &env.kafka,
            settings.clone(),
            Connectors::builtin(
                &connector_settings,
                Arc::new(SecretStore::fixed(None, Vec::new())),
                None,
                &prometheus::Registry::new(),
            )
            .unwrap(),
            Arc::default(),
            &prometheus::Registry::new(),
        )
        .unwrap()
    });
    let runs: Vec<_> = (0..RUNS)
        .map(|i| env.trigger("acme", "noop", json!({"n": i}), &format!("n{i}")))
        .collect();
    let slow = env.trigger("acme", "too-slow", json!({}), "slow");
    let file_run = env.trigger("acme", "files", json!({"name": "daily", "n": 7}), "f1");
    env.flush();

    let mut events = env.reader(TopicKind::Events);
    let done = events.read_until(Duration::from_secs(120), |rs| {
        rs.iter()
            .filter(|r| matches!(Event::decode(&r.payload), Ok(Event::Run(e)) if e.status.is_terminal()))
            .count()
            > RUNS + 1
    });
    assert!(done, "runs did not finish");
    let all = events.events();
    for (i, run) in runs.iter().enumerate() {
        let end = all
            .iter()
            .find_map(|e| match e {
                Event::Run(r) if r.run == *run && r.status.is_terminal() => Some(r.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(end.status, RunStatus::Succeeded);
        assert_eq!(end.output, Some(json!(i + 1)));
    }
    let timed_out = all.iter().find_map(|e| match e {
        Event::Step(s) if s.run == slow && s.status == StepStatus::TimedOut => Some(s.clone()),
        _ => None,
    });
    let timed_out = timed_out.expect("the slow step timed out");
    assert_eq!(timed_out.error.unwrap().class, ErrorClass::Timeout);
    // Cut off by the worker at 200 ms, not by the orchestrator's backstop 5 s later.
    assert!(
        timed_out.duration_ms.unwrap() < 3_000,
        "{:?}",
        timed_out.duration_ms
    );

    let file_end = all.iter().find_map(|e| match e {
        Event::Run(r) if r.run == file_run && r.status.is_terminal() => Some(r.clone()),
        _ => None,
    });
    assert_eq!(file_end.unwrap().output, Some(json!("n=7")));
    assert_eq!(
        std::fs::read_to_string(file_root.join("acme/reports/daily.txt")).unwrap(),
        "n=7"
    );
    let _ = std::fs::remove_dir_all(&file_root);

    env.rt.block_on(worker.shutdown()).unwrap();
    orch.shutdown_blocking().unwrap();
}

fn connectors() -> Connectors {
    Connectors::builtin(
        &ConnectorSettings::default(),
        Arc::new(SecretStore::fixed(None, Vec::new())),
        None,
        &prometheus::Registry::new(),
    )
    .unwrap()
}

fn noop_task(i: usize, delay_ms: u64) -> TaskMessage {
    TaskMessage {
        tenant: common::tenant("acme"),
        run: RunId::random(),
        step: StepId::new(format!("s{i}")).unwrap(),
        attempt: 1,
        connector: "noop".into(),
        args: json!({ "output": i, "delay_ms": delay_ms }),
        timeout_ms: 10_000,
        dispatched_at: chrono::Utc::now(),
        expires_at: None,
    }
}

fn high_watermarks(env: &common::Env, topic: &str, partitions: i32) -> Offsets {
    let consumer: BaseConsumer = env
        .kafka
        .client_config()
        .set("group.id", aiq_testkit::unique("watermarks"))
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            (p, high)
        })
        .collect()
}

/// Committed offsets by partition.
type Offsets = HashMap<i32, i64>;
/// (partition, from, to) for each time a committed offset went backwards.
type Regressions = Vec<(i32, i64, i64)>;

/// Reads the worker group's committed task offsets over and over, remembering every
/// time one went backwards.
struct CommitWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    last: Arc<Mutex<Offsets>>,
    regressions: Arc<Mutex<Regressions>>,
}

impl CommitWatch {
    fn start(env: &common::Env, group: &str, partitions: i32) -> Self {
        let consumer: BaseConsumer = env
            .kafka
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let topic = env.topic(TopicKind::Tasks);
        let stop = Arc::new(AtomicBool::new(false));
        let last: Arc<Mutex<Offsets>> = Arc::default();
        let regressions: Arc<Mutex<Regressions>> = Arc::default();
        let (s, l, r) = (
            Arc::clone(&stop),
            Arc::clone(&last),
            Arc::clone(&regressions),
        );
        let thread = std::thread::spawn(move || {
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition(&topic, p);
            }
            while !s.load(Ordering::SeqCst) {
                if let Ok(c) = consumer.committed_offsets(tpl.clone(), Duration::from_secs(5)) {
                    let mut last = l.lock().unwrap();
                    for e in c.elements() {
                        let Offset::Offset(o) = e.offset() else {
                            continue;
                        };
                        let before = last.insert(e.partition(), o);
                        if let Some(b) = before.filter(|b| *b > o) {
                            r.lock().unwrap().push((e.partition(), b, o));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self {
            stop,
            thread: Some(thread),
            last,
            regressions,
        }
    }

    fn finish(mut self) -> (Offsets, Regressions) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let last = self.last.lock().unwrap().clone();
        let regressions = self.regressions.lock().unwrap().clone();
        (last, regressions)
    }
}

/// Two workers share the tasks; one joins, then the other leaves. A worker must stop
/// committing a partition once it is revoked: otherwise its stale offsets overwrite the
/// new owner's, and the group's committed offset goes backwards.
#[test]
fn workers_sharing_tasks_never_move_a_committed_offset_backwards() {
    const PARTITIONS: i32 = 4;
    let Some(env) = common::env("worker_rebalance", 4) else {
        return;
    };
    let tasks_topic = env.topic(TopicKind::Tasks);
    let settings = WorkerSettings {
        max_in_flight: 32,
        commit_interval_ms: 50,
        ..WorkerSettings::default()
    };
    let group = format!("{}{}", env.kafka.topic_prefix, settings.group_id);
    let watch = CommitWatch::start(&env, &group, PARTITIONS);
    let start = || {
        env.rt.block_on(async {
            aiq_worker::spawn(
                &env.kafka,
                settings.clone(),
                connectors(),
                Arc::default(),
                &prometheus::Registry::new(),
            )
            .unwrap()
        })
    };
    let mut sent: Vec<TaskMessage> = Vec::new();
    let send = |sent: &mut Vec<TaskMessage>, n: usize| {
        for _ in 0..n {
            let i = sent.len();
            let t = noop_task(i, 5);
            env.send_nowait(
                &tasks_topic,
                Some(i as i32 % PARTITIONS),
                format!("{}/{}", t.tenant, t.run).as_bytes(),
                &serde_json::to_vec(&t).unwrap(),
            );
            sent.push(t);
        }
        env.flush();
    };
    let mut results = env.reader(TopicKind::Results);
    let answered = |rs: &[common::Read], sent: &[TaskMessage]| {
        let got: HashSet<(RunId, String)> = rs
            .iter()
            .map(|r| serde_json::from_slice::<TaskResult>(&r.payload).unwrap())
            .map(|r| (r.run, r.step.as_str().to_owned()))
            .collect();
        sent.iter()
            .all(|t| got.contains(&(t.run, t.step.as_str().to_owned())))
    };

    // One worker owns every partition and commits all of them.
    let first = start();
    send(&mut sent, 200);
    assert!(results.read_until(Duration::from_secs(60), |rs| answered(rs, &sent)));

    // A second joins: the partitions are split while tasks keep coming.
    let second = start();
    for _ in 0..30 {
        send(&mut sent, 20);
        std::thread::sleep(Duration::from_millis(100));
    }
    // The first leaves: the second takes everything over.
    env.rt.block_on(first.shutdown()).unwrap();
    for _ in 0..20 {
        send(&mut sent, 20);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        results.read_until(Duration::from_secs(60), |rs| answered(rs, &sent)),
        "not every task got a result"
    );
    // Every offset gets committed, up to the end of each partition.
    let ends = high_watermarks(&env, &tasks_topic, PARTITIONS);
    let deadline = Instant::now() + Duration::from_secs(20);
    while watch.last.lock().unwrap().clone() != ends && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    env.rt.block_on(second.shutdown()).unwrap();
    let (last, regressions) = watch.finish();
    assert!(
        regressions.is_empty(),
        "committed offsets went backwards (partition, from, to): {regressions:?}"
    );
    assert_eq!(last, ends, "every task's offset is committed");
}

/// A task record the worker cannot read goes to the dead letters with the headers the
/// orchestrator would set, plus the record's own; its offset is committed after that,
/// here by `stop` (the commit interval is too long to come first).
#[test]
fn undecodable_task_records_are_dead_lettered_with_their_origin_and_headers() {
    let Some(env) = common::env("worker_dlq", 4) else {
        return;
    };
    let tasks_topic = env.topic(TopicKind::Tasks);
    let settings = WorkerSettings {
        commit_interval_ms: 600_000,
        ..WorkerSettings::default()
    };
    let group = format!("{}{}", env.kafka.topic_prefix, settings.group_id);
    let watch = CommitWatch::start(&env, &group, 4);
    let worker = env.rt.block_on(async {
        aiq_worker::spawn(
            &env.kafka,
            settings.clone(),
            connectors(),
            Arc::default(),
            &prometheus::Registry::new(),
        )
        .unwrap()
    });
    let producer: BaseProducer = env.kafka.producer_config().create().unwrap();
    let bad = BaseRecord::<[u8], [u8]>::to(&tasks_topic)
        .partition(1)
        .key(b"acme/bad")
        .payload(b"{not json")
        .headers(
            OwnedHeaders::new()
                .insert(Header {
                    key: "traceparent",
                    value: Some("00-abc-01"),
                })
                .insert(Header::<&[u8]> {
                    key: "empty",
                    value: None,
                }),
        );
    producer.send(bad).map_err(|(e, _)| e).unwrap();
    let tombstone = BaseRecord::<[u8], [u8]>::to(&tasks_topic)
        .partition(1)
        .key(b"acme/gone");
    producer.send(tombstone).map_err(|(e, _)| e).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let good = noop_task(0, 0);
    env.send(
        &tasks_topic,
        Some(1),
        b"acme/good",
        &serde_json::to_vec(&good).unwrap(),
    );

    let mut dlq = env.reader(TopicKind::DeadLetters);
    assert!(dlq.read_until(Duration::from_secs(30), |rs| rs.len() >= 2));
    let mut results = env.reader(TopicKind::Results);
    assert!(results.read_until(Duration::from_secs(30), |rs| !rs.is_empty()));
    let result: TaskResult = serde_json::from_slice(&results.records[0].payload).unwrap();
    assert_eq!(result.run, good.run);

    let by_key = |k: &[u8]| dlq.records.iter().find(|r| r.key == k).unwrap().clone();
    let bad = by_key(b"acme/bad");
    assert_eq!(bad.payload, b"{not json");
    let h = |r: &common::Read, k: &str| r.headers.get(k).cloned();
    assert_eq!(h(&bad, "aiq-dlq-kind").as_deref(), Some("undecodable"));
    assert!(
        h(&bad, "aiq-dlq-reason")
            .unwrap()
            .starts_with("task is not valid: ")
    );
    assert_eq!(h(&bad, "aiq-dlq-stage").as_deref(), Some("worker"));
    assert_eq!(h(&bad, "aiq-dlq-topic"), Some(tasks_topic.clone()));
    assert_eq!(h(&bad, "aiq-dlq-partition").as_deref(), Some("1"));
    assert_eq!(h(&bad, "aiq-dlq-offset").as_deref(), Some("0"));
    assert_eq!(h(&bad, "traceparent").as_deref(), Some("00-abc-01"));
    assert_eq!(h(&bad, "empty").as_deref(), Some(""));
    let gone = by_key(b"acme/gone");
    assert!(gone.payload.is_empty());
    assert_eq!(
        h(&gone, "aiq-dlq-reason").as_deref(),
        Some("task record has no value")
    );
    assert_eq!(h(&gone, "aiq-dlq-offset").as_deref(), Some("1"));

    // Stopping commits all three offsets, the dead-lettered ones included.
    env.rt.block_on(worker.shutdown()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while watch.last.lock().unwrap().get(&1) != Some(&3) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (last, regressions) = watch.finish();
    assert_eq!(last.get(&1), Some(&3));
    assert!(regressions.is_empty(), "{regressions:?}");
}
