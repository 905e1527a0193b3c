//! What can stop a load run, with the context needed to act on it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("setting {name}: {reason}")]
    Setting { name: &'static str, reason: String },
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("registering workflow {workflow} for tenant {tenant}: HTTP {status}: {body}")]
    Register {
        tenant: String,
        workflow: String,
        status: u16,
        body: String,
    },
    #[error("disabling workflow {workflow} of tenant {tenant}: HTTP {status}: {body}")]
    Disable {
        tenant: String,
        workflow: String,
        status: u16,
        body: String,
    },
    #[error("reading workflow document {path}: {source}")]
    Document {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Kafka, {context}: {source}")]
    Kafka {
        context: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("Kafka, {0}")]
    Broker(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plotting {path}: {reason}")]
    Plot { path: PathBuf, reason: String },
    #[error("a background task ended abnormally: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl LoadError {
    pub(crate) fn kafka(
        context: impl Into<String>,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let context = context.into();
        move |source| LoadError::Kafka { context, source }
    }
}
