//! `aiq-load sql-isolation`: can tenant SQL starve the pipeline? Tenant B's runs go
//! through a running `aiq serve` at a fixed open-loop rate twice: alone, then while
//! tenant A keeps `--clients` heavy queries in flight (each client sends its next query as
//! soon as the last is answered, after `Retry-After` when refused). Reported: B's
//! end-to-end percentiles in both phases and their ratio, A's answers by status (429s
//! beyond its limit, with the problem types seen), and with `--pid` the CPU time of
//! `aiq serve`'s threads by name, SQL threads (`aiq-sql`) against the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::loadgen::{self, ACTING_TENANT, Mix, Outcome};

/// A cross join DataFusion cannot shortcut: a few seconds of both SQL threads per query.
const HEAVY: &str = "SELECT count(*) AS n FROM generate_series(1, 30000) a \
                     CROSS JOIN generate_series(1, 30000) b WHERE (a.value + b.value) % 7 = 0";

/// Linux reports thread CPU time in USER_HZ ticks, 100 per second on every architecture.
const TICKS_PER_SEC: f64 = 100.0;

#[derive(clap::Args)]
pub struct SqlIsolationArgs {
    /// Base URL of the running `aiq serve`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// A platform admin's token: it acts for tenants A and B with X-AIQ-Tenant.
    #[arg(long, env = "AIQ_LOAD_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long, env = "AIQ_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The topic prefix `aiq serve` uses (its events topic is `<prefix>events`).
    #[arg(long, env = "AIQ_KAFKA_TOPIC_PREFIX", default_value = "aiq.")]
    topic_prefix: String,
    /// Tenant B's triggers per second, in each phase.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Seconds of B's load in each phase.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Tenant B's workflows (see `aiq-load run --mix`).
    #[arg(long, default_value = "hello=1")]
    mix: String,
    #[arg(long, default_value = "examples/workflows")]
    examples: PathBuf,
    /// Tenant A's query clients, each with one query in flight at a time.
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// Tenant A's query.
    #[arg(long, default_value = HEAVY)]
    query: String,
    /// `aiq serve`'s process id: CPU time of its threads by name in each phase (Linux).
    #[arg(long)]
    pid: Option<u32>,
    /// Seconds at the start of each phase left out of the sustained throughput.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value_t = 60.0)]
    drain_timeout: f64,
    /// Exit non-zero unless B's p99 beside the queries is at most this many times its p99
    /// alone.
    #[arg(long)]
    max_p99_ratio: Option<f64>,
    /// Where each phase's report and summary.json go.
    #[arg(long, default_value = "aiq-load-sql")]
    out: PathBuf,
}

/// What tenant A's clients were answered.
#[derive(Debug, Default)]
struct Answers {
    by_status: BTreeMap<u16, u64>,
    /// `type` of every 429's problem document.
    problem_types: BTreeSet<String>,
    /// 429s that carried `Retry-After`.
    with_retry_after: u64,
    /// Seconds of the answered (200) queries.
    ok_seconds: Vec<f64>,
}

/// CPU seconds of one process's threads, SQL threads apart.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    sql: f64,
    other: f64,
}

/// `aiq serve`'s CPU by thread group since the process started; `None` off Linux or
/// when the process is gone.
fn cpu(pid: u32) -> Option<Cpu> {
    let mut total = Cpu::default();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(stat) = std::fs::read_to_string(task.ok()?.path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // `tid (name) state ...`: the name may hold spaces, the fields follow its ')'.
        let (Some((head, tail)), true) = (stat.rsplit_once(')'), stat.contains('(')) else {
            continue;
        };
        let name = head.split_once('(').map_or("", |(_, n)| n);
        let fields: Vec<&str> = tail.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
        let ticks: u64 = fields
            .get(11..13)
            .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
        let secs = ticks as f64 / TICKS_PER_SEC;
        if name == aiq_analytics::THREAD_NAME {
            total.sql += secs;
        } else {
            total.other += secs;
        }
    }
    Some(total)
}

fn since(before: Option<Cpu>, after: Option<Cpu>) -> Option<Cpu> {
    let (b, a) = (before?, after?);
    Some(Cpu {
        sql: a.sql - b.sql,
        other: a.other - b.other,
    })
}

fn lock(a: &Mutex<Answers>) -> std::sync::MutexGuard<'_, Answers> {
    a.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One of tenant A's clients: a query, its answer, the next query; until aborted.
async fn client(
    http: reqwest::Client,
    url: String,
    token: String,
    tenant: String,
    query: String,
    answers: Arc<Mutex<Answers>>,
) {
    loop {
        let started = Instant::now();
        let resp = http
            .post(&url)
            .bearer_auth(&token)
            .header(ACTING_TENANT, &tenant)
            .json(&json!({ "query": query }))
            .send()
            .await;
        let mut wait = Duration::ZERO;
        let status = match resp {
            Ok(r) => {
                let status = r.status().as_u16();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let body: Value = r.json().await.unwrap_or(Value::Null);
                let mut a = lock(&answers);
                if status == 429 {
                    if let Some(secs) = retry_after {
                        a.with_retry_after += 1;
                        wait = Duration::from_secs(secs);
                    }
                    if let Some(t) = body["type"].as_str() {
                        a.problem_types.insert(t.to_owned());
                    }
                } else if status == 200 {
                    a.ok_seconds.push(started.elapsed().as_secs_f64());
                }
                status
            }
            Err(_) => 0,
        };
        *lock(&answers).by_status.entry(status).or_default() += 1;
        if status == 0 {
            wait = Duration::from_secs(1);
        }
        tokio::time::sleep(wait.max(Duration::from_millis(50))).await;
    }
}

/// One phase of B's load, with or without A's queries.
struct Phase {
    name: &'static str,
    outcome: Outcome,
    answers: Answers,
    cpu: Option<Cpu>,
}

async fn phase(a: &SqlIsolationArgs, name: &'static str, with_sql: bool) -> anyhow::Result<Phase> {
    let stamp = chrono::Utc::now().format("%m%d%H%M%S");
    let answers = Arc::new(Mutex::new(Answers::default()));
    let mut clients = JoinSet::new();
    if with_sql {
        let http = loadgen::http_client()
            .timeout(Duration::from_secs(120))
            .build()?;
        let url = format!("{}/v1/sql", a.api.trim_end_matches('/'));
        let tenant = format!("sqla{stamp}");
        for _ in 0..a.clients {
            clients.spawn(client(
                http.clone(),
                url.clone(),
                a.token.clone(),
                tenant.clone(),
                a.query.clone(),
                Arc::clone(&answers),
            ));
        }
    }
    let before = a.pid.and_then(cpu);
    let settings = loadgen::Settings {
        api: a.api.clone(),
        token: a.token.clone(),
        brokers: a.brokers.clone(),
        topic_prefix: a.topic_prefix.clone(),
        rate: a.rate,
        runs: (a.rate * a.duration).round() as u64,
        tenants: 1,
        zipf: 1.0,
        mix: Mix::parse(&a.mix)?,
        tenant_prefix: format!("sqlb{stamp}{name}-"),
        examples: a.examples.clone(),
        seed: 1,
        warmup: Duration::try_from_secs_f64(a.warmup).context("--warmup")?,
        drain_timeout: Duration::try_from_secs_f64(a.drain_timeout).context("--drain-timeout")?,
        max_in_flight: 4096,
        baseline_messages: None,
        hops: false,
        cron_schedules: 0,
        pipe_messages: None,
        out: a.out.join(name),
        show_progress: std::io::stderr().is_terminal(),
    };
    let outcome = loadgen::run(&settings).await;
    let after = a.pid.and_then(cpu);
    // Requests in flight are dropped: the server stops their queries.
    clients.shutdown().await;
    let answers = std::mem::take(&mut *lock(&answers));
    Ok(Phase {
        name,
        outcome: outcome?,
        answers,
        cpu: since(before, after),
    })
}

fn ratio(alone: f64, beside: f64) -> Option<f64> {
    (alone > 0.0).then(|| beside / alone)
}

fn markdown(phases: &[Phase], p99_ratio: Option<f64>) -> String {
    let mut s = String::from(
        "| phase | B runs completed | B e2e p50 | B e2e p99 | B e2e max | B accept p99 \
         | A answers | aiq-sql CPU | other threads' CPU |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n",
    );
    for p in phases {
        let o = &p.outcome;
        let answers = if p.answers.by_status.is_empty() {
            "none".to_owned()
        } else {
            p.answers
                .by_status
                .iter()
                .map(|(s, n)| format!("{n}× {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let cpu = |f: fn(&Cpu) -> f64| {
            p.cpu
                .as_ref()
                .map_or("-".into(), |c| format!("{:.1} s", f(c)))
        };
        s.push_str(&format!(
            "| {} | {}/{} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {} | {} | {} |\n",
            p.name,
            o.completed,
            o.sent,
            o.e2e.p50,
            o.e2e.p99,
            o.e2e.max,
            o.accept.p99,
            answers,
            cpu(|c| c.sql),
            cpu(|c| c.other),
        ));
    }
    if let Some(r) = p99_ratio {
        s.push_str(&format!(
            "\nB's e2e p99 beside the queries / alone: {r:.2}\n"
        ));
    }
    s
}

fn summary(p: &Phase) -> Value {
    let mut ok = p.answers.ok_seconds.clone();
    ok.sort_by(f64::total_cmp);
    json!({
        "runs": p.outcome.summary(),
        "sql": {
            "statuses": p.answers.by_status.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "problem_types": p.answers.problem_types,
            "refused_with_retry_after": p.answers.with_retry_after,
            "ok_seconds_median": ok.get(ok.len() / 2),
        },
        "cpu_seconds": p.cpu.map(|c| json!({ "sql_threads": c.sql, "other_threads": c.other })),
    })
}

pub async fn run(a: SqlIsolationArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.clients > 0, "--clients must be at least 1");
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    eprintln!("phase 1: tenant B alone at {}/s", a.rate);
    let alone = phase(&a, "alone", false).await?;
    eprintln!(
        "phase 2: tenant B at {}/s beside {} heavy query clients of tenant A",
        a.rate, a.clients
    );
    let beside = phase(&a, "beside-sql", true).await?;
    let p99_ratio = ratio(alone.outcome.e2e.p99, beside.outcome.e2e.p99);
    let phases = [alone, beside];
    let report = markdown(&phases, p99_ratio);
    println!("{report}");
    let summary = json!({
        "alone": summary(&phases[0]),
        "beside_sql": summary(&phases[1]),
        "p99_ratio": p99_ratio,
        "clients": a.clients,
        "rate": a.rate,
        "duration": a.duration,
        "query": a.query,
    });
    std::fs::write(a.out.join("report.md"), &report)?;
    std::fs::write(
        a.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    eprintln!("wrote {0}/report.md, {0}/summary.json", a.out.display());
    for p in &phases {
        anyhow::ensure!(
            p.outcome.completed == p.outcome.sent && p.outcome.sent > 0,
            "phase {}: {} of {} runs completed",
            p.name,
            p.outcome.completed,
            p.outcome.sent
        );
    }
    if let Some(max) = a.max_p99_ratio {
        let r = p99_ratio.context("no p99 alone to compare with")?;
        anyhow::ensure!(
            r <= max,
            "B's p99 grew {r:.2}× beside the queries (at most {max}×)"
        );
    }
    Ok(())
}
