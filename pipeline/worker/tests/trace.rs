//! Trace context from trigger to completion: the orchestrator and a real worker against
//! a real Kafka, and every task, result and event record of the run read back.
#![allow(clippy::unwrap_used)]

// The orchestrator's test environment, shared rather than copied: these tests run
// an orchestrator too.
#[path = "../../orchestrator/tests/common/mod.rs"]
mod common;

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiq_connectors::{ConnectorSettings, Connectors, SecretStore};
use aiq_topics::{
    Event, RunId, RunStatus, SpanId, TRACEPARENT, TaskMessage, TaskResult, TopicKind, TraceParent,
};
use aiq_worker::WorkerSettings;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::json;

const TWO_STEPS: &str = r#"
id: traced
steps:
  - id: one
    task: { connector: noop, args: { output: "${ input.n }" } }
  - id: two
    task: { connector: noop, args: { output: "${ steps.one.output + 1 }" } }
"#;

/// The log output of the whole test binary, as JSON lines.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// The record's traceparent, checked to name the run's trace.
fn traceparent_of(r: &common::Read, run: RunId) -> TraceParent {
    let value = r
        .headers
        .get(TRACEPARENT)
        .unwrap_or_else(|| panic!("no traceparent on {}", String::from_utf8_lossy(&r.payload)));
    assert_eq!(value.len(), 55, "{value}");
    assert!(
        value.starts_with(&format!("00-{}-", run.as_uuid().simple())),
        "{value} is not in the trace of run {run}"
    );
    let tp: TraceParent = value.parse().unwrap();
    assert_eq!(tp.trace_id.run(), run);
    assert!(tp.sampled());
    tp
}

#[test]
fn every_record_of_a_run_carries_the_runs_trace() {
    let Some(env) = common::env("trace", 2) else {
        return;
    };
    // The orchestrator logs from its own thread: only a global subscriber sees it.
    let logs = Capture::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .init();
    env.register("acme", 1, TWO_STEPS);
    let orch = env.orchestrator("trace-test");
    let worker = env.rt.block_on(async {
        aiq_worker::spawn(
            &env.kafka,
            WorkerSettings::default(),
            Connectors::builtin(
                &ConnectorSettings::default(),
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
    let started = Instant::now();
    let run = env.trigger("acme", "traced", json!({"n": 41}), "t1");
    env.flush();

    let mut events = env.reader(TopicKind::Events);
    let finished = events.read_until(Duration::from_secs(60), |rs| {
        rs.iter().any(|r| {
            matches!(Event::decode(&r.payload), Ok(Event::Run(e)) if e.run == run && e.status.is_terminal())
        })
    });
    assert!(finished, "the run did not finish");
    println!("run finished in {} ms", started.elapsed().as_millis());
    let mut tasks = env.reader(TopicKind::Tasks);
    assert!(tasks.read_until(Duration::from_secs(30), |rs| rs.len() >= 2));
    let mut results = env.reader(TopicKind::Results);
    assert!(results.read_until(Duration::from_secs(30), |rs| rs.len() >= 2));

    // A result whose key names another tenant is dead-lettered with a warning, logged
    // while the record is handled: the line must carry the record's fields.
    let stray = TaskResult {
        attempt: 7,
        ..serde_json::from_slice(&results.records[0].payload).unwrap()
    };
    let stray_tp = TraceParent::of_result(&stray).to_string();
    let producer: BaseProducer = env.kafka.producer_config().create().unwrap();
    producer
        .send(
            BaseRecord::<[u8], [u8]>::to(&env.topic(TopicKind::Results))
                .key(b"intruder".as_slice())
                .payload(&serde_json::to_vec(&stray).unwrap())
                .headers(OwnedHeaders::new().insert(Header {
                    key: TRACEPARENT,
                    value: Some(stray_tp.as_bytes()),
                })),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let mut dead = env.reader(TopicKind::DeadLetters);
    assert!(dead.read_until(Duration::from_secs(30), |rs| !rs.is_empty()));
    assert_eq!(dead.records[0].key, b"intruder");

    env.rt.block_on(worker.shutdown()).unwrap();
    orch.shutdown_blocking().unwrap();

    let lines = logs.lines();
    let warning = lines
        .iter()
        .find(|l| l["fields"]["message"] == "dead letter")
        .unwrap_or_else(|| panic!("no dead letter warning in {lines:#?}"));
    println!("{warning}");
    let span = &warning["span"];
    assert_eq!(span["name"], "record");
    assert_eq!(span["tenant"], "intruder");
    assert_eq!(span["run_id"], run.to_string());
    assert_eq!(span["trace_id"], run.as_uuid().simple().to_string());
    assert_eq!(span["step"], stray.step.as_str());
    assert_eq!(span["attempt"], 7);

    // Tasks: span id of `task/<step>/<attempt>`.
    let mut spans = HashSet::new();
    for r in &tasks.records {
        let task: TaskMessage = serde_json::from_slice(&r.payload).unwrap();
        let tp = traceparent_of(r, run);
        assert_eq!(tp, TraceParent::of_task(&task));
        let label = format!("task/{}/{}", task.step, task.attempt);
        assert_eq!(tp.span_id, SpanId::derive(run, &label));
        assert!(spans.insert(tp.span_id), "span id repeated: {label}");
    }
    let steps: BTreeSet<String> = tasks
        .records
        .iter()
        .map(|r| {
            serde_json::from_slice::<TaskMessage>(&r.payload)
                .unwrap()
                .step
                .to_string()
        })
        .collect();
    assert_eq!(steps, BTreeSet::from(["one".to_owned(), "two".to_owned()]));

    // Results: span id of `result/<step>/<attempt>`, as the real worker wrote them.
    for r in &results.records {
        let result: TaskResult = serde_json::from_slice(&r.payload).unwrap();
        let tp = traceparent_of(r, run);
        assert_eq!(tp, TraceParent::of_result(&result));
        let label = format!("result/{}/{}", result.step, result.attempt);
        assert_eq!(tp.span_id, SpanId::derive(run, &label));
        assert!(spans.insert(tp.span_id), "span id repeated: {label}");
    }
    assert_eq!(results.records.len(), 2);

    // Events: every run and step event of the run.
    let mut terminal = None;
    for r in &events.records {
        let e = Event::decode(&r.payload).unwrap();
        assert_eq!(e.run(), run, "only this run's events are on these topics");
        let tp = traceparent_of(r, run);
        assert_eq!(tp, TraceParent::of_event(&e));
        let label = aiq_topics::Traced::Event(&e).label();
        assert!(label.starts_with("event/"), "{label}");
        assert_eq!(tp.span_id, SpanId::derive(run, &label));
        assert!(spans.insert(tp.span_id), "span id repeated: {label}");
        if let Event::Run(e) = &e
            && e.status.is_terminal()
        {
            terminal = Some((e.status, e.output.clone(), tp));
        }
    }
    let (status, output, tp) = terminal.unwrap();
    assert_eq!(status, RunStatus::Succeeded);
    assert_eq!(output, Some(json!(42)));
    assert_eq!(tp.span_id, SpanId::derive(run, "event/run/succeeded"));
    println!(
        "{} tasks, {} results, {} events, all in trace {}",
        tasks.records.len(),
        results.records.len(),
        events.records.len(),
        tp.trace_id
    );
}
