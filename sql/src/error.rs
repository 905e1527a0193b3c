//! [`SchemaError`]: what can go wrong reaching the store and applying its schema, from a
//! bad `[cql]` setting to an edited migration. Kept apart from `runner`, so that
//! `settings` can report a bad setting without importing the runner that uses it.

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cql setting `{field}`: {reason}")]
    Setting { field: &'static str, reason: String },
    #[error("cannot connect to CQL contact points {contact_points}: {source}")]
    Connect {
        contact_points: String,
        #[source]
        source: Box<scylla::errors::NewSessionError>,
    },
    #[error("migration {name}: statement failed: {source}\n  statement: {statement}")]
    Statement {
        name: String,
        statement: String,
        #[source]
        source: Box<scylla::errors::ExecutionError>,
    },
    #[error("reading applied migrations from {keyspace}.schema_migrations: {reason}")]
    Ledger { keyspace: String, reason: String },
    #[error(
        "migration {name} was edited after it was applied (recorded checksum {recorded}, now {now}); \
         add a new migration instead of changing an applied one"
    )]
    Edited {
        name: String,
        recorded: String,
        now: String,
    },
}
