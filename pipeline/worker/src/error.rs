//! What can keep the worker stage from starting.

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("Kafka: {op}: {source}")]
    Kafka {
        op: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

/// Names the Kafka call that failed.
pub(crate) fn kafka(op: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> WorkerError {
    move |source| WorkerError::Kafka { op, source }
}
