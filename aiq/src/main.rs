//! `aiq`: the AutomateIQ binary. Everything fallible below `main` returns typed errors
//! from the crates; they are turned into a message and an exit status here, at the edge.

mod auth;
mod cli;
mod commands;
mod config;
mod logging;
mod roles;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("aiq: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Offline: needs no configuration, so a broken config cannot stop a document check.
    if let Command::Workflows(cmd) = cli.command {
        return commands::workflows::run(cmd);
    }
    let roles = match &cli.command {
        Command::Serve { roles } => roles.as_ref(),
        _ => None,
    };
    let config = config::load(cli.global.config.as_deref(), cli.global.overrides(roles))?;
    logging::init(&config.log);
    match cli.command {
        Command::Serve { .. } => commands::serve::run(&config).await,
        Command::Topics(cmd) => commands::topics::run(&config, cmd).await,
        Command::Schema(cmd) => commands::schema::run(&config, cmd).await,
        Command::Check => commands::check::run(&config).await,
        Command::Config => commands::show_config::run(&config),
        Command::Token { tenant, role, ttl } => commands::token::run(&config, &tenant, role, ttl),
        Command::Secrets(cli::SecretsCommand::NewKey { id }) => {
            println!("{}", aiq_secrets::Keyring::new_key_line(&id)?);
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Secrets(cli::SecretsCommand::RewrapDataKeys) => {
            commands::tenants::rewrap_data_keys(&config).await
        }
        Command::Sql {
            query,
            tenant,
            format,
        } => commands::sql::query(&config, &query, tenant, format).await,
        Command::Report {
            name,
            tenant,
            format,
        } => commands::sql::report(&config, name.as_deref(), tenant, format).await,
        Command::History(cli::HistoryCommand::Compact) => commands::sql::compact(&config).await,
        Command::DeadLetters(cmd) => commands::dead_letters::run(&config, cmd).await,
        Command::Tenants(cmd) => commands::tenants::run(&config, cmd).await,
        Command::Replay {
            predicate,
            tenant,
            mode,
            dry_run,
            max_per_second,
            no_wait,
        } => {
            let args = commands::replay::ReplayArgs {
                predicate,
                tenant,
                mode: aiq_ingest::replays::ReplayMode::parse(&mode)
                    .unwrap_or(aiq_ingest::replays::ReplayMode::Redrive),
                dry_run,
                max_per_second,
                wait: !no_wait,
            };
            commands::replay::run(&config, args).await
        }
        Command::Workflows(_) => unreachable!("handled before loading configuration"),
    }
}
