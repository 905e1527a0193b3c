//! The orchestrator stage: stateful and exactly once. It owns the tenants of the
//! partitions it is assigned (triggers, signals, results and its changelog are
//! co-partitioned by tenant), advances their runs with the engine, and writes the tasks,
//! events, dead letters and triggers a batch of inputs caused, the changelog entries it
//! changed and the input offsets it consumed, in one Kafka transaction per batch.
//!
//! Two layers, so that the logic is tested without Kafka:
//!
//! - [`Core`] (`core/`): the state of each owned partition and every decision — runs in
//!   flight and finished, quotas and the fair queue, the line of tasks waiting for an
//!   in-flight slot, timers, cron cursors, dead letters. No Kafka and no clock: `now` is
//!   an argument.
//! - The runner (`runner/`): one thread per instance, since the transaction calls block.
//!   A read-committed group consumer and a transactional producer around the core; it
//!   restores a partition's state from the changelog (`restore.rs`) before its first
//!   input and drops it on revocation.
//!
//! [`spawn`] starts an instance in the stage frame of `aiq-stage` and returns its
//! [`StageHandle`](aiq_stage::StageHandle), named "orchestrator". Stopping it commits
//! the open batch and leaves the consumer group.

pub mod changelog;
pub mod core;
mod error;
pub mod metrics;
mod restore;
mod runner;
pub mod settings;

// `metrics.rs` reaches the shared lag gauge as `crate::lag`, as it did when the gauge
// lived in this crate.
use aiq_kafka::lag;

pub use self::core::{
    ChangelogWrite, Core, DeadLetter, InputTopic, NeedDefinitions, Output, PartitionRestore, Record,
};
pub use error::OrchestratorError;
pub use metrics::OrchestratorMetrics;
pub use runner::spawn;
pub use settings::{OrchestratorSettings, TenantOverrides, TenantQuota};
