//! `aiq schema apply|status`.

use std::process::ExitCode;

use aiq_sql::{MIGRATIONS, applied_migrations, apply_schema, connect};

use crate::cli::SchemaCommand;
use crate::config::Config;

pub async fn run(config: &Config, cmd: SchemaCommand) -> anyhow::Result<ExitCode> {
    let session = connect(&config.cql).await?;
    match cmd {
        SchemaCommand::Apply => {
            let applied = apply_schema(&session, &config.cql, chrono::Utc::now()).await?;
            for m in &applied {
                println!("applied {}", m.name);
            }
            println!(
                "keyspace {}: {} migration(s) applied now, {} in all",
                config.cql.keyspace,
                applied.len(),
                MIGRATIONS.len()
            );
        }
        SchemaCommand::Status => {
            // A keyspace that does not exist yet simply has nothing applied.
            let ledger = applied_migrations(&session, &config.cql.keyspace)
                .await
                .unwrap_or_default();
            for m in MIGRATIONS {
                match ledger.get(&m.version) {
                    Some(rec) => println!(
                        "{:<28} applied {}",
                        m.name,
                        rec.applied_at.map(|t| t.to_rfc3339()).unwrap_or_default()
                    ),
                    None => println!("{:<28} pending", m.name),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
