//! What can end the orchestrator stage.

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
