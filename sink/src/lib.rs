//! The sink stage: run history into ScyllaDB/Cassandra and Parquet.
//!
//! Built like every stage, from its settings: [`spawn`] takes [`SinkSettings`] (with
//! the Kafka settings, the topics, a session and a metrics registry) and returns the
//! stage "sink" as an `aiq_stage::StageHandle`, which consumes the events and audit
//! topics until stopped; [`store`] turns each event into CQL writes; [`parquet`] keeps
//! the warm tier of Parquet files.

pub mod metrics;
pub mod parquet;
pub mod settings;
pub mod stage;
pub mod store;

pub use settings::{RetentionSettings, SettingsError, SinkSettings};
pub use stage::{HISTORY_STORE, SinkError, spawn};
pub use store::{Store, StoreError};
