//! `aiq-load chaos`: the arguments, and the exit status (non-zero when any count of the
//! verdict is).

use std::path::PathBuf;
use std::time::Duration;

use crate::chaos::faults::{ServeCommand, Services};
use crate::chaos::scale::Scale;
use crate::chaos::workflows::Kind;
use crate::chaos::{Settings, run_with};

/// Variables of `scripts/services` that are not aiq configuration (aiq refuses unknown
/// `AIQ_` keys), kept away from `aiq serve`.
pub const SERVICES_VARIABLES: [&str; 12] = [
    "AIQ_SERVICES_DIR",
    "AIQ_SERVICES",
    "AIQ_SERVICES_TIMEOUT",
    "AIQ_CACHE_DIR",
    "AIQ_KAFKA_PORT",
    "AIQ_KAFKA_CONTROLLER_PORT",
    "AIQ_CQL_PORT",
    "AIQ_CASSANDRA_STORAGE_PORT",
    "AIQ_CASSANDRA_JMX_PORT",
    "AIQ_KAFKA_HEAP",
    "AIQ_CASSANDRA_HEAP",
    "AIQ_JAVA",
];

#[derive(clap::Args)]
pub struct ChaosArgs {
    /// Base URL of `aiq serve` (its `serve.http_listen`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// A platform admin's token (`aiq token --tenant ops --role platform_admin`).
    #[arg(long, env = "AIQ_LOAD_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long, env = "AIQ_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, env = "AIQ_KAFKA_TOPIC_PREFIX", default_value = "aiq.")]
    topic_prefix: String,
    #[arg(long, env = "AIQ_CQL_CONTACT_POINTS", default_value = "127.0.0.1:9042")]
    cql: String,
    #[arg(long, env = "AIQ_CQL_KEYSPACE", default_value = "aiq")]
    keyspace: String,
    /// The sink's Parquet root (`sink.parquet.root`).
    #[arg(long, env = "AIQ_SINK_PARQUET__ROOT", default_value = "data/history")]
    history: PathBuf,
    /// Triggers per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of triggers (`rate × duration` runs) unless --runs is given.
    #[arg(long, default_value_t = 250.0)]
    duration: f64,
    #[arg(long)]
    runs: Option<u64>,
    /// Tenants chaos0, chaos1, ...
    #[arg(long, default_value_t = 4)]
    tenants: usize,
    /// Workflows and weights: noop1, noop10, signal, flaky.
    #[arg(long, default_value = "noop1=0.4,noop10=0.2,signal=0.2,flaky=0.2")]
    mix: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// SIGKILLs of `aiq serve` (needs --aiq-bin) [default: 20; 0 with --scale].
    #[arg(long)]
    kills: Option<u32>,
    /// SIGKILLs of the Kafka broker (needs --services-*) [default: 2; 0 with --scale].
    #[arg(long)]
    kafka_kills: Option<u32>,
    /// SIGKILLs of the Cassandra node (needs --services-*) [default: 1; 0 with --scale].
    #[arg(long)]
    cassandra_kills: Option<u32>,
    /// The scale scenario instead: `aiq serve` runs ingest, worker and sink; orchestrator
    /// processes of their own go 1 → 2 → 3 → 2 → 1 with a SIGKILL at each change
    /// (needs --aiq-bin). Sending lasts five phases (`--phase`) unless --runs says.
    #[arg(long)]
    scale: bool,
    /// Seconds of each phase of the scale scenario.
    #[arg(long, default_value_t = 60.0)]
    phase: f64,
    /// Seconds from starting an orchestrator instance to SIGKILLing another (scale-up).
    #[arg(long, default_value_t = 5.0)]
    kill_delay: f64,
    /// Orchestrator instance n's operations listener is on this port + n (--scale).
    #[arg(long, default_value_t = 18290)]
    orchestrator_ops_port: u16,
    /// Seconds a killed Kafka or Cassandra stays down before its restart begins.
    #[arg(long, default_value_t = 5.0)]
    down_for: f64,
    /// The `aiq` binary: `aiq serve` is started and supervised here, with this process's
    /// environment (minus the services script's variables).
    #[arg(long)]
    aiq_bin: Option<PathBuf>,
    /// `scripts/services`, to restart a killed Kafka or Cassandra.
    #[arg(long)]
    services_script: Option<PathBuf>,
    /// Its state folder (AIQ_SERVICES_DIR), where the pid files are.
    #[arg(long)]
    services_dir: Option<PathBuf>,
    /// KEY=VALUE for the services script only (ports, heaps), repeated.
    #[arg(long = "services-env")]
    services_env: Vec<String>,
    /// Seconds after the last trigger for every run to end everywhere.
    #[arg(long, default_value_t = 300.0)]
    drain: f64,
    /// Seconds after it was due that a trigger is still retried (then it counts as given
    /// up: an API that stays down ends the run instead of holding it forever).
    #[arg(long, default_value_t = 120.0)]
    give_up: f64,
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// accepted.jsonl, summary.json and serve.log go here.
    #[arg(long, default_value = "aiq-chaos-out")]
    out: PathBuf,
}

fn secs(name: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|e| anyhow::anyhow!("{name}: {e}"))
}

/// Parses `noop1=0.4,flaky=0.2`.
pub fn parse_mix(spec: &str) -> anyhow::Result<Vec<(Kind, f64)>> {
    let mut mix = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, w) = part.split_once('=').unwrap_or((part, "1"));
        let kind = Kind::from_name(name.trim()).ok_or_else(|| {
            anyhow::anyhow!("--mix: {name:?} is none of noop1, noop10, signal, flaky")
        })?;
        let w: f64 = w
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("--mix: {part:?}: {e}"))?;
        anyhow::ensure!(
            w.is_finite() && w > 0.0,
            "--mix: {part:?}: weight must be positive"
        );
        mix.push((kind, w));
    }
    anyhow::ensure!(!mix.is_empty(), "--mix names no workflow");
    Ok(mix)
}

pub async fn main(a: ChaosArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.out)?;
    let services = match (&a.services_script, &a.services_dir) {
        (Some(script), Some(dir)) => Some(Services {
            script: script.clone(),
            dir: dir.clone(),
            env: a
                .services_env
                .iter()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
                    (k.to_owned(), v.to_owned())
                })
                .chain([("AIQ_SERVICES_DIR".to_owned(), dir.display().to_string())])
                .collect(),
        }),
        _ => None,
    };
    let serve = a.aiq_bin.as_ref().map(|bin| ServeCommand {
        bin: bin.clone(),
        env: if a.scale {
            vec![("AIQ_SERVE_ROLES".into(), "ingest,worker,sink".into())]
        } else {
            Vec::new()
        },
        env_remove: SERVICES_VARIABLES.iter().map(|s| (*s).to_owned()).collect(),
        log: a.out.join("serve.log"),
        pid_file: Some(a.out.join("serve.pid")),
    });
    let scale = if a.scale {
        let bin = a
            .aiq_bin
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--scale needs --aiq-bin"))?;
        Some(Scale {
            bin,
            env: Vec::new(),
            env_remove: SERVICES_VARIABLES.iter().map(|s| (*s).to_owned()).collect(),
            ops_ports: [1, 2, 3].map(|n| a.orchestrator_ops_port + n),
            phase: secs("--phase", a.phase)?,
            kill_delay: secs("--kill-delay", a.kill_delay)?,
            out: a.out.clone(),
        })
    } else {
        None
    };
    let duration = if a.scale { a.phase * 5.0 } else { a.duration };
    let runs = a.runs.unwrap_or((a.rate * duration).round() as u64);
    let kills = |n: Option<u32>, default: u32| n.unwrap_or(if a.scale { 0 } else { default });
    let settings = Settings {
        api: a.api,
        token: a.token,
        brokers: a.brokers,
        topic_prefix: a.topic_prefix,
        cql: a.cql,
        keyspace: a.keyspace,
        history: a.history,
        rate: a.rate,
        runs,
        tenants: (0..a.tenants).map(|i| format!("chaos{i}")).collect(),
        mix: parse_mix(&a.mix)?,
        seed: a.seed,
        serve_kills: kills(a.kills, 20),
        kafka_kills: kills(a.kafka_kills, 2),
        cassandra_kills: kills(a.cassandra_kills, 1),
        down_for: secs("--down-for", a.down_for)?,
        serve,
        services,
        drain: secs("--drain", a.drain)?,
        give_up: secs("--give-up", a.give_up)?,
        max_in_flight: a.max_in_flight,
        out: a.out.clone(),
    };
    let summary = run_with(&settings, scale.as_ref()).await?;
    println!("{}", summary.verdict.text());
    if let Some(r) = &summary.scale {
        println!("{}", r.table());
    }
    println!(
        "faults: {} ({} aiq serve restarts); drive: {} trigger requests for {} accepted, {} given up; {} signals",
        summary.faults.len(),
        summary.serve_restarts,
        summary.drive.trigger_requests,
        summary.drive.accepted,
        summary.drive.given_up,
        summary.drive.signals_accepted
    );
    eprintln!(
        "wrote {0}/summary.json and {0}/accepted.jsonl",
        a.out.display()
    );
    let problems: Vec<String> = summary
        .verdict
        .problems()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    let doubled_events = summary.scale.as_ref().map_or(0, |r| r.doubled_event_runs);
    anyhow::ensure!(
        doubled_events == 0,
        "chaos: {doubled_events} runs with a doubled run or step event (scale.md)"
    );
    anyhow::ensure!(
        problems.is_empty() && summary.drive.given_up == 0,
        "chaos: not every accepted run ended once, well, everywhere: {}{}",
        problems.join(", "),
        if summary.drive.given_up > 0 {
            format!(", triggers given up {}", summary.drive.given_up)
        } else {
            String::new()
        }
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_bad_ones_are_refused() {
        let m = parse_mix("noop1=0.4, flaky=0.6").unwrap();
        assert_eq!(m, vec![(Kind::Noop1, 0.4), (Kind::Flaky, 0.6)]);
        assert_eq!(parse_mix("signal").unwrap(), vec![(Kind::Signal, 1.0)]);
        for bad in ["", "nope=1", "noop1=0", "noop1=x"] {
            assert!(parse_mix(bad).is_err(), "{bad:?}");
        }
    }
}
