//! The tenants follower: the compacted tenants topic read into one in-memory
//! [`Directory`] per process.
//!
//! Ingest (authentication, trigger rates, suspension), the orchestrator (quotas, cron,
//! admission), the worker (allowed connectors) and the sink (retention) all read the
//! same directory, so a plan change or a suspension published once takes effect in every
//! process as soon as its follower reads it, without a restart. [`spawn`] returns
//! [`Tenants`], the directory and the [`Tail`] that feeds it, whose
//! [`handle`](Tenants::handle) is the stage "tenants".

mod directory;

use std::sync::Arc;

use aiq_kafka::tail::tail_topic_named;
use aiq_kafka::{KafkaError, KafkaSettings, Tail};
use aiq_stage::StageHandle;
use aiq_topics::TopicKind;

pub use directory::Directory;

/// The stage's name.
pub const STAGE: &str = "tenants";

/// The followed directory. The follower runs while `tail` (or a handle taken from it)
/// lives.
pub struct Tenants {
    pub directory: Arc<Directory>,
    /// `tail.watch()` turns true once the topic has been read to the end it had at
    /// start; `tail.sync()` reads it to its present end on demand.
    pub tail: Tail,
}

impl Tenants {
    /// The follower's stage.
    pub fn handle(&self) -> StageHandle {
        self.tail.handle()
    }
}

/// Starts following `kafka`'s tenants topic into a new directory. Resolves once the
/// follower runs, not once it has caught up: callers that must know every tenant wait
/// on `tail.watch()`.
pub async fn spawn(kafka: &KafkaSettings) -> Result<Tenants, KafkaError> {
    let directory = Arc::new(Directory::default());
    let feed = Arc::clone(&directory);
    let topic = kafka.topics().name(TopicKind::Tenants).to_owned();
    let tail = tail_topic_named(STAGE, kafka, &topic, move |r| {
        // One bad record must not hide the tenants after it.
        if let Err(e) = feed.apply(r.key, r.payload) {
            tracing::error!(partition = r.partition, offset = r.offset, error = %e, "skipping a tenant record");
        }
    })
    .await?;
    Ok(Tenants { directory, tail })
}
