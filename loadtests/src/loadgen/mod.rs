//! `aiq-load run`: open-loop load against a running `aiq serve`. Trigger `i` is sent at
//! `start + i/rate` whatever the server answers, by Zipf-drawn tenants and a workflow
//! mix; a run is complete when its terminal event is read from the events topic, and
//! both latencies are counted from the intended send time.

pub mod cli;
mod error;
mod events;
mod fairness;
mod hops;
mod plot;
mod progress;
mod report;
mod schedule;
mod tally;
mod workflows;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiq_topics::{RunId, TenantId};
use tokio::task::JoinSet;

pub use error::LoadError;
pub use report::Outcome;
pub use schedule::Mix;

use crate::baseline;
use events::EventWatch;
use hops::HopWatch;
use progress::Progress;
use schedule::TenantDraw;
use tally::Tally;
use workflows::Document;

/// The header with which a platform admin acts for a tenant.
pub const ACTING_TENANT: &str = "x-aiq-tenant";

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Settings {
    /// Base URL of `aiq serve`, e.g. `http://127.0.0.1:8080`.
    pub api: String,
    /// A platform admin's bearer token: it registers the workflows and starts the runs of
    /// every tenant, acting for each with `X-AIQ-Tenant`.
    pub token: String,
    pub brokers: String,
    /// The topic prefix `aiq serve` uses; its events topic is `<prefix>events`.
    pub topic_prefix: String,
    pub rate: f64,
    pub runs: u64,
    pub tenants: usize,
    pub zipf: f64,
    pub mix: Mix,
    /// Tenants are `<prefix>0`, `<prefix>1`, ...
    pub tenant_prefix: String,
    /// Where documents named in the mix are looked for.
    pub examples: PathBuf,
    pub seed: u64,
    pub warmup: Duration,
    pub drain_timeout: Duration,
    pub max_in_flight: usize,
    /// Messages of the raw-Kafka baseline run first; `None` skips it.
    pub baseline_messages: Option<u64>,
    /// Inputs of the transactional pipe measured first (the engine's fair floor);
    /// `None` skips it.
    pub pipe_messages: Option<u64>,
    /// Whether to follow the triggers, tasks and results topics too, for the per-hop
    /// breakdown of end-to-end latency.
    pub hops: bool,
    /// Per-second cron workflows of the first tenant that tick through the load (their
    /// lateness is in the hop breakdown); disabled afterwards.
    pub cron_schedules: usize,
    pub out: PathBuf,
    pub show_progress: bool,
}

impl Settings {
    fn table(&self) -> Vec<(String, String)> {
        let mix: Vec<String> = self
            .mix
            .names()
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n}={:.2}", self.mix.share(i)))
            .collect();
        [
            ("api", self.api.clone()),
            ("events topic", format!("{}events", self.topic_prefix)),
            ("rate", format!("{}/s", self.rate)),
            ("runs planned", self.runs.to_string()),
            (
                "tenants",
                format!(
                    "{} (Zipf s = {}, seed {})",
                    self.tenants, self.zipf, self.seed
                ),
            ),
            ("workflow mix", mix.join(", ")),
            ("warm-up", format!("{:?}", self.warmup)),
            ("drain timeout", format!("{:?}", self.drain_timeout)),
            ("max requests in flight", self.max_in_flight.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// Runs the load, writes `report.md`, `latency.svg` and `summary.json` under
/// `settings.out`, and returns what it measured.
pub async fn run(settings: &Settings) -> Result<Outcome, LoadError> {
    let bad = |name, reason: &str| LoadError::Setting {
        name,
        reason: reason.to_owned(),
    };
    if !(settings.rate.is_finite() && settings.rate > 0.0) {
        return Err(bad("--rate", "must be a positive number"));
    }
    if settings.runs == 0 {
        return Err(bad("--runs/--duration", "plans no trigger"));
    }
    let api = settings.api.trim_end_matches('/').to_owned();
    let names: Vec<String> = (0..settings.tenants)
        .map(|i| format!("{}{i}", settings.tenant_prefix))
        .collect();
    for n in &names {
        TenantId::new(n.as_str()).map_err(|e| LoadError::Setting {
            name: "--tenant-prefix",
            reason: e.to_string(),
        })?;
    }
    let draw = TenantDraw::new(settings.tenants, settings.zipf)?;
    let docs: Vec<Document> = settings
        .mix
        .names()
        .iter()
        .map(|n| workflows::document(n, &settings.examples))
        .collect::<Result<_, _>>()?;
    std::fs::create_dir_all(&settings.out).map_err(|source| LoadError::Write {
        path: settings.out.clone(),
        source,
    })?;

    let baseline = match settings.baseline_messages {
        Some(n) => {
            let partitions =
                baseline::triggers_partitions(&settings.brokers, &settings.topic_prefix)?
                    .unwrap_or(12);
            Some(baseline::measure(&settings.brokers, partitions, n).await?)
        }
        None => None,
    };
    let pipe = match settings.pipe_messages {
        Some(n) => {
            let partitions =
                baseline::triggers_partitions(&settings.brokers, &settings.topic_prefix)?
                    .unwrap_or(12);
            let pipe_settings = baseline::PipeSettings::orchestrator(partitions, n);
            Some(baseline::pipe(&settings.brokers, &settings.topic_prefix, &pipe_settings).await?)
        }
        None => None,
    };

    let client = http_client()
        .pool_max_idle_per_host(settings.max_in_flight)
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    register_all(&client, &api, &settings.token, &names, &docs).await?;

    let plan = schedule::plan(
        settings.runs,
        settings.rate,
        &draw,
        &settings.mix,
        settings.seed,
    );
    let start = Instant::now();
    let tally = Arc::new(Mutex::new(Tally::new(start, &names)));
    let watch = EventWatch::start(
        &settings.brokers,
        &format!("{}events", settings.topic_prefix),
        &format!("{}load-{}", settings.topic_prefix, settings.tenant_prefix),
        Arc::clone(&tally),
    )?;
    prime(&client, &api, settings, &names[0], &docs, &tally).await?;
    let cron_docs: Vec<Document> = (0..settings.cron_schedules)
        .map(workflows::every_second)
        .collect();
    register_all(&client, &api, &settings.token, &names[..1], &cron_docs).await?;
    // After priming: the hop tap starts at the topics' ends, and only runs due from
    // now on are broken down.
    let hops = match settings.hops {
        true => Some(HopWatch::start(
            &settings.brokers,
            &settings.topic_prefix,
            &format!(
                "{}load-hops-{}",
                settings.topic_prefix, settings.tenant_prefix
            ),
        )?),
        false => None,
    };
    let due_times = hops.as_ref().map(HopWatch::due_times);
    let start = Instant::now();
    let start_wall_us = hops::wall_us();
    lock(&tally).reset(start);
    let sent = Arc::new(AtomicU64::new(0));
    let progress = settings
        .show_progress
        .then(|| Progress::start(settings.runs, Arc::clone(&sent), Arc::clone(&tally)));

    let gate = Arc::new(tokio::sync::Semaphore::new(settings.max_in_flight));
    let mut requests = JoinSet::new();
    let mut max_lag = Duration::ZERO;
    for p in plan {
        let intended = start + p.due;
        tokio::time::sleep_until(intended.into()).await;
        let Ok(permit) = Arc::clone(&gate).acquire_owned().await else {
            break;
        };
        max_lag = max_lag.max(Instant::now().saturating_duration_since(intended));
        let url = format!("{api}/v1/workflows/{}/runs", docs[p.workflow].id);
        let (client, token, tenant_name) = (
            client.clone(),
            settings.token.clone(),
            names[p.tenant].clone(),
        );
        let (tally, sent) = (Arc::clone(&tally), Arc::clone(&sent));
        let due_times = due_times.clone();
        let due_wall_us = start_wall_us + p.due.as_micros() as i64;
        requests.spawn(async move {
            let (status, run, answered) = trigger(&client, url, &token, tenant_name, p.i).await;
            drop(permit);
            let mut t = lock(&tally);
            t.answered(p.tenant, intended, answered, status);
            if let Some(run) = run {
                t.accepted(run, p.tenant, intended);
                if let Some(d) = &due_times {
                    d.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(run, due_wall_us);
                }
            }
            sent.fetch_add(1, Ordering::Relaxed);
        });
        while requests.try_join_next().is_some() {}
    }
    let send_seconds = start.elapsed().as_secs_f64();
    while let Some(r) = requests.join_next().await {
        r?;
    }
    let drain_until = Instant::now() + settings.drain_timeout;
    while lock(&tally).in_flight() > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = tokio::task::spawn_blocking(move || watch.stop()).await?;
    let breakdown = match hops {
        Some(h) => Some(tokio::task::spawn_blocking(move || h.stop()).await?),
        None => None,
    };
    for doc in &cron_docs {
        workflows::disable(&client, &api, &settings.token, &names[0], &doc.id).await?;
    }
    if let Some(p) = progress {
        p.finish();
    }

    let warmup = settings.warmup.as_secs_f64();
    // A warm-up that leaves too short a window is dropped rather than measuring noise.
    let warmup = if warmup < send_seconds * 0.8 {
        warmup
    } else {
        0.0
    };
    let mut outcome = Outcome::from_tally(&lock(&tally), &names, warmup, send_seconds);
    outcome.settings = settings.table();
    outcome.planned = settings.runs;
    outcome.max_send_lag_ms = max_lag.as_secs_f64() * 1000.0;
    outcome.baseline = baseline;
    outcome.hops = breakdown;
    outcome.pipe = pipe;
    write_outputs(&settings.out, &outcome)?;
    Ok(outcome)
}

/// A client builder with a TLS provider installed: the workspace's reqwest is built
/// without one (`rustls-no-provider`), and a client cannot be built until one is set,
/// even for plain `http://`.
pub fn http_client() -> reqwest::ClientBuilder {
    // Err only when a provider is already installed, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// POSTs one trigger; returns the status (0: no answer), the run id of a 202 and when
/// the answer's head arrived.
async fn trigger(
    client: &reqwest::Client,
    url: String,
    token: &str,
    tenant: String,
    n: u64,
) -> (u16, Option<RunId>, Instant) {
    let resp = client
        .post(url)
        .bearer_auth(token)
        .header(ACTING_TENANT, tenant)
        .json(&serde_json::json!({ "input": { "n": n } }))
        .send()
        .await;
    let answered = Instant::now();
    let status = resp.as_ref().map_or(0, |r| r.status().as_u16());
    let run = match resp {
        Ok(r) if status == 202 => r
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["run_id"].as_str().and_then(|s| s.parse::<RunId>().ok())),
        _ => None,
    };
    (status, run, answered)
}

/// One run of every workflow, waited for before the clock starts: the first runs after
/// `aiq serve` starts wait for its consumer groups to be assigned, which is start-up
/// cost, not load. The tally is cleared afterwards.
async fn prime(
    client: &reqwest::Client,
    api: &str,
    settings: &Settings,
    tenant: &str,
    docs: &[Document],
    tally: &Mutex<Tally>,
) -> Result<(), LoadError> {
    let now = Instant::now();
    for doc in docs {
        let url = format!("{api}/v1/workflows/{}/runs", doc.id);
        let (status, run, answered) =
            trigger(client, url, &settings.token, tenant.to_owned(), 0).await;
        let mut t = lock(tally);
        t.answered(0, now, answered, status);
        match run {
            Some(run) => t.accepted(run, 0, now),
            None => {
                return Err(LoadError::Broker(format!(
                    "a priming run of {} was answered {status}, not 202",
                    doc.id
                )));
            }
        }
    }
    let until = Instant::now() + settings.drain_timeout;
    while lock(tally).in_flight() > 0 {
        if Instant::now() > until {
            return Err(LoadError::Broker(format!(
                "priming runs did not end within {:?}: is the orchestrator running, and \
                 --topic-prefix the one aiq serve uses?",
                settings.drain_timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "primed: one run of each workflow ended after {:?}",
        now.elapsed()
    );
    Ok(())
}

fn lock(t: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    // A panicking request task leaves counts that are still worth reporting.
    t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Registers every document for every tenant, a few requests at a time.
async fn register_all(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    names: &[String],
    docs: &[Document],
) -> Result<(), LoadError> {
    let gate = Arc::new(tokio::sync::Semaphore::new(16));
    let mut set = JoinSet::new();
    for tenant in names {
        for doc in docs {
            let (client, api, token, tenant, doc) = (
                client.clone(),
                api.to_owned(),
                token.to_owned(),
                tenant.clone(),
                doc.clone(),
            );
            let gate = Arc::clone(&gate);
            set.spawn(async move {
                let _permit = gate.acquire_owned().await;
                workflows::register(&client, &api, &token, &tenant, &doc).await
            });
        }
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

fn write_outputs(out: &Path, outcome: &Outcome) -> Result<(), LoadError> {
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|source| LoadError::Write { path, source })
    };
    write("report.md", outcome.markdown())?;
    write(
        "summary.json",
        serde_json::to_string_pretty(&outcome.summary()).unwrap_or_default(),
    )?;
    let title = format!(
        "end-to-end latency by intended send second ({} runs/s sustained)",
        outcome.sustained_per_sec.round()
    );
    plot::latency_svg(&out.join("latency.svg"), &outcome.timeline, &title)
}
