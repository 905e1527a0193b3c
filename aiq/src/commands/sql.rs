//! `aiq sql` and `aiq report`: the analytics engine for an operator on the machine that
//! holds the Parquet history. Across tenants unless `--tenant` scopes the query.

use std::process::ExitCode;

use aiq_analytics::{Analytics, QueryResult, REPORTS, Scope};
use aiq_topics::TenantId;
use anyhow::Context;

use crate::cli::OutputFormat;
use crate::config::Config;

fn scope(tenant: Option<TenantId>) -> Scope {
    tenant.map_or(Scope::Platform, Scope::Tenant)
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
    let result = analytics.query(&scope(tenant), sql).await?;
    print(&result, format)?;
    Ok(ExitCode::SUCCESS)
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
    let result = analytics.report(&scope(tenant), name).await?;
    print(&result, format)?;
    Ok(ExitCode::SUCCESS)
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
