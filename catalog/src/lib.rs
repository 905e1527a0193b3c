//! The definitions follower: every accepted workflow version, read from the compacted
//! definitions topic into one in-memory [`Catalog`] per process.
//!
//! Ingest (validating triggers, answering reads) and the orchestrator (starting runs)
//! share the catalog, so neither asks a database for a definition. Like every stage it
//! is started by a `spawn` function: [`spawn`] returns [`Definitions`], the catalog and
//! the [`Tail`] that feeds it, whose [`handle`](Definitions::handle) is the stage
//! "definitions" that a process waits on and stops with the others.

use std::sync::Arc;

use aiq_kafka::tail::tail_topic_named;
use aiq_kafka::{KafkaError, KafkaSettings, Tail};
use aiq_stage::StageHandle;
use aiq_topics::TopicKind;

pub use aiq_engine::catalog::{Catalog, CatalogError, Version};

/// The stage's name.
pub const STAGE: &str = "definitions";

/// The followed catalog. The follower runs while `tail` (or a handle taken from it)
/// lives.
pub struct Definitions {
    pub catalog: Arc<Catalog>,
    /// `tail.watch()` turns true once the topic has been read to the end it had at
    /// start; `tail.sync()` reads it to its present end on demand.
    pub tail: Tail,
}

impl Definitions {
    /// The follower's stage.
    pub fn handle(&self) -> StageHandle {
        self.tail.handle()
    }
}

/// Starts following `kafka`'s definitions topic into a new catalog. Resolves once the
/// follower runs, not once it has caught up: callers that must know every definition
/// wait on `tail.watch()`.
pub async fn spawn(kafka: &KafkaSettings) -> Result<Definitions, KafkaError> {
    let catalog = Arc::new(Catalog::default());
    let feed = Arc::clone(&catalog);
    let topic = kafka.topics().name(TopicKind::Definitions).to_owned();
    let tail = tail_topic_named(STAGE, kafka, &topic, move |r| {
        // One bad record must not hide the definitions after it.
        if let Some(payload) = r.payload
            && let Err(e) = feed.apply_bytes(payload)
        {
            tracing::error!(partition = r.partition, offset = r.offset, error = %e, "skipping a definition record");
        }
    })
    .await?;
    Ok(Definitions { catalog, tail })
}
