//! `aiq-load`: drives a running `aiq serve` at a fixed rate, or drains a backlog through
//! the stages in this process, and reports what it saw.
//!
//!   aiq-load triggers --url http://127.0.0.1:8080 --token "$TOKEN" \
//!       --workflow load-noop --rate 500 --duration 20
//!   aiq-load state-memory --runs 100000
//!   aiq-load drain --brokers 127.0.0.1:9092 --runs 20000 --steps 1
//!   aiq-load worker --brokers 127.0.0.1:9092 --tasks 200000
//!   aiq-load run --api http://127.0.0.1:8080 --token "$ADMIN_TOKEN" --brokers 127.0.0.1:9092 \
//!       --topic-prefix aiq. --rate 200 --duration 30 --tenants 20 --mix hello=0.7,ten-steps=0.3
//!   aiq-load baseline --brokers 127.0.0.1:9092 --messages 20000
//!   aiq-load pipe --brokers 127.0.0.1:9092 --messages 200000 [--plain-commit]
//!   aiq-load analytics --steps 10000000 [--root DIR]
//!   aiq-load chaos --aiq-bin target/release/aiq --rate 100 --duration 250 --kills 20  (scripts/chaos)
//!   aiq-load markers --runs 1000000
//!   aiq-load restore --runs 1000000
//!   aiq-load console --api http://127.0.0.1:8080 --token "$TOKEN" --loads 40  (scripts/bench-console)
//!   aiq-load sql-isolation --api http://127.0.0.1:8080 --rate 200 --clients 20 --pid PID  (scripts/bench-sql)

mod analytics;
mod baseline;
mod console_pages;
mod loadgen;
mod sql_isolation;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiq_loadtests::open_loop::{due, histogram, latency_us};
use clap::{Parser, Subcommand};
use tokio::sync::Mutex;

#[derive(Parser)]
#[command(name = "aiq-load", about = "Open-loop load against a running aiq")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open-loop runs by Zipf-drawn tenants, timed to their terminal events; report.md,
    /// latency.svg and a raw-Kafka baseline.
    Run(loadgen::cli::RunArgs),
    /// Runs under SIGKILLs of aiq serve, Kafka and Cassandra; every accepted trigger set
    /// against the events topic, the store and the Parquet history (RELIABILITY.md).
    Chaos(aiq_loadtests::chaos::cli::ChaosArgs),
    /// Raw Kafka produce+consume of trigger-sized messages: the engine's ceiling.
    Baseline(loadgen::cli::BaselineArgs),
    /// A do-nothing transactional consume → produce hop batched as the orchestrator
    /// batches, its output read back and checked: the engine's fair floor.
    Pipe(loadgen::cli::PipeArgs),
    /// The ready analytics reports over a generated Parquet history of ~N step events.
    Analytics(analytics::AnalyticsArgs),
    /// One tenant's open-loop runs alone, then beside another tenant's heavy SQL queries:
    /// end-to-end p99 of both, the queries' 429s, CPU of the SQL threads.
    SqlIsolation(sql_isolation::SqlIsolationArgs),
    /// The web console's pages in headless Chromium: time from a navigation to the
    /// page's data drawn, per page (scripts/bench-console).
    Console(console_pages::ConsoleArgs),
    /// POST /v1/workflows/{id}/runs at a fixed rate; report accepted/s and latency.
    Triggers {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A bearer token (`aiq token --tenant T --role user`).
        #[arg(long, env = "AIQ_LOAD_TOKEN")]
        token: String,
        #[arg(long)]
        workflow: String,
        /// Requests per second.
        #[arg(long)]
        rate: f64,
        /// Seconds.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Requests in flight at most; beyond it the schedule slips (and is reported).
        #[arg(long, default_value_t = 2000)]
        max_in_flight: usize,
    },
    /// A backlog of runs drained by one orchestrator and one worker through Kafka.
    Drain {
        #[arg(long, env = "AIQ_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, default_value_t = 20_000)]
        runs: usize,
        /// noop task steps per run.
        #[arg(long, default_value_t = 1)]
        steps: usize,
        #[arg(long, default_value_t = 50)]
        tenants: usize,
    },
    /// A backlog of no-op tasks answered by one worker through Kafka (no orchestrator).
    Worker {
        #[arg(long, env = "AIQ_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, default_value_t = 50_000)]
        tasks: usize,
        #[arg(long, default_value_t = 50)]
        tenants: usize,
        /// worker.max_in_flight.
        #[arg(long, default_value_t = 256)]
        max_in_flight: usize,
    },
    /// Memory per run waiting for a signal in the orchestrator's core (no Kafka).
    StateMemory {
        #[arg(long, default_value_t = 100_000)]
        runs: usize,
    },
    /// Memory of N finished-run markers in the orchestrator's core (no Kafka).
    Markers {
        #[arg(long, default_value_t = 1_000_000)]
        runs: usize,
    },
    /// N runs waiting for a signal, restored by one orchestrator process, SIGKILLed and
    /// restored again; then a thousand of them signalled to their end.
    Restore(aiq_loadtests::restore_scale::RestoreArgs),
    /// The orchestrator process `restore` starts (not for direct use).
    #[command(hide = true)]
    Hold(aiq_loadtests::restore_scale::HoldArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a TLS provider (see the root Cargo.toml): every HTTP
    // client of this binary uses ring's. Already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Cmd::Run(a) => loadgen::cli::run(a).await,
        Cmd::Chaos(a) => aiq_loadtests::chaos::cli::main(a).await,
        Cmd::Baseline(a) => loadgen::cli::baseline(a).await,
        Cmd::Pipe(a) => loadgen::cli::pipe(a).await,
        Cmd::Analytics(a) => analytics::run(a).await,
        Cmd::SqlIsolation(a) => sql_isolation::run(a).await,
        Cmd::Console(a) => console_pages::run(a).await,
        Cmd::Drain {
            brokers,
            runs,
            steps,
            tenants,
        } => {
            let r = aiq_loadtests::drain::measure(&brokers, runs, steps, tenants).await?;
            println!("| runs | task steps per run | seconds | runs/s | tasks/s |");
            println!("| ---: | ---: | ---: | ---: | ---: |");
            println!(
                "| {} | {} | {:.1} | {:.0} | {:.0} |",
                r.runs,
                r.steps,
                r.seconds,
                r.runs as f64 / r.seconds,
                (r.runs * r.steps) as f64 / r.seconds
            );
            Ok(())
        }
        Cmd::Worker {
            brokers,
            tasks,
            tenants,
            max_in_flight,
        } => {
            let r =
                aiq_loadtests::worker_throughput::measure(&brokers, tasks, tenants, max_in_flight)
                    .await?;
            println!("| no-op tasks | max_in_flight | seconds | tasks/s |");
            println!("| ---: | ---: | ---: | ---: |");
            println!(
                "| {} | {} | {:.1} | {:.0} |",
                r.tasks,
                r.max_in_flight,
                r.seconds,
                r.tasks as f64 / r.seconds
            );
            Ok(())
        }
        Cmd::Restore(a) => aiq_loadtests::restore_scale::run(a).await,
        Cmd::Hold(a) => aiq_loadtests::restore_scale::hold(a).await,
        Cmd::Markers { runs } => {
            let r = aiq_loadtests::state_memory::measure_markers(runs)?;
            println!(
                "| finished runs | markers held | resident memory | per marker | runs/s (one core, no Kafka) |"
            );
            println!("| ---: | ---: | ---: | ---: | ---: |");
            println!(
                "| {} | {} | {:.1} MiB | {:.0} B | {:.0} |",
                r.runs,
                r.markers,
                r.rss_bytes as f64 / (1 << 20) as f64,
                r.rss_bytes as f64 / r.markers.max(1) as f64,
                r.runs_per_sec
            );
            Ok(())
        }
        Cmd::StateMemory { runs } => {
            let r = aiq_loadtests::state_memory::measure(runs)?;
            println!(
                "| waiting runs | resident memory per run | changelog per run | starts/s (one core, no Kafka) |"
            );
            println!("| ---: | ---: | ---: | ---: |");
            println!(
                "| {} | {:.0} B | {:.0} B | {:.0} |",
                r.runs, r.rss_bytes_per_run, r.changelog_bytes_per_run, r.starts_per_sec
            );
            Ok(())
        }
        Cmd::Triggers {
            url,
            token,
            workflow,
            rate,
            duration,
            max_in_flight,
        } => {
            anyhow::ensure!(rate > 0.0, "--rate must be positive");
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(max_in_flight)
                .build()?;
            let endpoint = format!("{}/v1/workflows/{workflow}/runs", url.trim_end_matches('/'));
            let total = (rate * duration as f64) as u64;
            let hist = Arc::new(Mutex::new(histogram()));
            let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<u16, u64>::new()));
            let gate = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
            let start = Instant::now();
            let mut tasks = Vec::with_capacity(total as usize);
            for i in 0..total {
                let intended = start + due(i, rate);
                tokio::time::sleep_until(intended.into()).await;
                let permit = Arc::clone(&gate).acquire_owned().await?;
                let (client, endpoint, token) = (client.clone(), endpoint.clone(), token.clone());
                let (hist, statuses) = (Arc::clone(&hist), Arc::clone(&statuses));
                tasks.push(tokio::spawn(async move {
                    let resp = client
                        .post(&endpoint)
                        .bearer_auth(&token)
                        .json(&serde_json::json!({ "input": { "n": i } }))
                        .send()
                        .await;
                    let code = resp.map(|r| r.status().as_u16()).unwrap_or(0);
                    let lat = latency_us(intended, Instant::now());
                    drop(permit);
                    let _ = hist.lock().await.record(lat.max(1));
                    *statuses.lock().await.entry(code).or_default() += 1;
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            let elapsed = start.elapsed();
            let h = hist.lock().await;
            let statuses = statuses.lock().await;
            let accepted = statuses.get(&202).copied().unwrap_or(0);
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            println!(
                "| target rate | sent | accepted (202) | other statuses | accepted/s | p50 ms | p99 ms | p99.9 ms | max ms |"
            );
            println!("|---|---|---|---|---|---|---|---|---|");
            let others: Vec<String> = statuses
                .iter()
                .filter(|(c, _)| **c != 202)
                .map(|(c, n)| format!("{c}: {n}"))
                .collect();
            println!(
                "| {rate}/s | {total} | {accepted} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
                if others.is_empty() {
                    "none".to_owned()
                } else {
                    others.join(", ")
                },
                accepted as f64
                    / elapsed
                        .as_secs_f64()
                        .max(Duration::from_millis(1).as_secs_f64()),
                ms(0.5),
                ms(0.99),
                ms(0.999),
                h.max() as f64 / 1000.0
            );
            Ok(())
        }
    }
}
