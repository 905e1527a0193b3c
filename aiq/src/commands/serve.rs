//! `aiq serve`: runs the stages named by `serve.roles` in this process.
//!
//! Every stage is started the same way (settings → `spawn` → a `StageHandle`) and pushed
//! into one [`Stages`] set in dependency order: the followers first (the definitions for
//! ingest and the orchestrator, the secrets for the worker), then the stages that read
//! them. The process then waits for a signal or for the first stage to end on its own —
//! every stage is watched, so none can die while the others keep the process alive — and
//! stops the rest in reverse order. A stage that ended on its own makes the exit code
//! non-zero, so a supervisor restarts the process. Metrics and health checks are served
//! on an operations listener of their own (`serve.ops_listen`), started last.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aiq_catalog::Definitions;
use aiq_connectors::{Connectors, KafkaTarget, SecretStore};
use aiq_orchestrator::OrchestratorMetrics;
use aiq_stage::{BackgroundRuntime, StageHandle, Stages};
use anyhow::Context;
use rdkafka::producer::FutureProducer;

use crate::config::Config;
use crate::roles::Role;

/// The name of the sink's threads (Linux keeps 15 bytes).
const SINK_THREAD_NAME: &str = "aiq-sink";

pub async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let roles: Vec<Role> = config.serve.roles.iter().collect();
    let has = |r: Role| roles.contains(&r);

    // Ctrl-C by hand, SIGTERM from a service manager: either drains and stops.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };

    // Declared before the stages, so dropped after them: a stage's runtime outlives it.
    let mut runtimes = Vec::new();
    let mut stages = Stages::new();
    // Anything that fails while starting stops what already runs before returning.
    let started = start(config, &has, &mut stages, &mut runtimes).await;
    if let Err(e) = started {
        for failure in stages.stop_all().await {
            tracing::error!(error = %failure, "while stopping after a failed start");
        }
        return Err(e);
    }
    tracing::info!(stages = ?stages.names(), "every stage is running");

    let ended = stages.until_first_ends(shutdown).await;
    if let Some(stage) = ended {
        tracing::error!(stage, "a stage ended on its own; stopping the others");
    }
    let failures = stages.stop_all().await;
    for f in &failures {
        tracing::error!(error = %f, "stage failed");
    }
    if let Some(first) = failures.into_iter().next() {
        return Err(anyhow::Error::new(first));
    }
    Ok(match ended {
        // Ending cleanly but unasked is still not what a server does.
        Some(_) => ExitCode::FAILURE,
        None => ExitCode::SUCCESS,
    })
}

/// Starts the stages of `roles` into `stages`, followers before their readers.
async fn start(
    config: &Config,
    has: &impl Fn(Role) -> bool,
    stages: &mut Stages,
    runtimes: &mut Vec<BackgroundRuntime>,
) -> anyhow::Result<()> {
    // Before any stage maps a tenant to a partition by the configured counts.
    aiq_kafka::check_partitions(&config.kafka, &config.kafka.topics())
        .context("checking the topics' partition counts")?;
    // What the stages report as keeping the process from being ready (/readyz).
    let health = aiq_stage::Health::new();
    // One tenant directory per process, read by every stage: plans and suspensions
    // change live. Read to its end first, so no stage starts blind to a suspension.
    let tenants = aiq_tenants::spawn(&config.kafka)
        .await
        .context("following the tenants topic")?;
    stages.push(tenants.handle());
    let _ = tenants.tail.watch().wait_for(|caught_up| *caught_up).await;
    // The tenants' data keys, read to the end before any stage seals or opens with
    // them; off without a deployment key.
    let keyring = config
        .secrets
        .keyring()
        .context("loading the secrets key file")?
        .map(Arc::new);
    if keyring.is_none() {
        tracing::warn!(
            "secrets.key_file is empty: payloads are not sealed, and erasing a tenant cannot make its records in Kafka unreadable"
        );
    }
    let followed = aiq_vault::spawn(&config.kafka, keyring.clone())
        .await
        .context("following the data-keys topic")?;
    if let Some(mut tail) = followed.tail {
        stages.push(tail.handle());
        tail.caught_up().await;
    }
    let vault = followed.vault;
    // One catalog per process, shared by ingest and the orchestrator.
    let definitions = if has(Role::Ingest) || has(Role::Orchestrator) {
        let d = aiq_catalog::spawn(&config.kafka)
            .await
            .context("following the definitions topic")?;
        stages.push(d.handle());
        Some(d)
    } else {
        None
    };
    if let Some(d) = definitions.as_ref().filter(|_| has(Role::Orchestrator)) {
        stages.push(start_orchestrator(config, d, &tenants, &vault).await?);
    }

    if has(Role::Worker) {
        let (secrets, secrets_tail) = SecretStore::follow(&config.kafka, keyring.clone())
            .await
            .context("reading the secrets topic")?;
        stages.push(secrets_tail.handle());
        let producer: FutureProducer = config
            .kafka
            .producer_config()
            .create()
            .context("creating the kafka connector's producer")?;
        let connectors = Connectors::builtin(
            &config.connectors,
            Arc::new(secrets),
            Some(KafkaTarget {
                producer,
                topic_prefix: config.kafka.topic_prefix.clone(),
            }),
            prometheus::default_registry(),
        )
        .context("setting up the connectors")?
        .restrict({
            let directory = Arc::clone(&tenants.directory);
            Arc::new(move |tenant, connector| {
                directory
                    .with(tenant, |r| r.plan.allows_connector(connector))
                    .unwrap_or(true)
            })
        });
        let worker = aiq_worker::spawn(
            &config.kafka,
            config.worker.clone(),
            connectors,
            Arc::clone(&vault),
            prometheus::default_registry(),
        )
        .context("starting the worker")?;
        stages.push(worker);
    }

    if has(Role::Sink) {
        let mut sink_settings = config.sink.clone();
        let directory = Arc::clone(&tenants.directory);
        sink_settings.retention.plans =
            aiq_sink::settings::PlanClasses(Some(Arc::new(move |tenant: &str| {
                let id = aiq_topics::TenantId::new(tenant).ok()?;
                directory
                    .with(&id, |r| r.plan.retention_class.clone())
                    .flatten()
            })));
        let directory = Arc::clone(&tenants.directory);
        sink_settings.retention.erased =
            aiq_sink::settings::ErasedTenants(Some(Arc::new(move |tenant: &str| {
                aiq_topics::TenantId::new(tenant)
                    .ok()
                    .and_then(|id| directory.with(&id, aiq_topics::TenantRecord::is_erased))
                    .unwrap_or(false)
            })));
        // No run waits on the sink: it runs on threads of its own at a lower priority,
        // its store driver's connection tasks with it (they run where they are spawned).
        let runtime = BackgroundRuntime::new(
            SINK_THREAD_NAME,
            sink_settings.threads,
            sink_settings.threads.saturating_mul(4),
            sink_settings.thread_nice,
        )
        .context("starting the sink's runtime")?;
        let (kafka, cql, health) = (config.kafka.clone(), config.cql.clone(), health.clone());
        let sink = runtime
            .spawn(async move {
                let session = aiq_sql::connect(&cql)
                    .await
                    .context("connecting the sink to the store")?;
                aiq_sink::spawn(
                    &kafka,
                    &kafka.topics(),
                    Arc::new(session),
                    &cql.keyspace,
                    sink_settings,
                    prometheus::default_registry(),
                    health,
                )
                .await
                .context("starting the sink")
            })
            .await
            .context("starting the sink")??;
        runtimes.push(runtime);
        stages.push(sink);
    }

    let mut ingest_app = None;
    if has(Role::Ingest) {
        let (jwt, refresh) = crate::auth::jwt_verifier(&config.ingest).await?;
        let every = Duration::from_secs(config.ingest.jwks_refresh_secs);
        for r in refresh {
            stages.push(crate::auth::spawn_refresh(r.verifier, r.url, every));
        }
        stages.push(crate::auth::spawn_tenant_issuers(
            jwt.clone(),
            Arc::clone(&tenants.directory),
            config.ingest.jwt_audience.clone(),
            config.ingest.configured_issuers(),
            every,
        ));
        let ingest = aiq_ingest::bootstrap::build(
            &config.kafka,
            &config.cql,
            config.ingest.clone(),
            jwt,
            keyring,
            aiq_ingest::bootstrap::Followers {
                definitions: definitions
                    .as_ref()
                    .context("the ingest role follows the definitions topic")?,
                tenants: Some(&tenants),
                vault: Some(&vault),
            },
            Some(Arc::new(
                aiq_analytics::Analytics::with_registry(
                    config.analytics.clone(),
                    prometheus::default_registry(),
                )
                .context("setting up the analytics engine")?,
            )),
        )
        .await
        .context("starting the ingest stage")?;
        let listener = tokio::net::TcpListener::bind(&config.serve.http_listen)
            .await
            .with_context(|| format!("listening on {}", config.serve.http_listen))?;
        tracing::info!(address = %config.serve.http_listen, "ingest API listening");
        let mut app = ingest.app;
        app.health = health.clone();
        ingest_app = Some(app.clone());
        stages.push(aiq_ingest::spawn(app, listener));
    }

    // Last: its /readyz of a process without ingest says the stages above run.
    let ops = &config.serve.ops_listen;
    let listener = tokio::net::TcpListener::bind(ops)
        .await
        .with_context(|| format!("listening on {ops} (serve.ops_listen)"))?;
    tracing::info!(address = %ops, "operations listener (metrics, health) listening");
    stages.push(aiq_ingest::http::ops::spawn(ingest_app, health, listener));
    Ok(())
}

async fn start_orchestrator(
    config: &Config,
    definitions: &Definitions,
    tenants: &aiq_tenants::Tenants,
    vault: &Arc<aiq_vault::Vault>,
) -> anyhow::Result<StageHandle> {
    // Triggers for workflows not read yet would go to the dead-letter topic.
    let _ = definitions
        .tail
        .watch()
        .wait_for(|caught_up| *caught_up)
        .await;
    let metrics = Arc::new(OrchestratorMetrics::new(prometheus::default_registry()));
    aiq_orchestrator::spawn(
        config.kafka.clone(),
        config.orchestrator.clone(),
        Arc::clone(&definitions.catalog),
        definitions.tail.sync(),
        Arc::clone(&tenants.directory),
        Arc::clone(vault),
        metrics,
    )
    .context("starting the orchestrator")
}
