//! A timer backlog after downtime is fired in bounded transactions: the orchestrator is
//! stopped with every run at a `wait` step, the timers fall due while it is down, and a
//! new instance with the same id fires them all, each once, in transactions of under 2 s.
//!
//! `AIQ_TIMERS_BACKLOG_RUNS` sets the number of runs (default 20,000: some two and a half
//! minutes on a debug build; 50,000 loads for three minutes there, so measure that with
//! `--release`).
#![allow(clippy::unwrap_used)]

mod common;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiq_orchestrator::{OrchestratorMetrics, OrchestratorSettings, TenantQuota};
use aiq_stage::StageHandle;
use aiq_topics::{Event, RunId, RunStatus, TopicKind};
use chrono::Utc;
use common::{Env, Read, env};
use serde_json::json;

const NAP: &str = r#"
id: nap
steps:
  - id: pause
    wait: { until: "input.at" }
  - id: done
    succeed: {}
"#;

const TENANTS: [&str; 6] = ["t0", "t1", "t2", "t3", "t4", "t5"];

fn settings() -> OrchestratorSettings {
    OrchestratorSettings {
        quota: TenantQuota {
            max_concurrent_runs: 1_000_000,
            max_inflight_tasks: 1_000_000,
            max_queued_runs: 100_000,
        },
        ..common::settings("backlog-1")
    }
}

fn spawn(env: &Env, registry: &prometheus::Registry) -> StageHandle {
    aiq_orchestrator::spawn(
        env.kafka.clone(),
        settings(),
        Arc::clone(&env.catalog),
        env.tail.sync(),
        Arc::default(),
        Arc::default(),
        Arc::new(OrchestratorMetrics::new(registry)),
    )
    .unwrap()
}

/// Counts run events as they are read, without decoding a record twice.
#[derive(Default)]
struct Runs {
    read: Cell<usize>,
    running: Cell<usize>,
    /// Terminal run events per run, with the status of the last one.
    ended: RefCell<HashMap<RunId, (u32, RunStatus)>>,
}

impl Runs {
    fn scan(&self, records: &[Read]) {
        for r in &records[self.read.get()..] {
            if let Ok(Event::Run(e)) = Event::decode(&r.payload) {
                if e.status == RunStatus::Running {
                    self.running.set(self.running.get() + 1);
                } else if e.status.is_terminal() {
                    let mut ended = self.ended.borrow_mut();
                    let n = ended.entry(e.run).or_insert((0, e.status));
                    n.0 += 1;
                    n.1 = e.status;
                }
            }
        }
        self.read.set(records.len());
    }

    fn ended(&self) -> usize {
        self.ended.borrow().len()
    }
}

/// `<name>_bucket{le="<le>"}` or `<name>_count` from the text exposition.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in\n{text}"))
}

fn exposition(registry: &prometheus::Registry) -> String {
    let mut out = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &registry.gather(),
        &mut out,
    )
    .unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn a_backlog_of_due_timers_fires_each_once_in_transactions_under_two_seconds() {
    let Some(env) = env("timers_backlog", 4) else {
        return;
    };
    let n: usize = std::env::var("AIQ_TIMERS_BACKLOG_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    for t in TENANTS {
        env.register(t, 1, NAP);
    }
    // Every timer falls due at once, later than loading the runs can take (a debug
    // build on two busy cores starts some 300 runs a second).
    let load_secs = std::env::var("AIQ_TIMERS_BACKLOG_LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20 + n as u64 / 200);
    let load_budget = Duration::from_secs(load_secs);
    let due = Utc::now() + chrono::Duration::from_std(load_budget).unwrap();
    let at = due.to_rfc3339();
    let loading = Instant::now();
    for i in 0..n {
        let tenant = TENANTS[i % TENANTS.len()];
        env.trigger(tenant, "nap", json!({"at": at}), &format!("r{i}"));
    }
    env.flush();

    let runs = Runs::default();
    let mut events = env.reader(TopicKind::Events);
    let first_registry = prometheus::Registry::new();
    let first = spawn(&env, &first_registry);
    let loaded = events.read_until(load_budget, |rs| {
        runs.scan(rs);
        runs.running.get() >= n
    });
    first.shutdown_blocking().unwrap();
    let stopped = Utc::now();
    assert!(
        loaded,
        "{} of {n} runs started in {load_budget:?}",
        runs.running.get()
    );
    assert!(
        stopped < due && runs.ended() == 0,
        "the first instance ran into the due time ({} runs ended) after {:?} of loading: \
         the test proves nothing, give it more time",
        runs.ended(),
        loading.elapsed()
    );
    let first_text = exposition(&first_registry);
    eprintln!(
        "{n} runs started and waiting in {:?}; loading: {} transactions, {:.0} s in them, \
         {:.0} s committing",
        loading.elapsed(),
        sample(&first_text, "aiq_orchestrator_transaction_seconds_count"),
        sample(&first_text, "aiq_orchestrator_transaction_seconds_sum"),
        sample(&first_text, "aiq_orchestrator_commit_seconds_sum"),
    );
    // Every commit is timed in its three parts, which together fit inside it.
    let commits = sample(&first_text, "aiq_orchestrator_commit_seconds_count");
    let mut parts = 0.0;
    for phase in ["acks", "offsets", "end"] {
        let count = format!("aiq_orchestrator_commit_phase_seconds_count{{phase=\"{phase}\"}}");
        let sum = format!("aiq_orchestrator_commit_phase_seconds_sum{{phase=\"{phase}\"}}");
        assert_eq!(sample(&first_text, &count), commits, "{phase}");
        parts += sample(&first_text, &sum);
    }
    assert!(commits > 0.0);
    assert!(
        parts <= sample(&first_text, "aiq_orchestrator_commit_seconds_sum"),
        "the phases ({parts} s) take longer than the commits"
    );

    // Down until every timer is due.
    std::thread::sleep((due - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(1));

    let registry = prometheus::Registry::new();
    let firing = Instant::now();
    let second = spawn(&env, &registry);
    let all_ended = events.read_until(Duration::from_secs(600), |rs| {
        runs.scan(rs);
        runs.ended() >= n
    });
    let fired_in = firing.elapsed();
    assert!(all_ended, "{} of {n} runs ended", runs.ended());
    second.shutdown_blocking().unwrap();
    // Whatever the second instance committed after the last run ended, duplicates too.
    events.read_until(Duration::from_secs(3), |rs| {
        runs.scan(rs);
        false
    });

    let ended = runs.ended.borrow();
    let twice: Vec<_> = ended.iter().filter(|(_, (k, _))| *k != 1).take(5).collect();
    assert!(twice.is_empty(), "runs ended more than once: {twice:?}");
    assert_eq!(ended.len(), n);
    assert!(ended.values().all(|(_, s)| *s == RunStatus::Succeeded));

    let text = exposition(&registry);
    let name = "aiq_orchestrator_transaction_seconds";
    let count = sample(&text, &format!("{name}_count"));
    let within_2s = sample(&text, &format!("{name}_bucket{{le=\"2\"}}"));
    let restore = sample(&text, "aiq_orchestrator_restore_seconds_sum");
    let longest = [
        "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2", "5", "10", "30",
    ]
    .into_iter()
    .find(|le| sample(&text, &format!("{name}_bucket{{le=\"{le}\"}}")) >= count)
    .unwrap_or("+Inf");
    eprintln!(
        "{n} timers fired in {fired_in:?} after a start (restore {restore:.1} s): {:.0} timers/s \
         overall, {:.0} timers/s after the restore; {count} transactions, the longest <= {longest} s",
        n as f64 / fired_in.as_secs_f64(),
        n as f64 / (fired_in.as_secs_f64() - restore).max(0.001),
    );
    assert!(count > 0.0);
    assert_eq!(
        count - within_2s,
        0.0,
        "transactions longer than 2 s:\n{text}"
    );
}
