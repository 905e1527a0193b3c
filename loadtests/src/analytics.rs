//! `aiq-load analytics`: how long the ready reports take over a large history.
//!
//! Generates about `--steps` step events (and their runs' events) for many tenants,
//! writes them through the sink's real Parquet writer, then runs every report in the
//! platform scope and in the busiest tenant's scope, and prints a Markdown table.
//!
//!   aiq-load analytics --steps 10000000 [--root DIR | --root az://container/prefix] [--reuse]

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use aiq_analytics::{Analytics, AnalyticsSettings, REPORTS, Scope};
use aiq_history_store::{HistoryFiles, HistoryRoot, ObjectPath};
use aiq_sink::parquet::{ParquetSettings, ParquetWriter};
use aiq_topics::{
    ErrorClass, Event, Failure, RunEvent, RunId, RunStatus, StepEvent, StepId, StepStatus,
    TenantId, TriggerSource, WorkflowId,
};
use anyhow::Context;
use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

const CONNECTORS: [&str; 5] = ["http", "sql", "email", "soap", "kafka"];
/// Events-topic partitions the history is spread over (tenant-keyed, as in production).
const PARTITIONS: i32 = 8;
/// Days the history covers.
const DAYS: i64 = 7;

#[derive(clap::Args)]
pub struct AnalyticsArgs {
    /// Step events to generate; their runs' events come on top.
    #[arg(long, default_value_t = 10_000_000)]
    pub steps: u64,
    /// Where the history goes: a folder or an object-store URL (`az://container/prefix`,
    /// with the `AZURE_*` settings `scripts/services env` prints for Azurite); a fresh
    /// folder under the system temp folder (removed afterwards) when absent.
    #[arg(long)]
    pub root: Option<String>,
    /// Tenants, drawn with a Zipf distribution (a few busy ones, a long tail).
    #[arg(long, default_value_t = 200)]
    pub tenants: usize,
    /// Query the files already under --root instead of generating them.
    #[arg(long, requires = "root")]
    pub reuse: bool,
    /// analytics.memory_limit_bytes for each query.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    pub memory_limit_bytes: usize,
}

pub async fn run(args: AnalyticsArgs) -> anyhow::Result<()> {
    let temporary = args.root.is_none();
    let root = match &args.root {
        Some(r) => HistoryRoot::new(r.clone()),
        None => HistoryRoot::from(
            std::env::temp_dir().join(format!("aiq-analytics-bench-{}", std::process::id())),
        ),
    };
    let files = HistoryFiles::new(root.parse(&BTreeMap::new())?);
    let busiest = tenant_name(0);
    if !args.reuse {
        let (steps, tenants, root2) = (args.steps, args.tenants, root.clone());
        let started = Instant::now();
        let g = tokio::task::spawn_blocking(move || generate(&root2, steps, tenants))
            .await
            .context("the generator panicked")??;
        let (files, bytes) = files.usage(&ObjectPath::from(""))?;
        println!(
            "generated {} step and {} run events of {} tenants in {:.1} s: {files} files, {:.1} MiB under {}",
            g.steps,
            g.runs,
            args.tenants,
            started.elapsed().as_secs_f64(),
            bytes as f64 / 1048576.0,
            root
        );
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let analytics = Analytics::new(AnalyticsSettings {
        root: root.clone(),
        timeout_ms: 3_600_000,
        memory_limit_bytes: args.memory_limit_bytes,
        memory_pool_bytes: args.memory_limit_bytes,
        target_partitions: cores,
        threads: cores,
        thread_nice: 0,
        ..Default::default()
    })?;
    let tenant = Scope::Tenant(TenantId::new(busiest.clone())?);
    println!();
    println!("| report | scope | rows | seconds |");
    println!("| --- | --- | ---: | ---: |");
    for report in REPORTS {
        for (scope, label) in [
            (&Scope::Platform, "platform".to_owned()),
            (&tenant, format!("tenant {busiest}")),
        ] {
            let started = Instant::now();
            let outcome = analytics.report(scope, report.name).await;
            let seconds = started.elapsed().as_secs_f64();
            match outcome {
                Ok(r) => println!(
                    "| {} | {label} | {}{} | {seconds:.2} |",
                    report.name,
                    r.rows.len(),
                    if r.truncated { "+" } else { "" }
                ),
                Err(e) => println!("| {} | {label} | error: {e} | {seconds:.2} |", report.name),
            }
        }
    }
    if let (true, Some(dir)) = (temporary, root.local_path()) {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

fn tenant_name(i: usize) -> String {
    format!("tenant-{i:04}")
}

struct Generated {
    steps: u64,
    runs: u64,
}

/// Runs in time order over [`DAYS`] days until `steps` step events exist: 1–8 task
/// steps per run, retries, failures by connector and class, cron runs with lag.
fn generate(root: &HistoryRoot, steps: u64, tenants: usize) -> anyhow::Result<Generated> {
    let mut writer = ParquetWriter::new(&ParquetSettings {
        root: root.clone(),
        ..Default::default()
    })?;
    let mut rng = StdRng::seed_from_u64(7);
    let zipf = Zipf::new(tenants as f64, 1.1)?;
    let tenant_ids: Vec<TenantId> = (0..tenants)
        .map(|i| TenantId::new(tenant_name(i)))
        .collect::<Result<_, _>>()?;
    let workflows: Vec<WorkflowId> = (0..10)
        .map(|i| WorkflowId::new(format!("wf-{i}")))
        .collect::<Result<_, _>>()?;
    let step_ids: Vec<StepId> = (0..8)
        .map(|i| StepId::new(format!("s{i}")))
        .collect::<Result<_, _>>()?;
    let start: DateTime<Utc> = Utc
        .with_ymd_and_hms(2026, 11, 20, 0, 0, 0)
        .single()
        .context("a valid start date")?;
    // About nine step events per run; the clock advances so that the runs fill DAYS.
    let expected_runs = (steps / 9).max(1);
    let gap_us = DAYS * 86_400_000_000 / expected_runs as i64;
    let mut offsets: HashMap<i32, i64> = HashMap::new();
    let mut add = |writer: &mut ParquetWriter, tenant: usize, e: &Event| {
        let partition = (tenant as i32) % PARTITIONS;
        let offset = offsets.entry(partition).or_insert(0);
        writer.add(partition, *offset, e);
        *offset += 1;
    };
    let (mut made_steps, mut made_runs) = (0u64, 0u64);
    let mut i = 0u64;
    while made_steps < steps {
        let t = (zipf.sample(&mut rng) as usize).clamp(1, tenants) - 1;
        let tenant = &tenant_ids[t];
        let workflow = &workflows[rng.random_range(0..workflows.len())];
        let run = RunId::from_idempotency_key(tenant, workflow, &i.to_string());
        let tick = start + Duration::microseconds(gap_us * i as i64);
        i += 1;
        let cron = rng.random_bool(0.3);
        let started =
            tick + Duration::milliseconds(rng.random_range(0..if cron { 3_000 } else { 60_000 }));
        let running = Event::Run(RunEvent {
            tenant: tenant.clone(),
            run,
            workflow: workflow.clone(),
            version: 1,
            status: RunStatus::Running,
            at: started,
            input: None,
            output: None,
            error: None,
            started_at: None,
            source: Some(if cron {
                TriggerSource::Cron
            } else {
                TriggerSource::Api
            }),
            scheduled_at: cron.then_some(tick),
        });
        add(&mut writer, t, &running);
        made_runs += 1;
        let mut now = started;
        let mut status = RunStatus::Succeeded;
        let mut failure = None;
        'steps: for step in &step_ids[..rng.random_range(1..=step_ids.len())] {
            let connector = CONNECTORS[rng.random_range(0..CONNECTORS.len())];
            for attempt in 1..=3u32 {
                let mut e = StepEvent {
                    tenant: tenant.clone(),
                    run,
                    step: step.clone(),
                    attempt,
                    status: StepStatus::Started,
                    at: now,
                    kind: "task".into(),
                    connector: Some(connector.into()),
                    error: None,
                    iteration: None,
                    duration_ms: None,
                    output_bytes: None,
                };
                add(&mut writer, t, &Event::Step(e.clone()));
                let took = rng.random_range(5..3_000u64);
                now += Duration::milliseconds(took as i64);
                e.at = now;
                e.duration_ms = Some(took);
                made_steps += 2;
                let roll = rng.random_range(0..100);
                let class = match roll {
                    0..=84 => None,
                    85..=92 if attempt < 3 => Some((StepStatus::Retrying, ErrorClass::Retryable)),
                    85..=96 => Some((StepStatus::Failed, ErrorClass::Fatal)),
                    _ => Some((StepStatus::TimedOut, ErrorClass::Timeout)),
                };
                match class {
                    None => {
                        e.status = StepStatus::Succeeded;
                        e.output_bytes = Some(rng.random_range(10..20_000));
                        add(&mut writer, t, &Event::Step(e));
                        break;
                    }
                    Some((s, class)) => {
                        e.status = s;
                        e.error = Some(Failure {
                            class,
                            message: format!("{connector} failed"),
                            step: Some(step.clone()),
                        });
                        add(&mut writer, t, &Event::Step(e));
                        if s != StepStatus::Retrying {
                            status = if s == StepStatus::TimedOut {
                                RunStatus::TimedOut
                            } else {
                                RunStatus::Failed
                            };
                            failure = Some(Failure {
                                class,
                                message: "step failed".into(),
                                step: Some(step.clone()),
                            });
                            break 'steps;
                        }
                    }
                }
            }
        }
        let done = Event::Run(RunEvent {
            tenant: tenant.clone(),
            run,
            workflow: workflow.clone(),
            version: 1,
            status,
            at: now,
            input: None,
            output: None,
            error: failure,
            started_at: Some(started),
            source: None,
            scheduled_at: None,
        });
        add(&mut writer, t, &done);
        made_runs += 1;
    }
    writer.flush()?;
    Ok(Generated {
        steps: made_steps,
        runs: made_runs,
    })
}
