//! `aiq tenants`: the operator's side of the tenant registry, straight to Kafka and the
//! store (no API token needed), through the same service as `/v1/tenants`, so a change
//! made here is checked, audited and followed exactly as one made through the API.

use std::process::ExitCode;
use std::sync::Arc;

use aiq_auth::Role;
use aiq_ingest::http::Caller;
use aiq_ingest::publisher::Publisher;
use aiq_ingest::registry::store::RegistryStore;
use aiq_ingest::tenants::{NewTenant, TenantPatch, Tenants};
use aiq_topics::{AuditAction, TenantId, TenantRecord};
use anyhow::Context;
use chrono::Utc;

use crate::cli::TenantsCommand;
use crate::config::Config;

/// The service over a follower of the tenants topic, read to its end.
async fn open(config: &Config) -> anyhow::Result<(Tenants, aiq_tenants::Tenants)> {
    let session = Arc::new(aiq_sql::connect(&config.cql).await?);
    let store = RegistryStore::new(session, &config.cql.keyspace)
        .await
        .context("opening the registry (did `aiq schema apply` run?)")?;
    let publisher = Publisher::new(&config.kafka, config.ingest.ack_timeout())?;
    let follower = aiq_tenants::spawn(&config.kafka)
        .await
        .context("following the tenants topic (did `aiq topics apply` run?)")?;
    let _ = follower.tail.watch().wait_for(|c| *c).await;
    let tenants = Tenants::new(
        Arc::clone(&follower.directory),
        Some(follower.tail.sync()),
        publisher,
        store,
        false,
    );
    Ok((tenants, follower))
}

/// The operator, as the audit trail names them.
fn operator(tenant: &TenantId) -> Caller {
    Caller {
        tenant: tenant.clone(),
        role: Role::PlatformAdmin,
        own_tenant: None,
        subject: format!(
            "operator:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        ),
    }
}

fn line(r: &TenantRecord) -> String {
    format!(
        "{:<24} {:<10} {:<32} updated {} by {}",
        r.id.as_str(),
        r.state.as_str(),
        r.display_name,
        r.updated_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        r.updated_by
    )
}

fn print(r: &TenantRecord) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(r)?);
    Ok(())
}

/// `aiq secrets rewrap-data-keys`: every data key wrapped under the current deployment
/// key (the first of `secrets.key_file`).
pub async fn rewrap_data_keys(config: &Config) -> anyhow::Result<ExitCode> {
    let keyring = config
        .secrets
        .keyring()?
        .map(Arc::new)
        .context("secrets.key_file is empty: there are no data keys to re-wrap")?;
    let followed = aiq_vault::spawn(&config.kafka, Some(keyring)).await?;
    if let Some(mut tail) = followed.tail {
        tail.caught_up().await;
        std::mem::forget(tail);
    }
    let vault = followed.vault;
    let n = tokio::task::spawn_blocking(move || vault.rewrap_blocking()).await??;
    println!("re-wrapped {n} data keys under the current deployment key");
    Ok(ExitCode::SUCCESS)
}

/// Builds the tenant's export archive in this process and writes it to `out`.
async fn export(
    config: &Config,
    tenants: &Tenants,
    id: &TenantId,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    tenants.catch_up().await;
    let record = tenants
        .get(id)
        .await
        .with_context(|| format!("no tenant {id:?}"))?;
    anyhow::ensure!(
        !record.is_erased(),
        "tenant {id:?} was erased: there is nothing to export"
    );
    let session = Arc::new(aiq_sql::connect(&config.cql).await?);
    let keyring = config.secrets.keyring()?.map(Arc::new);
    let vault = aiq_vault::spawn(&config.kafka, keyring).await?;
    if let Some(mut tail) = vault.tail {
        tail.caught_up().await;
        std::mem::forget(tail);
    }
    let definitions = aiq_catalog::spawn(&config.kafka).await?;
    let _ = definitions.tail.watch().wait_for(|c| *c).await;
    let exporter = aiq_ingest::export::Exporter {
        kafka: config.kafka.clone(),
        history: aiq_ingest::history::HistoryStore::new(Arc::clone(&session), &config.cql.keyspace)
            .await?
            .with_vault(vault.vault),
        registry: RegistryStore::new(Arc::clone(&session), &config.cql.keyspace).await?,
        catalog: Arc::clone(&definitions.catalog),
        files: config.sink.parquet.files()?,
        jobs: aiq_ingest::export::ExportStore::new(session, &config.cql.keyspace).await?,
        slots: Arc::new(tokio::sync::Semaphore::new(1)),
    };
    let export_id = uuid::Uuid::new_v4();
    let (bytes, digest, manifest, runs) = exporter
        .build(id, record.created_at, export_id, |_| Box::pin(async {}))
        .await?;
    std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "{}: {} bytes, {} files, {runs} runs; manifest SHA-256 {digest}",
        out.display(),
        bytes.len(),
        manifest.files.len()
    );
    Ok(())
}

pub async fn run(config: &Config, cmd: TenantsCommand) -> anyhow::Result<ExitCode> {
    let (tenants, _follower) = open(config).await?;
    let now = Utc::now();
    match cmd {
        TenantsCommand::Create { id, name, plan } => {
            let caller = operator(&id);
            let made = tenants
                .create(
                    NewTenant {
                        display_name: name.unwrap_or_else(|| id.to_string()),
                        id,
                        plan: plan.plan(),
                    },
                    &caller,
                    now,
                )
                .await?;
            tenants
                .audit(&caller, &made.record, AuditAction::TenantCreated)
                .await;
            println!("created tenant {}", made.record.id);
            println!("tenant_admin API key {} (shown once):", made.key_id);
            println!("{}", made.key);
        }
        TenantsCommand::List => {
            for r in tenants.directory.list() {
                println!("{}", line(&r));
            }
        }
        TenantsCommand::Show { id } => {
            let r = tenants
                .get(&id)
                .await
                .with_context(|| format!("no tenant {:?}", id.as_str()))?;
            print(&r)?;
        }
        TenantsCommand::Set { id, name, plan } => {
            let caller = operator(&id);
            let patch = TenantPatch {
                display_name: name,
                plan: plan.plan(),
                identity: None,
            };
            let r = tenants.update(&id, patch, &caller, now).await?;
            tenants.audit(&caller, &r, AuditAction::TenantUpdated).await;
            print(&r)?;
        }
        TenantsCommand::Suspend { id, cancel_running } => {
            let caller = operator(&id);
            let r = tenants.suspend(&id, cancel_running, &caller, now).await?;
            tenants
                .audit(&caller, &r, AuditAction::TenantSuspended)
                .await;
            println!("{}", line(&r));
        }
        TenantsCommand::Resume { id } => {
            let caller = operator(&id);
            let r = tenants.resume(&id, &caller, now).await?;
            tenants.audit(&caller, &r, AuditAction::TenantResumed).await;
            println!("{}", line(&r));
        }
        TenantsCommand::Export { id, out } => export(config, &tenants, &id, &out).await?,
    }
    Ok(ExitCode::SUCCESS)
}
