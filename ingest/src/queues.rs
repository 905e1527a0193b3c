//! Which tenants' queues of waiting runs are full, as the orchestrators announce them on
//! the queue-state topic (compacted, keyed by tenant). Ingest refuses a trigger of such
//! a tenant with 429 instead of accepting a run the orchestrator could only set aside.
//!
//! The view lags the orchestrator by the time a record takes to be committed and read
//! (milliseconds): runs accepted in that moment use the orchestrator's headroom for
//! runs ingest accepted (a tenth of `max_queued_runs`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aiq_kafka::tail::tail_topic_named;
use aiq_kafka::{KafkaError, KafkaSettings, Tail};
use aiq_topics::{QueueState, TenantId, TopicKind};

/// The follower's stage name.
pub const STAGE: &str = "queue-state";

/// The full queues; empty (nothing refused) until the follower has read something. A
/// clone shares the view.
#[derive(Clone, Default)]
pub struct QueueGate {
    full: Arc<RwLock<HashMap<TenantId, QueueState>>>,
    /// Keeps the follower running as long as a gate that reads from it lives.
    _tail: Option<Arc<Tail>>,
}

impl QueueGate {
    /// The tenant's queue state if it is full.
    pub fn full(&self, tenant: &TenantId) -> Option<QueueState> {
        self.full
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .cloned()
    }

    fn apply(&self, payload: Option<&[u8]>, key: Option<&[u8]>) {
        let mut full = self.full.write().unwrap_or_else(|p| p.into_inner());
        match payload.map(serde_json::from_slice::<QueueState>) {
            Some(Ok(q)) if q.full => {
                full.insert(q.tenant.clone(), q);
            }
            Some(Ok(q)) => {
                full.remove(&q.tenant);
            }
            Some(Err(e)) => tracing::error!(error = %e, "skipping a queue-state record"),
            None => {
                let tenant = key.and_then(|k| TenantId::new(String::from_utf8_lossy(k)).ok());
                if let Some(t) = tenant {
                    full.remove(&t);
                }
            }
        }
    }
}

/// Starts following `kafka`'s queue-state topic.
pub async fn follow(kafka: &KafkaSettings) -> Result<QueueGate, KafkaError> {
    let gate = QueueGate::default();
    let feed = gate.clone();
    let topic = kafka.topics().name(TopicKind::QueueState).to_owned();
    let tail =
        tail_topic_named(STAGE, kafka, &topic, move |r| feed.apply(r.payload, r.key)).await?;
    Ok(QueueGate {
        _tail: Some(Arc::new(tail)),
        ..gate
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::Utc;

    use super::*;

    #[test]
    fn full_then_free_then_tombstoned() {
        let gate = QueueGate::default();
        let acme = TenantId::new("acme").unwrap();
        let state = |full| QueueState {
            tenant: acme.clone(),
            full,
            queued: 10,
            max: 10,
            at: Utc::now(),
        };
        gate.apply(Some(&serde_json::to_vec(&state(true)).unwrap()), None);
        assert_eq!(gate.full(&acme).map(|q| q.max), Some(10));
        gate.apply(Some(&serde_json::to_vec(&state(false)).unwrap()), None);
        assert!(gate.full(&acme).is_none());
        gate.apply(Some(&serde_json::to_vec(&state(true)).unwrap()), None);
        gate.apply(None, Some(b"acme"));
        assert!(gate.full(&acme).is_none());
        gate.apply(Some(b"not json"), None);
        assert!(gate.full(&acme).is_none());
    }
}
