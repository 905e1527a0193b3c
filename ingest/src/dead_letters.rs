//! Acting on dead letters: replaying one to the topic it came from, once, or marking it
//! resolved. Both change the letter's `state` with a lightweight transaction, so two
//! callers racing for one letter cannot both win.
//!
//! A replay first claims the letter (`open` → `replaying`, with a fresh claim id), then
//! publishes the record and waits for the brokers' acknowledgement, then marks it
//! `replayed`. Should the publish fail, the claim is given back (`open` again). Should
//! the process die between claim and mark, the letter stays `replaying`; after
//! [`STALE_CLAIM`] a new replay may take it over. That replay may repeat a publish that
//! did happen, which is why a replayed trigger always carries its run id (the one the
//! orchestrator would have derived from the record's first place in the log): the
//! orchestrator starts a known run id only once.

use std::sync::Arc;
use std::time::Duration;

use aiq_topics::{TopicKind, TriggerEvent};
use chrono::{DateTime, Utc};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use uuid::Uuid;

use crate::history::{HistoryError, HistoryStore, Letter, LetterState};
use crate::publisher::{PublishError, Publisher, RawRecord};

/// How long a claim may stand before another replay may take the letter over.
pub const STALE_CLAIM: Duration = Duration::from_secs(60);

/// The header a replayed record carries: the id of the letter it was replayed from.
pub const REPLAY_OF: &str = "aiq-replay-of";

#[derive(Debug, thiserror::Error)]
pub enum LetterError {
    #[error("no dead letter {0} (it may have expired)")]
    NotFound(Uuid),
    #[error(
        "dead letter {id} was already {state} at {at:?} by {by:?}; a letter is replayed or resolved once"
    )]
    Done {
        id: Uuid,
        state: &'static str,
        at: Option<DateTime<Utc>>,
        by: Option<String>,
    },
    #[error("dead letter {0} is being replayed right now; try again in a minute if it stays so")]
    Busy(Uuid),
    #[error("dead letter {id} cannot be replayed: {reason}")]
    NotReplayable { id: Uuid, reason: String },
    #[error(transparent)]
    Store(#[from] HistoryError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

struct Statements {
    claim_open: PreparedStatement,
    claim_stale: PreparedStatement,
    mark_replayed: PreparedStatement,
    release: PreparedStatement,
    resolve: PreparedStatement,
}

/// The dead letters' state transitions, statements prepared once.
#[derive(Clone)]
pub struct DeadLetters {
    session: Arc<Session>,
    st: Arc<Statements>,
    history: HistoryStore,
    publisher: Publisher,
}

/// Where a replay wrote the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub id: Uuid,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl DeadLetters {
    pub async fn new(
        session: Arc<Session>,
        keyspace: &str,
        history: HistoryStore,
        publisher: Publisher,
    ) -> Result<Self, HistoryError> {
        let ks = keyspace;
        let prepare = |cql: String| {
            let session = Arc::clone(&session);
            async move {
                session
                    .prepare(cql)
                    .await
                    .map_err(|source| HistoryError::Prepare {
                        op: "changing a dead letter's state",
                        source: Box::new(source),
                    })
            }
        };
        let set = format!("UPDATE {ks}.dead_letters SET");
        let st = Statements {
            claim_open: prepare(format!(
                "{set} state = 'replaying', state_at = ?, state_by = ?, claim = ? \
                 WHERE id = ? IF state = null"
            ))
            .await?,
            claim_stale: prepare(format!(
                "{set} state = 'replaying', state_at = ?, state_by = ?, claim = ? \
                 WHERE id = ? IF state = 'replaying' AND claim = ?"
            ))
            .await?,
            mark_replayed: prepare(format!(
                "{set} state = 'replayed', state_at = ?, replayed_offset = ? \
                 WHERE id = ? IF claim = ?"
            ))
            .await?,
            release: prepare(format!(
                "{set} state = null, state_at = null, state_by = null, claim = null \
                 WHERE id = ? IF claim = ?"
            ))
            .await?,
            resolve: prepare(format!(
                "{set} state = 'resolved', state_at = ?, state_by = ? WHERE id = ? IF state = null"
            ))
            .await?,
        };
        Ok(Self {
            session,
            st: Arc::new(st),
            history,
            publisher,
        })
    }

    pub fn history(&self) -> &HistoryStore {
        &self.history
    }

    /// The letter, if it exists and `visible` to the caller (its tenant, or any for a
    /// platform admin); otherwise [`LetterError::NotFound`], so that a tenant cannot
    /// learn that another's letter exists.
    pub async fn get(
        &self,
        id: Uuid,
        visible: impl Fn(Option<&str>) -> bool,
    ) -> Result<Letter, LetterError> {
        match self.history.dead_letter(id).await? {
            Some(l) if visible(l.tenant.as_deref()) => Ok(l),
            _ => Err(LetterError::NotFound(id)),
        }
    }

    /// Republishes the letter's original record to its original topic and partition,
    /// once: a letter already replayed or resolved is refused.
    pub async fn replay(
        &self,
        id: Uuid,
        by: &str,
        visible: impl Fn(Option<&str>) -> bool,
    ) -> Result<Replayed, LetterError> {
        let letter = self.get(id, visible).await?;
        let record = replay_record(&letter, self.publisher.topics())?;
        let claim = Uuid::new_v4();
        let now = Utc::now();
        let taken = match letter.state {
            LetterState::Open => self.lwt(&self.st.claim_open, (now, by, claim, id)).await?,
            LetterState::Replaying
                if letter.state_at.is_none_or(|at| {
                    now - at > chrono::Duration::from_std(STALE_CLAIM).unwrap_or_default()
                }) =>
            {
                self.lwt(&self.st.claim_stale, (now, by, claim, id, letter.claim))
                    .await?
            }
            LetterState::Replaying => false,
            LetterState::Replayed | LetterState::Resolved => false,
        };
        if !taken {
            return Err(self.refusal(id).await);
        }
        let delivery = match self.publisher.send_raw(&record).await {
            Ok(d) => d,
            Err(e) => {
                if let Err(release) = self.lwt(&self.st.release, (id, claim)).await {
                    tracing::warn!(%id, error = %release, "replay claim not released; it goes stale");
                }
                return Err(e.into());
            }
        };
        // Published: the letter must not be replayed again. Should this write fail, the
        // claim stays and goes stale; a later replay repeats a publish the run id makes
        // harmless.
        self.lwt(
            &self.st.mark_replayed,
            (Utc::now(), delivery.offset, id, claim),
        )
        .await?;
        Ok(Replayed {
            id,
            topic: record.topic,
            partition: delivery.partition,
            offset: delivery.offset,
        })
    }

    /// Marks the letter resolved (nothing to replay); refused once replayed or resolved.
    pub async fn resolve(
        &self,
        id: Uuid,
        by: &str,
        visible: impl Fn(Option<&str>) -> bool,
    ) -> Result<(), LetterError> {
        let letter = self.get(id, visible).await?;
        if letter.state == LetterState::Open
            && self.lwt(&self.st.resolve, (Utc::now(), by, id)).await?
        {
            return Ok(());
        }
        Err(self.refusal(id).await)
    }

    /// Why a transition was refused, from the letter as it is now.
    async fn refusal(&self, id: Uuid) -> LetterError {
        match self.history.dead_letter(id).await {
            Ok(Some(l)) => match l.state {
                LetterState::Replayed | LetterState::Resolved => LetterError::Done {
                    id,
                    state: l.state.as_str(),
                    at: l.state_at,
                    by: l.state_by,
                },
                LetterState::Replaying | LetterState::Open => LetterError::Busy(id),
            },
            Ok(None) => LetterError::NotFound(id),
            Err(e) => e.into(),
        }
    }

    /// Runs a conditional update; true when it applied.
    async fn lwt(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<bool, HistoryError> {
        let op = "changing a dead letter's state";
        let result = self
            .session
            .execute_unpaged(statement, values)
            .await
            .map_err(|source| HistoryError::Execute {
                op,
                source: Box::new(source),
            })?;
        crate::lwt::applied(result).map_err(|reason| HistoryError::Result { op, reason })
    }
}

/// The record a replay publishes: the original key, value and headers (plus
/// [`REPLAY_OF`]) to the original topic and partition. Only the pipeline's own input
/// topics take replays. A trigger without a run id gets the one the orchestrator would
/// have derived from its first place in the log, so a repeated replay starts no second
/// run.
pub fn replay_record(
    letter: &Letter,
    topics: &aiq_topics::TopicSet,
) -> Result<RawRecord, LetterError> {
    let refuse = |reason: String| LetterError::NotReplayable {
        id: letter.id,
        reason,
    };
    let kind = TopicKind::ALL
        .into_iter()
        .find(|k| topics.name(*k) == letter.topic)
        .ok_or_else(|| {
            refuse(format!(
                "its topic {:?} is not one of this deployment's",
                letter.topic
            ))
        })?;
    if !matches!(
        kind,
        TopicKind::Triggers
            | TopicKind::Signals
            | TopicKind::Results
            | TopicKind::Tasks
            | TopicKind::Events
            | TopicKind::Audit
    ) {
        return Err(refuse(format!(
            "records of the {} topic are not replayed",
            kind.suffix()
        )));
    }
    let Some(value) = letter.value.clone() else {
        return Err(refuse(
            "its record's value was not kept (larger than the dead-letter topic takes)".into(),
        ));
    };
    let value = match (kind, letter.partition, letter.offset) {
        (TopicKind::Triggers, Some(p), Some(o)) => with_run_id(value, p, o),
        _ => value,
    };
    let mut headers = letter.headers.clone();
    headers.push((
        REPLAY_OF.to_owned(),
        Some(letter.id.to_string().into_bytes()),
    ));
    Ok(RawRecord {
        topic: letter.topic.clone(),
        partition: letter.partition,
        key: letter.key.clone(),
        value,
        headers,
    })
}

/// A trigger's bytes with its run id set; anything else unchanged.
fn with_run_id(value: Vec<u8>, partition: i32, offset: i64) -> Vec<u8> {
    match serde_json::from_slice::<TriggerEvent>(&value) {
        Ok(mut t) if t.run_id.is_none() => {
            t.run_id = Some(t.run_id(partition, offset));
            t.encode()
        }
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use aiq_topics::{TenantId, TopicSet, TriggerSource, WorkflowId};

    use super::*;

    fn letter(topic: &str, value: Option<Vec<u8>>) -> Letter {
        Letter {
            id: Uuid::new_v4(),
            tenant: Some("acme".into()),
            at: Utc::now(),
            kind: "unknown_workflow".into(),
            stage: "orchestrator".into(),
            reason: "not registered".into(),
            topic: topic.into(),
            partition: Some(3),
            offset: Some(17),
            key: Some(b"acme".to_vec()),
            value,
            headers: vec![("traceparent".into(), Some(b"00-x".to_vec()))],
            state: LetterState::Open,
            state_at: None,
            state_by: None,
            claim: None,
            replayed_offset: None,
        }
    }

    fn trigger() -> TriggerEvent {
        TriggerEvent::new(
            TenantId::new("acme").unwrap(),
            WorkflowId::new("later").unwrap(),
            TriggerSource::Kafka,
            serde_json::json!({"n": 1}),
        )
    }

    #[test]
    fn a_trigger_is_replayed_with_the_run_id_its_first_place_gave_it() {
        let topics = TopicSet::new("aiq.", 4, 4);
        let t = trigger();
        let l = letter("aiq.triggers", Some(t.encode()));
        let r = replay_record(&l, &topics).unwrap();
        assert_eq!((r.topic.as_str(), r.partition), ("aiq.triggers", Some(3)));
        assert_eq!(r.key.as_deref(), Some(&b"acme"[..]));
        let replayed: TriggerEvent = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(replayed.run_id, Some(t.run_id(3, 17)));
        assert_eq!(replayed.input, t.input);
        assert_eq!(r.headers[0].0, "traceparent");
        assert_eq!(r.headers[1].0, REPLAY_OF);
        // A trigger that has its run id keeps its bytes.
        let mut named = trigger();
        named.run_id = Some(t.run_id(9, 9));
        let l = letter("aiq.triggers", Some(named.encode()));
        assert_eq!(replay_record(&l, &topics).unwrap().value, named.encode());
    }

    #[test]
    fn only_the_pipelines_topics_take_replays_and_only_with_a_value() {
        let topics = TopicSet::new("aiq.", 4, 4);
        for (topic, value) in [
            ("elsewhere.triggers", Some(b"{}".to_vec())),
            ("aiq.dead-letters", Some(b"{}".to_vec())),
            ("aiq.definitions", Some(b"{}".to_vec())),
            ("aiq.triggers", None),
        ] {
            let e = replay_record(&letter(topic, value), &topics).unwrap_err();
            assert!(
                matches!(e, LetterError::NotReplayable { .. }),
                "{topic}: {e}"
            );
        }
        let raw = replay_record(&letter("aiq.results", Some(b"not json".to_vec())), &topics);
        assert_eq!(raw.unwrap().value, b"not json");
    }
}
