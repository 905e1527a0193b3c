//! `aiq serve`: runs the stages named by `serve.roles` in this process.

use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;
use crate::roles::Role;

/// The issue that brings each stage not in this build yet.
fn missing_stage(role: Role) -> Option<&'static str> {
    match role {
        Role::Ingest => None,
        Role::Orchestrator => Some("#5"),
        Role::Worker => Some("#6"),
        Role::Sink => Some("#7"),
    }
}

pub async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let roles: Vec<Role> = config.serve.roles.iter().collect();
    let missing: Vec<String> = roles
        .iter()
        .filter_map(|r| missing_stage(*r).map(|issue| format!("{} (issue {issue})", r.as_str())))
        .collect();
    if !roles.contains(&Role::Ingest) {
        anyhow::bail!(
            "this build runs only the ingest stage; not yet built: {}",
            missing.join(", ")
        );
    }
    if !missing.is_empty() {
        tracing::warn!(
            "this build has no stage yet for {}; running ingest only",
            missing.join(", ")
        );
    }
    let jwt = crate::auth::jwt_verifier(&config.ingest)?;
    let ingest =
        aiq_ingest::bootstrap::build(&config.kafka, &config.cql, config.ingest.clone(), jwt)
            .await
            .context("starting the ingest stage")?;
    let listener = tokio::net::TcpListener::bind(&config.serve.http_listen)
        .await
        .with_context(|| format!("listening on {}", config.serve.http_listen))?;
    tracing::info!(address = %config.serve.http_listen, "ingest API listening");
    // Ctrl-C by hand, SIGTERM from a service manager: either drains in-flight requests.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    aiq_ingest::http::serve(ingest.app, listener, shutdown).await?;
    drop(ingest.tail);
    Ok(ExitCode::SUCCESS)
}
