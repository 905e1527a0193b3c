//! `aiq replay`: a bulk replay chosen by SQL from the operator's machine. The predicate
//! is evaluated here, by the analytics engine over the Parquet history (like `aiq sql`);
//! a dry run prints the count and a sample; a real one stores the job, which a running
//! ingest stage takes and works through (as if `POST /v1/replays` had made it), and
//! follows its progress until it ends.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aiq_analytics::{Analytics, Scope};
use aiq_ingest::replays::{Job, JobRequest, JobState, ReplayMode, ReplayStore, matching};
use aiq_topics::TenantId;
use anyhow::Context;
use chrono::Utc;

use crate::config::Config;

pub struct ReplayArgs {
    pub predicate: String,
    pub tenant: Option<TenantId>,
    pub mode: ReplayMode,
    pub dry_run: bool,
    pub max_per_second: u32,
    pub wait: bool,
}

pub async fn run(config: &Config, a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let analytics = Analytics::new(config.analytics.clone()).context("starting the engine")?;
    let scope = a.tenant.clone().map_or(Scope::Platform, Scope::Tenant);
    let targets = matching(&analytics, &scope, &a.predicate).await?;
    if a.dry_run {
        println!("{} runs match", targets.len());
        for t in targets.iter().take(20) {
            println!("{}  {}", t.tenant, t.run);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(tenant) = a.tenant else {
        anyhow::bail!(
            "a replay job belongs to a tenant: give --tenant (across tenants, a platform admin \
             uses POST /v1/replays)"
        );
    };
    let session = Arc::new(aiq_sql::connect(&config.cql).await?);
    let store = ReplayStore::new(session, &config.cql.keyspace)
        .await
        .context("the replay tables (did `aiq schema apply` run?)")?;
    let job = Job::new(
        JobRequest {
            tenant: tenant.clone(),
            created_by: format!(
                "operator:{}",
                std::env::var("USER").unwrap_or_else(|_| "unknown".into())
            ),
            predicate: a.predicate,
            mode: a.mode,
            platform: false,
            max_per_second: a.max_per_second,
        },
        targets,
        Utc::now(),
    );
    store.create(&job).await?;
    println!("replay {} of {} runs created", job.id, job.total);
    if !a.wait {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(j) = store.get(&tenant, job.id).await? else {
            anyhow::bail!("replay {} is gone", job.id);
        };
        eprintln!(
            "{}: {} of {} done, {} skipped, {} failed",
            j.state.as_str(),
            j.done,
            j.total,
            j.skipped,
            j.failed
        );
        if j.state != JobState::Running {
            if let Some(e) = j.last_error {
                eprintln!("last error: {e}");
            }
            return Ok(if j.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
    }
}
