//! Crash safety: thousands of runs in flight while the orchestrator process is killed
//! with SIGKILL again and again; afterwards the committed topics show every run
//! completed exactly once, every task dispatched once and no step result applied twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use aiq_topics::{Event, RunStatus, StepStatus, TaskMessage, TopicKind};
use serde_json::json;

const PREFIX_VAR: &str = "AIQ_CRASH_CHILD_PREFIX";

const WORKFLOW: &str = r#"
id: crashy
steps:
  - id: first
    task: { connector: noop, args: { output: 1 } }
  - id: pause
    wait: { duration: 1s }
  - id: second
    task: { connector: noop, args: { output: 2 } }
"#;

/// Not a test on its own: the orchestrator process the crash test starts and kills.
#[test]
fn crash_child_orchestrator() {
    let Ok(prefix) = std::env::var(PREFIX_VAR) else {
        return;
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let env = common::env_with_prefix(&prefix, 4).unwrap();
    let orch = env.orchestrator("crash-child");
    tracing::info!("child orchestrator running");
    // Runs until killed; returning means the orchestrator failed.
    let result = orch.wait_blocking(None);
    panic!("orchestrator ended: {result:?}");
}

fn spawn_child(prefix: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_orchestrator", "--nocapture"])
        .env(PREFIX_VAR, prefix)
        .env("RUST_LOG", "warn,aiq_orchestrator=info")
        .spawn()
        .unwrap()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn ten_thousand_runs_survive_repeated_sigkill() {
    let runs_wanted: usize = std::env::var("AIQ_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let kills: usize = std::env::var("AIQ_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    #[allow(non_snake_case)]
    let (RUNS, KILLS) = (runs_wanted, kills);
    let Some(env) = common::env("orch_crash", 4) else {
        return;
    };
    let prefix = env.kafka.topic_prefix.clone();
    let tenants: Vec<String> = (0..8).map(|i| format!("tenant-{i}")).collect();
    for t in &tenants {
        env.register(t, 1, WORKFLOW);
    }
    let worker = env.worker();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill schedule seed {seed}");
    let mut rng = Rng(seed);

    let mut child = spawn_child(&prefix);
    let mut runs = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let t = &tenants[i % tenants.len()];
        runs.push(env.trigger(t, "crashy", json!({"i": i}), &format!("run-{i}")));
    }
    env.flush();

    let started = Instant::now();
    let mut kills_mid_work = 0;
    for k in 0..KILLS {
        // Kill only once the restarted process is doing work again (tasks are being
        // answered), at a random moment after that.
        let before = worker.answered.load(std::sync::atomic::Ordering::Relaxed);
        let wait_from = Instant::now();
        while worker.answered.load(std::sync::atomic::Ordering::Relaxed) == before
            && wait_from.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 1_500));
        if worker.answered.load(std::sync::atomic::Ordering::Relaxed) > before {
            kills_mid_work += 1;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        eprintln!(
            "kill {} at {:?}, {} tasks answered",
            k + 1,
            started.elapsed(),
            worker.answered.load(std::sync::atomic::Ordering::Relaxed)
        );
        child = spawn_child(&prefix);
    }

    let mut events = env.reader(TopicKind::Events);
    let done = events.read_until(Duration::from_secs(600), |rs| {
        rs.iter()
            .filter(|r| {
                matches!(Event::decode(&r.payload), Ok(Event::Run(e)) if e.status.is_terminal())
            })
            .count()
            >= RUNS
    });
    // Let anything doubled show up before counting.
    std::thread::sleep(Duration::from_secs(3));
    events.read_until(Duration::from_secs(2), |_| false);
    child.kill().unwrap();
    child.wait().unwrap();

    let mut started_runs: HashMap<_, usize> = HashMap::new();
    let mut ended: HashMap<_, Vec<RunStatus>> = HashMap::new();
    let mut steps: HashMap<(aiq_topics::RunId, String, u32, StepStatus), usize> = HashMap::new();
    for e in events.events() {
        match e {
            Event::Run(r) if r.status == RunStatus::Running => {
                *started_runs.entry(r.run).or_default() += 1;
            }
            Event::Run(r) => ended.entry(r.run).or_default().push(r.status),
            Event::Step(s) => {
                *steps
                    .entry((s.run, s.step.to_string(), s.attempt, s.status))
                    .or_default() += 1;
            }
            Event::RunErased(e) => panic!("nothing erases a run here: {e:?}"),
        }
    }
    assert!(done, "only {} of {RUNS} runs ended", ended.len());
    for run in &runs {
        assert_eq!(
            started_runs.get(run),
            Some(&1),
            "run {run} started {:?} times",
            started_runs.get(run)
        );
        assert_eq!(
            ended.get(run).map(Vec::as_slice),
            Some(&[RunStatus::Succeeded][..]),
            "run {run} ended as {:?}",
            ended.get(run)
        );
    }
    assert_eq!(ended.len(), RUNS, "runs ended that were never triggered");
    let doubled: Vec<_> = steps.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "step events applied twice: {:?}",
        &doubled[..doubled.len().min(5)]
    );
    // Each run: first started/succeeded, pause waiting... second started/succeeded.
    for run in &runs {
        for step in ["first", "second"] {
            assert_eq!(
                steps.get(&(*run, step.to_owned(), 1, StepStatus::Succeeded)),
                Some(&1)
            );
        }
    }

    let mut tasks = env.reader(TopicKind::Tasks);
    tasks.read_until(Duration::from_secs(30), |rs| rs.len() >= 2 * RUNS);
    let mut dispatched: HashMap<(aiq_topics::RunId, String, u32), usize> = HashMap::new();
    for r in &tasks.records {
        let t: TaskMessage = serde_json::from_slice(&r.payload).unwrap();
        *dispatched
            .entry((t.run, t.step.to_string(), t.attempt))
            .or_default() += 1;
    }
    assert_eq!(dispatched.len(), 2 * RUNS);
    assert!(
        dispatched.values().all(|n| *n == 1),
        "a task was committed twice"
    );
    assert!(
        kills_mid_work >= KILLS.min(5),
        "only {kills_mid_work} kills hit a working process"
    );
    eprintln!(
        "{RUNS} runs, {KILLS} SIGKILLs, all exactly once in {:?}",
        started.elapsed()
    );
}
