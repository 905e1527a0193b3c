//! `aiq sql` and `aiq report`: the analytics engine for an operator on the machine that
//! holds the Parquet history. Across tenants unless `--tenant` scopes the query.
//!
//! The query runs as the server's do: on the SQL runtime's threads (at
//! `analytics.thread_nice`, so that on a machine running `aiq serve` the pipeline gets a
//! busy core first), within `analytics.memory_pool_bytes` and the query limits (which a
//! command, one query per process, stays within). A refusal by a limit would exit with
//! status 75 (try again later).

use std::process::ExitCode;

use aiq_analytics::{Analytics, AnalyticsError, QueryResult, REPORTS, Scope};
use aiq_topics::TenantId;
use anyhow::Context;

use crate::cli::OutputFormat;
use crate::config::Config;

fn scope(tenant: Option<TenantId>) -> Scope {
    tenant.map_or(Scope::Platform, Scope::Tenant)
}

/// EX_TEMPFAIL: refused by a query limit, or the history changed under every attempt;
/// the same command may succeed later.
const BUSY: u8 = 75;

/// Prints the answer, or says why there is none: a refusal by a limit or a history that
/// kept changing is exit status 75.
fn finish(
    result: Result<QueryResult, AnalyticsError>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    match result {
        Ok(result) => {
            print(&result, format)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (AnalyticsError::Busy { .. } | AnalyticsError::HistoryChanged { .. })) => {
            eprintln!("aiq: {e}");
            Ok(ExitCode::from(BUSY))
        }
        Err(e) => Err(e.into()),
    }
}

fn print(result: &QueryResult, format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => println!("{}", result.to_table()),
        OutputFormat::Csv => print!("{}", result.to_csv()),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(result).context("encoding the result")?
        ),
    }
    if result.truncated && format == OutputFormat::Table {
        eprintln!(
            "aiq: the result was cut at {} rows (analytics.max_result_rows)",
            result.rows.len()
        );
    }
    Ok(())
}

pub async fn query(
    config: &Config,
    sql: &str,
    tenant: Option<TenantId>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let analytics = Analytics::new(config.analytics.clone()).context("starting the engine")?;
    finish(analytics.query(&scope(tenant), sql).await, format)
}

pub async fn report(
    config: &Config,
    name: Option<&str>,
    tenant: Option<TenantId>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let Some(name) = name else {
        for r in REPORTS {
            println!("{:<20} {}", r.name, r.title);
        }
        return Ok(ExitCode::SUCCESS);
    };
    let analytics = Analytics::new(config.analytics.clone()).context("starting the engine")?;
    finish(analytics.report(&scope(tenant), name).await, format)
}

/// `aiq history compact`: merges small Parquet files, moves old days to the archive and
/// deletes what is past retention. Safe to run while the sink writes (it only touches
/// days at least `compact_after_days` old).
pub async fn compact(config: &Config) -> anyhow::Result<ExitCode> {
    let settings = config.sink.parquet.clone();
    let today = chrono::Utc::now().date_naive();
    let report = tokio::task::spawn_blocking(move || aiq_sink::parquet::compact(&settings, today))
        .await
        .context("waiting for compaction")??;
    println!(
        "merged {} files into {}; archived {} days; deleted {} days",
        report.merged_files, report.written_files, report.archived_days, report.deleted_days
    );
    Ok(ExitCode::SUCCESS)
}
