//! Applies the migrations not yet applied, and records each one it applies.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

pub use crate::error::SchemaError;
use crate::migrations::{MIGRATIONS, Migration};
use crate::settings::CqlSettings;

/// One row of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i32,
    pub name: String,
    pub checksum: String,
    pub applied_at: Option<DateTime<Utc>>,
}

pub async fn connect(settings: &CqlSettings) -> Result<Session, SchemaError> {
    settings.validate()?;
    let mut builder = SessionBuilder::new();
    for node in settings.nodes() {
        builder = builder.known_node(node);
    }
    if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
        builder = builder.user(user, password);
    }
    builder
        .build()
        .await
        .map_err(|source| SchemaError::Connect {
            contact_points: settings.contact_points.clone(),
            source: Box::new(source),
        })
}

async fn run_statements(
    session: &Session,
    settings: &CqlSettings,
    m: &Migration,
) -> Result<(), SchemaError> {
    for statement in m.statements(&settings.keyspace, &settings.replication()) {
        session
            .query_unpaged(statement.as_str(), ())
            .await
            .map_err(|source| SchemaError::Statement {
                name: m.name.to_owned(),
                statement: statement.clone(),
                source: Box::new(source),
            })?;
    }
    Ok(())
}

/// The ledger, by version. Empty when the keyspace is new.
pub async fn applied_migrations(
    session: &Session,
    keyspace: &str,
) -> Result<BTreeMap<i32, AppliedMigration>, SchemaError> {
    let ledger = |reason: String| SchemaError::Ledger {
        keyspace: keyspace.to_owned(),
        reason,
    };
    let rows = session
        .query_unpaged(
            format!("SELECT version, name, checksum, applied_at FROM {keyspace}.schema_migrations"),
            (),
        )
        .await
        .map_err(|e| ledger(e.to_string()))?
        .into_rows_result()
        .map_err(|e| ledger(e.to_string()))?;
    let mut out = BTreeMap::new();
    for row in rows
        .rows::<(i32, Option<String>, Option<String>, Option<DateTime<Utc>>)>()
        .map_err(|e| ledger(e.to_string()))?
    {
        let (version, name, checksum, applied_at) = row.map_err(|e| ledger(e.to_string()))?;
        out.insert(
            version,
            AppliedMigration {
                version,
                name: name.unwrap_or_default(),
                checksum: checksum.unwrap_or_default(),
                applied_at,
            },
        );
    }
    Ok(out)
}

/// Applies every migration not in the ledger, in order, and returns those it applied.
/// Safe to run again and from several processes: every statement is `IF NOT EXISTS`, and
/// the first migration, which creates the ledger itself, always runs first.
pub async fn apply_schema(
    session: &Session,
    settings: &CqlSettings,
    now: DateTime<Utc>,
) -> Result<Vec<&'static Migration>, SchemaError> {
    settings.validate()?;
    let ks = &settings.keyspace;
    let first = &MIGRATIONS[0];
    run_statements(session, settings, first).await?;
    let applied = applied_migrations(session, ks).await?;

    let mut done = Vec::new();
    for m in MIGRATIONS {
        if let Some(rec) = applied.get(&m.version) {
            if rec.checksum != m.checksum() {
                return Err(SchemaError::Edited {
                    name: m.name.to_owned(),
                    recorded: rec.checksum.clone(),
                    now: m.checksum(),
                });
            }
            continue;
        }
        if m.version != first.version {
            run_statements(session, settings, m).await?;
        }
        let record = format!(
            "INSERT INTO {ks}.schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)"
        );
        session
            .query_unpaged(record.as_str(), (m.version, m.name, m.checksum(), now))
            .await
            .map_err(|source| SchemaError::Statement {
                name: m.name.to_owned(),
                statement: record.clone(),
                source: Box::new(source),
            })?;
        tracing::info!(migration = m.name, "applied");
        done.push(m);
    }
    Ok(done)
}
