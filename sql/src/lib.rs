//! The store's schema as ordered CQL migrations, and the runner that applies them.
//!
//! `layout` is the Parquet side: the tables, columns and folders the sink writes and the
//! analytics engine reads.
//!
//! Only CQL that both ScyllaDB and Apache Cassandra accept goes into `migrations/`.

mod error;
pub mod layout;
pub mod migrations;
pub mod runner;
pub mod settings;

pub use migrations::{MIGRATIONS, Migration};
pub use runner::{AppliedMigration, SchemaError, applied_migrations, apply_schema, connect};
pub use settings::CqlSettings;
