//! The `run`, `baseline` and `pipe` subcommands of `aiq-load`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use crate::baseline;
use crate::loadgen::{LoadError, Mix, Settings};

#[derive(clap::Args)]
pub struct RunArgs {
    /// Base URL of the running `aiq serve`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// A platform admin's token (`aiq token --tenant ops --role platform_admin`): it
    /// registers the workflows and starts runs for every tenant with X-AIQ-Tenant.
    #[arg(long, env = "AIQ_LOAD_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long, env = "AIQ_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The topic prefix `aiq serve` uses (its events topic is `<prefix>events`).
    #[arg(long, env = "AIQ_KAFKA_TOPIC_PREFIX", default_value = "aiq.")]
    topic_prefix: String,
    /// Triggers per second, sent on schedule whatever the answers.
    #[arg(long)]
    rate: f64,
    /// Seconds of sending (`rate × duration` triggers) unless --runs is given.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Triggers in all.
    #[arg(long)]
    runs: Option<u64>,
    #[arg(long, default_value_t = 20)]
    tenants: usize,
    /// Exponent of the Zipf distribution tenants are drawn from.
    #[arg(long, default_value_t = 1.1)]
    zipf: f64,
    /// Workflows and their shares: hello (1 noop step), ten-steps, steps-N, or a
    /// document id from --examples.
    #[arg(long, default_value = "hello=0.7,ten-steps=0.3")]
    mix: String,
    /// Tenants are <prefix>0, <prefix>1, ...; fresh by default so that runs never mix.
    #[arg(long)]
    tenant_prefix: Option<String>,
    #[arg(long, default_value = "examples/workflows")]
    examples: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds at the start left out of the sustained throughput.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds to wait after the last trigger for runs to end.
    #[arg(long, default_value_t = 60.0)]
    drain_timeout: f64,
    /// HTTP requests in flight at most; beyond it the schedule slips (and is reported).
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    #[arg(long)]
    no_baseline: bool,
    /// Messages of the raw-Kafka baseline.
    #[arg(long, default_value_t = 100_000)]
    baseline_messages: u64,
    /// Skips the per-hop breakdown (a read-committed tap of the triggers, tasks and
    /// results topics beside the events one).
    #[arg(long)]
    no_hops: bool,
    /// Per-second cron schedules registered for the first tenant before the load and
    /// disabled after it; the hop tap reports how late their ticks became visible.
    #[arg(long, default_value_t = 0)]
    cron_schedules: usize,
    /// Inputs of the transactional consume → produce pipe measured before the load (the
    /// floor tasks/s is compared with); 0 skips it.
    #[arg(long, default_value_t = 100_000)]
    pipe_messages: u64,
    /// Where report.md, latency.svg and summary.json go.
    #[arg(long, default_value = "aiq-load-out")]
    out: PathBuf,
}

#[derive(clap::Args)]
pub struct BaselineArgs {
    #[arg(long, env = "AIQ_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Partitions of the baseline topic; by default those of `<topic-prefix>triggers`, or
    /// 12 when it does not exist.
    #[arg(long)]
    partitions: Option<i32>,
    #[arg(long, env = "AIQ_KAFKA_TOPIC_PREFIX", default_value = "aiq.")]
    topic_prefix: String,
}

#[derive(clap::Args)]
pub struct PipeArgs {
    #[arg(long, env = "AIQ_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Triggers put through the pipe.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Partitions of the input and output topics; by default those of
    /// `<topic-prefix>triggers`, or 12 when it does not exist.
    #[arg(long)]
    partitions: Option<i32>,
    /// Starts the pipe's topics, consumer group and transactional id too.
    #[arg(long, env = "AIQ_KAFKA_TOPIC_PREFIX", default_value = "aiq.")]
    topic_prefix: String,
    /// Inputs per transaction at most; by default the orchestrator's default.
    #[arg(long)]
    batch_max_records: Option<usize>,
    /// Milliseconds a transaction takes inputs at most; by default the orchestrator's
    /// default.
    #[arg(long)]
    batch_max_ms: Option<u64>,
    /// Batches closed only when full or old and committed with the client libraries'
    /// defaults, as the orchestrator did before it avoided their ~100 ms waits.
    #[arg(long)]
    plain_commit: bool,
    /// Transactional producers the batches take in turn; by default the orchestrator's
    /// default (`orchestrator.transactional_producers`).
    #[arg(long)]
    producers: Option<usize>,
    /// Leaves the input and output topics (named on the last line) and the consumer group
    /// in place instead of deleting them.
    #[arg(long)]
    keep_topics: bool,
}

fn seconds(name: &'static str, s: f64) -> Result<Duration, LoadError> {
    Duration::try_from_secs_f64(s).map_err(|e| LoadError::Setting {
        name,
        reason: e.to_string(),
    })
}

pub async fn run(a: RunArgs) -> anyhow::Result<()> {
    let runs = match a.runs {
        Some(n) => n,
        None => (a.rate * a.duration).round() as u64,
    };
    let stamp = chrono::Utc::now().format("%m%d%H%M%S");
    let settings = Settings {
        api: a.api,
        token: a.token,
        brokers: a.brokers,
        topic_prefix: a.topic_prefix,
        rate: a.rate,
        runs,
        tenants: a.tenants,
        zipf: a.zipf,
        mix: Mix::parse(&a.mix)?,
        tenant_prefix: a.tenant_prefix.unwrap_or_else(|| format!("load{stamp}-")),
        examples: a.examples,
        seed: a.seed,
        warmup: seconds("--warmup", a.warmup)?,
        drain_timeout: seconds("--drain-timeout", a.drain_timeout)?,
        max_in_flight: a.max_in_flight.max(1),
        baseline_messages: (!a.no_baseline && a.baseline_messages > 0)
            .then_some(a.baseline_messages),
        hops: !a.no_hops,
        cron_schedules: a.cron_schedules,
        pipe_messages: (a.pipe_messages > 0).then_some(a.pipe_messages),
        out: a.out,
        show_progress: std::io::stderr().is_terminal(),
    };
    let outcome = crate::loadgen::run(&settings).await?;
    println!("{}", outcome.markdown());
    eprintln!(
        "wrote {0}/report.md, {0}/latency.svg, {0}/summary.json",
        settings.out.display()
    );
    anyhow::ensure!(
        outcome.completed > 0,
        "no run completed: is --topic-prefix the one aiq serve uses?"
    );
    Ok(())
}

pub async fn baseline(a: BaselineArgs) -> anyhow::Result<()> {
    let partitions = match a.partitions {
        Some(p) => p,
        None => baseline::triggers_partitions(&a.brokers, &a.topic_prefix)?.unwrap_or(12),
    };
    let b = baseline::measure(&a.brokers, partitions, a.messages).await?;
    println!("{}", b.markdown());
    anyhow::ensure!(
        b.consumed == a.messages && b.produced == a.messages,
        "produced {} and consumed {} of {} messages",
        b.produced,
        b.consumed,
        a.messages
    );
    Ok(())
}

pub async fn pipe(a: PipeArgs) -> anyhow::Result<()> {
    let partitions = match a.partitions {
        Some(p) => p,
        None => baseline::triggers_partitions(&a.brokers, &a.topic_prefix)?.unwrap_or(12),
    };
    let defaults = baseline::PipeSettings::orchestrator(partitions, a.messages);
    let settings = baseline::PipeSettings {
        batch_max_records: a.batch_max_records.unwrap_or(defaults.batch_max_records),
        batch_max_ms: a.batch_max_ms.unwrap_or(defaults.batch_max_ms),
        commit: if a.plain_commit {
            baseline::Commit::Plain
        } else {
            baseline::Commit::Orchestrator
        },
        producers: a.producers.unwrap_or(defaults.producers),
        keep_topics: a.keep_topics,
        ..defaults
    };
    let p = baseline::pipe(&a.brokers, &a.topic_prefix, &settings).await?;
    println!("{}", p.markdown());
    if let Some((input, output)) = &p.kept_topics {
        println!("kept topics: {input} {output}");
    }
    anyhow::ensure!(
        p.exactly_once(),
        "not exactly once: {} of {} records committed, {} read back, {} missing, {} duplicated, {} altered",
        p.records,
        p.settings.messages,
        p.read_back,
        p.missing,
        p.duplicated,
        p.altered
    );
    Ok(())
}
