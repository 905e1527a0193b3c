//! The sink stage: run history into ScyllaDB/Cassandra and Parquet (issue 7).
//!
//! [`Sink`] consumes the events and audit topics; [`store`] turns each event into CQL
//! writes; [`parquet`] keeps the warm tier of Parquet files.

pub mod metrics;
pub mod parquet;
pub mod settings;
pub mod stage;
pub mod store;

pub use settings::{RetentionSettings, SettingsError, SinkSettings};
pub use stage::{Sink, SinkError};
pub use store::{Store, StoreError};
