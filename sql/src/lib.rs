//! The store's schema as ordered CQL migrations, and the runner that applies them.
//!
//! Only CQL that both ScyllaDB and Apache Cassandra accept goes into `migrations/`.

pub mod migrations;
pub mod runner;
pub mod settings;

pub use migrations::{MIGRATIONS, Migration};
pub use runner::{AppliedMigration, SchemaError, applied_migrations, apply_schema, connect};
pub use settings::CqlSettings;
