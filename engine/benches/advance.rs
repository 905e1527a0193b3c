//! Transitions per second, and the serialized size of a waiting run.
//!
//!   cargo bench -p aiq-engine --bench advance
//!
//! One iteration drives a 10-step workflow (tasks, a choice, sets) from trigger to
//! completion: 8 transitions, the trigger and one result per task (the choice, the set
//! and the succeed run inside them). The state size is printed once before measuring.

use std::hint::black_box;

use aiq_engine::run::{Command, Input};
use aiq_engine::{Workflow, advance, validate_source};
use aiq_topics::{RunId, TaskOutcome, TaskResult, TenantId};
use chrono::{DateTime, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

const TEN_STEPS: &str = r#"
id: bench
steps:
  - { id: s1, task: { connector: http, args: { url: "https://x/${ input.id }" } } }
  - { id: s2, task: { connector: http } }
  - { id: s3, set: { vars: { total: "${ input.id * 2 }" } } }
  - { id: s4, task: { connector: sql, args: { q: "${ vars.total }" } } }
  - id: s5
    choice:
      cases: [ { when: "vars.total > 1", next: s6 } ]
      default: s10
  - { id: s6, task: { connector: http } }
  - { id: s7, task: { connector: kafka } }
  - { id: s8, task: { connector: email } }
  - { id: s9, task: { connector: file } }
  - { id: s10, succeed: {} }
"#;

const WAITING: &str = r#"
id: approval
steps:
  - id: ask
    wait_for_event: { signal: approved, correlation: "input.order", timeout: 72h }
  - id: done
    succeed: {}
"#;

const DELAYED: &str = r#"
id: reminder
steps:
  - id: pause
    wait: { duration: 24h }
  - id: done
    succeed: {}
"#;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
}

fn run_to_end(wf: &Workflow) -> usize {
    let mut transitions = 1;
    let mut t = advance(
        wf,
        None,
        Input::Trigger {
            run: RunId::from_uuid(uuid::Uuid::from_u128(7)),
            tenant: TenantId::new("t").unwrap_or_else(|_| unreachable!()),
            input: json!({"id": 21}),
        },
        now(),
    );
    loop {
        let task = t.commands.iter().find_map(|c| match c {
            Command::DispatchTask(m) => Some(m.clone()),
            _ => None,
        });
        let Some(task) = task else { return transitions };
        let result = Input::StepResult(TaskResult {
            tenant: task.tenant,
            run: task.run,
            step: task.step,
            attempt: task.attempt,
            outcome: TaskOutcome::Ok {
                output: json!({"ok": true}),
            },
            started_at: now(),
            finished_at: now(),
        });
        t = advance(wf, t.state, result, now());
        transitions += 1;
    }
}

fn bench(c: &mut Criterion) {
    let wf = validate_source("bench.yaml", TEN_STEPS).unwrap_or_else(|e| panic!("{e:?}"));
    let per_run = run_to_end(&wf) as u64;

    for (what, doc) in [("a signal", WAITING), ("a wait step", DELAYED)] {
        let waiting = validate_source("waiting.yaml", doc).unwrap_or_else(|e| panic!("{e:?}"));
        let t = advance(
            &waiting,
            None,
            Input::Trigger {
                run: RunId::from_uuid(uuid::Uuid::from_u128(9)),
                tenant: TenantId::new("acme").unwrap_or_else(|_| unreachable!()),
                input: json!({"order": "o-1001"}),
            },
            now(),
        );
        if let Some(state) = &t.state {
            eprintln!(
                "serialized state of a run waiting for {what}: {} bytes",
                state.encode().len()
            );
        }
    }

    let mut g = c.benchmark_group("advance");
    g.throughput(Throughput::Elements(per_run));
    g.bench_function("10-step workflow, trigger to completion", |b| {
        b.iter(|| black_box(run_to_end(&wf)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
