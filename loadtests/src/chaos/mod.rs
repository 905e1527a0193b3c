//! `aiq-load chaos`: drives a steady open-loop mix of runs against an `aiq serve` it
//! supervises, while it SIGKILLs `aiq serve`, the Kafka broker and the Cassandra node at
//! seeded random moments; then, after a drain, sets every accepted trigger against the
//! committed events topic, the store and the Parquet history ([`compare`]). RELIABILITY.md
//! explains the counts; `scripts/chaos` runs it on services of its own.

pub mod cli;
pub mod compare;
pub mod drive;
pub mod faults;
pub mod flaky;
pub mod observe;
pub mod scale;
pub mod workflows;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use compare::{AcceptedRun, Observations, Verdict};
use drive::{DriveStats, Driver};
use faults::{Fault, ServeCommand, Services, Struck, Supervisor};
use workflows::Kind;

/// Everything a chaos run needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL of `aiq serve`.
    pub api: String,
    /// A platform admin's token; it acts for each tenant with `X-AIQ-Tenant`.
    pub token: String,
    pub brokers: String,
    pub topic_prefix: String,
    pub cql: String,
    pub keyspace: String,
    /// The sink's Parquet root.
    pub history: PathBuf,
    pub rate: f64,
    pub runs: u64,
    pub tenants: Vec<String>,
    pub mix: Vec<(Kind, f64)>,
    pub seed: u64,
    pub serve_kills: u32,
    pub kafka_kills: u32,
    pub cassandra_kills: u32,
    /// How long a killed Kafka or Cassandra stays down before it is restarted.
    pub down_for: Duration,
    /// `aiq serve` to start and supervise; `None`: one runs already (no serve kills).
    pub serve: Option<ServeCommand>,
    /// Needed for Kafka and Cassandra kills.
    pub services: Option<Services>,
    /// How long after the last trigger runs may take to end everywhere.
    pub drain: Duration,
    /// A trigger is retried until this long after it was due.
    pub give_up: Duration,
    pub max_in_flight: usize,
    /// accepted.jsonl, faults.json and summary.json go here.
    pub out: PathBuf,
}

/// What a chaos run found.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub started_at: String,
    pub settings: serde_json::Value,
    pub drive: DriveStats,
    pub faults: Vec<Struck>,
    pub serve_restarts: u64,
    pub flaky_refused: u64,
    pub flaky_answered: u64,
    pub drain_seconds: f64,
    /// Problems reading a witness in the final round (a witness that could not be read
    /// counts as empty).
    pub read_errors: Vec<String>,
    pub events_records_read: u64,
    pub verdict: Verdict,
    /// The scale scenario's stalls and rebalances (`--scale`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<scale::Report>,
}

fn say(start: Instant, what: &str) {
    eprintln!("chaos: {:>4.0} s  {what}", start.elapsed().as_secs_f64());
}

/// Runs the whole experiment; writes `accepted.jsonl` and `summary.json` under
/// `settings.out` and returns the summary (check `summary.verdict.clean()`).
pub async fn run(s: &Settings) -> anyhow::Result<Summary> {
    run_with(s, None).await
}

/// [`run`], or with `scale` the scale scenario ([`scale`]): `settings.serve` must then
/// run every role but the orchestrator, whose instances are started here.
pub async fn run_with(s: &Settings, scale: Option<&scale::Scale>) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        s.rate.is_finite() && s.rate > 0.0,
        "--rate must be positive"
    );
    anyhow::ensure!(s.runs > 0, "no run planned");
    anyhow::ensure!(!s.tenants.is_empty(), "no tenant");
    anyhow::ensure!(
        s.serve.is_some() || s.serve_kills == 0,
        "killing aiq serve needs --aiq-bin (it is started and supervised here)"
    );
    anyhow::ensure!(
        s.services.is_some() || (s.kafka_kills == 0 && s.cassandra_kills == 0),
        "killing Kafka or Cassandra needs --services-script and --services-dir"
    );
    std::fs::create_dir_all(&s.out)?;
    let started_at = chrono::Utc::now().to_rfc3339();
    let t0 = Instant::now();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(s.max_in_flight)
        .timeout(Duration::from_secs(15))
        .build()?;
    let api = s.api.trim_end_matches('/').to_owned();

    let flaky = Arc::new(flaky::Flaky::default());
    let flaky_port = flaky::serve(Arc::clone(&flaky)).await?;
    let supervisor = match &s.serve {
        Some(cmd) => Some(Supervisor::start(cmd.clone())?),
        None => None,
    };
    let fleet = match scale {
        Some(sc) => Some(Arc::new(std::sync::Mutex::new(scale::Fleet::start(sc)?))),
        None => None,
    };
    ready(&client, &api, Duration::from_secs(180)).await?;
    register(&client, &api, &s.token, &s.tenants, flaky_port).await?;
    say(
        t0,
        &format!("aiq serve ready, workflows registered; flaky peer on 127.0.0.1:{flaky_port}"),
    );

    // Faults strike while triggers are due.
    let window = Duration::from_secs_f64(s.runs as f64 / s.rate);
    let fault_plan = faults::plan(
        window,
        s.serve_kills,
        s.kafka_kills,
        s.cassandra_kills,
        s.seed,
    );
    let drive_start = Instant::now();
    let drive_start_ms = chrono::Utc::now().timestamp_millis();
    let stepper = match (scale, &fleet) {
        (Some(sc), Some(f)) => Some(tokio::spawn(scale::step(
            drive_start,
            sc.phase,
            sc.kill_delay,
            Arc::clone(f),
        ))),
        _ => None,
    };
    let supervisor = supervisor.map(Arc::new);
    let injector = {
        let (sup, services, down_for) = (supervisor.clone(), s.services.clone(), s.down_for);
        tokio::spawn(async move { inject(drive_start, fault_plan, sup, services, down_for).await })
    };
    let plan = drive::plan(s.runs, s.rate, s.tenants.len(), &s.mix, s.seed);
    let driver = Driver {
        client: client.clone(),
        api: api.clone(),
        token: s.token.clone(),
        tenants: s.tenants.clone(),
        give_up: s.give_up,
        max_in_flight: s.max_in_flight,
        key_prefix: format!("chaos-{}-", s.seed),
    };
    say(t0, &format!("driving {} triggers at {}/s", s.runs, s.rate));
    let (accepted, stats) = driver.drive(plan).await;
    say(
        t0,
        &format!(
            "driven: {} accepted, {} given up",
            stats.accepted, stats.given_up
        ),
    );
    let drive_end_ms = chrono::Utc::now().timestamp_millis();
    let struck = injector.await?;
    let changes = match stepper {
        Some(t) => t.await?,
        None => Vec::new(),
    };
    write_accepted(&s.out, &accepted)?;

    // Drain: read the witnesses until every accepted run ended everywhere, or time is up.
    let drain_start = Instant::now();
    let _ = ready(&client, &api, Duration::from_secs(120)).await;
    let tenants: HashSet<String> = s.tenants.iter().cloned().collect();
    let events_topic = format!("{}events", s.topic_prefix);
    let mut events = None;
    let mut store = None;
    let (verdict, read_errors, records, events) = loop {
        let mut errors = Vec::new();
        if store.is_none() {
            match observe::Store::connect(&s.cql, &s.keyspace).await {
                Ok(st) => store = Some(st),
                Err(e) => errors.push(format!("store: {e}")),
            }
        }
        let mut obs = Observations::default();
        if let Some(st) = &store {
            match st.runs().await {
                Ok(rows) => obs.store = rows,
                Err(e) => errors.push(format!("store: {e}")),
            }
        }
        match observe::history(s.history.clone()).await {
            Ok(rows) => obs.history = rows,
            Err(e) => errors.push(format!("history: {e}")),
        }
        // The events topic last: the sink's witnesses derive from it, so read after them
        // it is never behind them.
        if events.is_none() {
            match observe::EventsReader::new(&s.brokers, &events_topic) {
                Ok(r) => events = Some(r),
                Err(e) => errors.push(format!("events: {e}")),
            }
        }
        if let Some(r) = events.as_mut() {
            let reader = r;
            if let Err(e) = tokio::task::block_in_place(|| reader.catch_up(Duration::from_secs(5)))
            {
                errors.push(format!("events: {e}"));
            }
        }
        if let Some(r) = &events {
            obs.started = r.started.clone();
            obs.events = r.terminal.clone();
        }
        let v = compare::compare(&accepted, &obs, &tenants);
        let records = events.as_ref().map_or(0, |r| r.records);
        say(
            t0,
            &format!(
                "drain: ended on the events topic {}/{}, in the store {}, in the history {}{}",
                v.terminal_events,
                v.accepted,
                v.terminal_store,
                v.terminal_history,
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", errors.join("; "))
                }
            ),
        );
        if (v.unsettled() == 0 && errors.is_empty()) || drain_start.elapsed() >= s.drain {
            break (v, errors, records, events);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    let serve_restarts = supervisor
        .as_ref()
        .map_or(0, |s| s.restarts.load(std::sync::atomic::Ordering::Relaxed));
    if let Some(sup) = supervisor
        && let Ok(sup) = Arc::try_unwrap(sup)
    {
        tokio::task::block_in_place(|| sup.stop());
    }
    let scale_report = match (scale, fleet) {
        (Some(sc), Some(fleet)) => {
            let fleet = Arc::try_unwrap(fleet)
                .map_err(|_| anyhow::anyhow!("the scale stepper still holds the fleet"))?
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let restarts = fleet.restarts();
            tokio::task::block_in_place(|| fleet.stop());
            let (stamps, doubled) = events
                .as_ref()
                .map(|r| (r.stamps.as_slice(), r.doubled_events.clone()))
                .unwrap_or_default();
            let r = scale::report(
                sc,
                drive_start_ms,
                drive_end_ms,
                &changes,
                stamps,
                &scale::read_logs(sc),
                restarts,
                &doubled,
            );
            scale::write(&s.out, &r, stamps)?;
            Some(r)
        }
        _ => None,
    };
    let summary = Summary {
        scale: scale_report,
        started_at,
        settings: settings_json(s),
        drive: stats,
        faults: struck,
        serve_restarts,
        flaky_refused: flaky.refused.load(std::sync::atomic::Ordering::Relaxed),
        flaky_answered: flaky.answered.load(std::sync::atomic::Ordering::Relaxed),
        drain_seconds: drain_start.elapsed().as_secs_f64(),
        read_errors,
        events_records_read: records,
        verdict,
    };
    std::fs::write(
        s.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(summary)
}

fn settings_json(s: &Settings) -> serde_json::Value {
    let mix: Vec<String> = s
        .mix
        .iter()
        .map(|(k, w)| format!("{}={w}", k.name()))
        .collect();
    serde_json::json!({
        "api": s.api, "brokers": s.brokers, "topic_prefix": s.topic_prefix, "cql": s.cql,
        "keyspace": s.keyspace, "history": s.history, "rate": s.rate, "runs": s.runs,
        "tenants": s.tenants, "mix": mix.join(","), "seed": s.seed,
        "serve_kills": s.serve_kills, "kafka_kills": s.kafka_kills,
        "cassandra_kills": s.cassandra_kills, "down_for_s": s.down_for.as_secs_f64(),
        "drain_s": s.drain.as_secs_f64(), "give_up_s": s.give_up.as_secs_f64(),
    })
}

fn write_accepted(out: &std::path::Path, accepted: &[AcceptedRun]) -> std::io::Result<()> {
    let mut text = String::with_capacity(accepted.len() * 120);
    for a in accepted {
        text.push_str(&serde_json::to_string(a).unwrap_or_default());
        text.push('\n');
    }
    std::fs::write(out.join("accepted.jsonl"), text)
}

async fn inject(
    start: Instant,
    plan: Vec<(Duration, Fault)>,
    supervisor: Option<Arc<Supervisor>>,
    services: Option<Services>,
    down_for: Duration,
) -> Vec<Struck> {
    let mut struck = Vec::new();
    let mut last_done = start;
    for (at, fault) in plan {
        // A restart that took long delays the faults after it: they keep their gap.
        let due = (start + at).max(last_done + faults::MIN_GAP);
        tokio::time::sleep_until(due.into()).await;
        let at_s = start.elapsed().as_secs_f64();
        let s = match fault {
            Fault::Serve => {
                let pid = supervisor.as_ref().and_then(|s| s.kill9());
                Struck {
                    fault,
                    at_s,
                    pid,
                    restart_s: None,
                    note: if pid.is_some() {
                        "SIGKILL; restarted by the supervisor".into()
                    } else {
                        "aiq serve was not running".into()
                    },
                }
            }
            Fault::Kafka | Fault::Cassandra => {
                let Some(services) = services.clone() else {
                    continue;
                };
                match services.kill9(fault) {
                    Err(e) => Struck {
                        fault,
                        at_s,
                        pid: None,
                        restart_s: None,
                        note: e,
                    },
                    Ok(pid) => {
                        tokio::time::sleep(down_for).await;
                        let t = Instant::now();
                        let r = tokio::task::spawn_blocking(move || services.up(fault)).await;
                        let note = match r {
                            Ok(Ok(())) => format!("SIGKILL; restarted after {down_for:?} down"),
                            Ok(Err(e)) => format!("restart failed: {e}"),
                            Err(e) => format!("restart failed: {e}"),
                        };
                        Struck {
                            fault,
                            at_s,
                            pid: Some(pid),
                            restart_s: Some(t.elapsed().as_secs_f64()),
                            note,
                        }
                    }
                }
            }
        };
        eprintln!(
            "chaos: {:>4.0} s  fault: {:?} (pid {}) {}",
            s.at_s,
            s.fault,
            s.pid.map_or("-".into(), |p| p.to_string()),
            s.note
        );
        struck.push(s);
        last_done = Instant::now();
    }
    struck
}

async fn ready(client: &reqwest::Client, api: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = client.get(format!("{api}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{api}/readyz not ready within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn register(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    tenants: &[String],
    flaky_port: u16,
) -> anyhow::Result<()> {
    for tenant in tenants {
        for kind in Kind::ALL {
            let body = kind.document(flaky_port).to_string();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let r = client
                    .post(format!("{api}/v1/workflows"))
                    .bearer_auth(token)
                    .header(drive::ACTING_TENANT, tenant)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if matches!(r.status().as_u16(), 200 | 201) => break,
                    Ok(r) if r.status().is_client_error() => {
                        let status = r.status();
                        anyhow::bail!(
                            "registering {} for {tenant}: {status}: {}",
                            kind.id(),
                            r.text().await.unwrap_or_default()
                        );
                    }
                    other => {
                        anyhow::ensure!(
                            Instant::now() < deadline,
                            "registering {} for {tenant}: {:?}",
                            kind.id(),
                            other.map(|r| r.status())
                        );
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    }
    // The definitions follower of the orchestrator must have them before triggers come;
    // a trigger for a workflow it does not know yet is dead-lettered.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}
