//! `aiq serve`: runs the stages named by `serve.roles` in this process.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aiq_connectors::{Connectors, KafkaTarget, SecretStore};
use aiq_ingest::bootstrap::Definitions;
use aiq_pipeline::orchestrator::{Orchestrator, OrchestratorMetrics};
use anyhow::Context;
use rdkafka::producer::FutureProducer;

use crate::config::Config;
use crate::roles::Role;

pub async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let roles: Vec<Role> = config.serve.roles.iter().collect();

    // Ctrl-C by hand, SIGTERM from a service manager: either drains and stops.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signals = stop_tx.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = signals.send(true);
    });

    // One catalog per process, shared by ingest and the orchestrator.
    let definitions = if roles.contains(&Role::Ingest) || roles.contains(&Role::Orchestrator) {
        Some(
            aiq_ingest::bootstrap::follow_definitions(&config.kafka)
                .await
                .context("following the definitions topic")?,
        )
    } else {
        None
    };
    let orchestrator = match &definitions {
        Some(d) if roles.contains(&Role::Orchestrator) => {
            Some(start_orchestrator(config, d).await?)
        }
        _ => None,
    };
    // A dead orchestrator must end the process, so that its supervisor restarts it.
    let watchdog = orchestrator.as_ref().map(|o| {
        end_when_finished(
            o,
            &stop_tx,
            Duration::from_millis(200),
            Orchestrator::is_finished,
        )
    });

    // Only ingest (to seal) and workers (to open) touch secrets.
    let keyring = if roles.contains(&Role::Ingest) || roles.contains(&Role::Worker) {
        config
            .secrets
            .keyring()
            .context("loading the secrets key file")?
            .map(Arc::new)
    } else {
        None
    };
    let worker = if roles.contains(&Role::Worker) {
        let (secrets, secrets_tail) = SecretStore::follow(&config.kafka, keyring.clone())
            .await
            .context("reading the secrets topic")?;
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
        .context("setting up the connectors")?;
        let w = aiq_pipeline::worker::Worker::start(
            &config.kafka,
            config.worker.clone(),
            connectors,
            prometheus::default_registry(),
        )
        .context("starting the worker")?;
        tracing::info!("worker started");
        Some((w, secrets_tail))
    } else {
        None
    };

    let sink = if roles.contains(&Role::Sink) {
        let session = aiq_sql::connect(&config.cql)
            .await
            .context("connecting the sink to the store")?;
        let sink = aiq_sink::Sink::start(
            &config.kafka,
            &config.kafka.topics(),
            Arc::new(session),
            &config.cql.keyspace,
            config.sink.clone(),
            prometheus::default_registry(),
        )
        .await
        .context("starting the sink")?;
        tracing::info!("sink started");
        Some(Arc::new(std::sync::Mutex::new(Some(sink))))
    } else {
        None
    };
    // A sink that stopped on its own (an error it cannot retry) ends the process too.
    let sink_watchdog = sink.as_ref().map(|s| {
        end_when_finished(
            s,
            &stop_tx,
            Duration::from_millis(500),
            aiq_sink::Sink::is_finished,
        )
    });

    let mut wait = stop_rx.clone();
    if roles.contains(&Role::Ingest) {
        let (jwt, jwks_url) = crate::auth::jwt_verifier(&config.ingest).await?;
        let _refresh = jwks_url.map(|url| {
            crate::auth::spawn_refresh(
                jwt.clone(),
                url,
                Duration::from_secs(config.ingest.jwks_refresh_secs),
            )
        });
        let ingest = aiq_ingest::bootstrap::build(
            &config.kafka,
            &config.cql,
            config.ingest.clone(),
            jwt,
            keyring.clone(),
            definitions
                .as_ref()
                .context("the ingest role follows the definitions topic")?,
            Some(Arc::new(
                aiq_analytics::Analytics::new(config.analytics.clone())
                    .context("setting up the analytics engine")?,
            )),
        )
        .await
        .context("starting the ingest stage")?;
        let listener = tokio::net::TcpListener::bind(&config.serve.http_listen)
            .await
            .with_context(|| format!("listening on {}", config.serve.http_listen))?;
        tracing::info!(address = %config.serve.http_listen, "ingest API listening");
        let shutdown = async move {
            let _ = wait.wait_for(|s| *s).await;
        };
        aiq_ingest::http::serve(ingest.app, listener, shutdown).await?;
    } else {
        let _ = wait.wait_for(|s| *s).await;
    }

    if let Some(w) = watchdog {
        w.abort();
    }
    if let Some(w) = sink_watchdog {
        w.abort();
    }
    let sink = sink.and_then(|s| s.lock().unwrap_or_else(|p| p.into_inner()).take());
    if let Some(s) = sink {
        s.stop().await.context("the sink failed")?;
        tracing::info!("sink stopped");
    }
    if let Some((w, _secrets_tail)) = worker {
        w.stop().await.context("the worker failed")?;
        tracing::info!("worker stopped");
    }
    if let Some(o) = orchestrator {
        let taken = o.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(o) = taken {
            tokio::task::spawn_blocking(move || o.stop())
                .await
                .context("waiting for the orchestrator")?
                .context("the orchestrator failed")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

type Shared = Arc<std::sync::Mutex<Option<Orchestrator>>>;

/// Asks the whole process to stop (through `stop`) once the stage in `stage` has ended
/// on its own or been taken away, checking every `every`.
fn end_when_finished<T: Send + 'static>(
    stage: &Arc<std::sync::Mutex<Option<T>>>,
    stop: &tokio::sync::watch::Sender<bool>,
    every: Duration,
    finished: fn(&T) -> bool,
) -> tokio::task::JoinHandle<()> {
    let stage = Arc::clone(stage);
    let stop = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let ended = stage
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_none_or(finished);
            if ended {
                let _ = stop.send(true);
                return;
            }
        }
    })
}

async fn start_orchestrator(config: &Config, definitions: &Definitions) -> anyhow::Result<Shared> {
    // Triggers for workflows not read yet would go to the dead-letter topic.
    let _ = definitions
        .tail
        .watch()
        .wait_for(|caught_up| *caught_up)
        .await;
    let metrics = Arc::new(OrchestratorMetrics::new(prometheus::default_registry()));
    let o = Orchestrator::spawn(
        config.kafka.clone(),
        config.orchestrator.clone(),
        Arc::clone(&definitions.catalog),
        definitions.tail.sync(),
        metrics,
    )
    .context("starting the orchestrator")?;
    Ok(Arc::new(std::sync::Mutex::new(Some(o))))
}
