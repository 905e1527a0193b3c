//! The stateful orchestrator stage: consumes triggers, signals and step results of the
//! partitions it owns, advances runs with the engine core, and writes tasks, events,
//! dead letters and its own state changes in one Kafka transaction per batch.

pub mod changelog;
pub mod core;
pub mod settings;

pub use self::core::{
    ChangelogWrite, Core, DeadLetter, InputTopic, NeedDefinitions, Output, Record,
};
pub use settings::OrchestratorSettings;

pub mod metrics;
mod restore;
mod runner;

pub use metrics::OrchestratorMetrics;
pub use runner::Orchestrator;

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("Kafka: {op}: {source}")]
    Kafka {
        op: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error(
        "restoring changelog partitions {partitions:?} did not reach their end within {waited:?} \
         (a crashed instance's transaction stays open until the broker times it out): {detail}"
    )]
    RestoreTimeout {
        partitions: Vec<i32>,
        waited: Duration,
        detail: String,
    },
    #[error("the consumer has no group metadata to commit offsets with")]
    NoGroupMetadata,
    #[error("cannot start the orchestrator thread: {0}")]
    Thread(std::io::Error),
    #[error("the orchestrator thread panicked")]
    Panicked,
}

impl OrchestratorError {
    pub(crate) fn kafka(op: &'static str, source: rdkafka::error::KafkaError) -> Self {
        Self::Kafka { op, source }
    }

    /// Whether aborting the transaction and redoing the batch can recover: anything but
    /// a fatal client error (for instance being fenced by a newer instance).
    pub fn is_abortable(&self) -> bool {
        match self {
            Self::Kafka {
                source: rdkafka::error::KafkaError::Transaction(e),
                ..
            } => !e.is_fatal(),
            Self::Kafka { .. } => true,
            _ => false,
        }
    }
}
