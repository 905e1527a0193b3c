//! Dead letters as the sink indexed them: a tenant's (or, under `*`, every tenant's)
//! listing from `dead_letters_by_day`, newest first, each with its state read from its
//! row of `dead_letters`; and one letter whole, with its original record.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use serde::Serialize;
use tokio::task::JoinSet;
use utoipa::ToSchema;
use uuid::Uuid;

use super::walk::{Page, Positioned, Resolved, Walk};
use super::{HistoryError, HistoryStore, Position, Window};

/// The listing partition of every tenant's letters (not a valid tenant id).
pub const PLATFORM: &str = "*";

/// Reads of state checked at once while resolving a listed batch.
const STATES_IN_FLIGHT: usize = 32;

pub(super) fn list_cql(ks: &str) -> String {
    format!(
        "SELECT at, id, letter_tenant, kind, stage, reason, topic FROM {ks}.dead_letters_by_day \
         WHERE tenant = ? AND day = ? AND at >= ? AND at <= ?"
    )
}

pub(super) fn state_cql(ks: &str) -> String {
    format!("SELECT state FROM {ks}.dead_letters WHERE id = ?")
}

pub(super) fn letter_cql(ks: &str) -> String {
    format!(
        "SELECT tenant, at, kind, stage, reason, topic, source_partition, source_offset, \
         record_key, record_value, record_headers, state, state_at, state_by, claim, \
         replayed_offset FROM {ks}.dead_letters WHERE id = ?"
    )
}

/// Where a letter stands. A letter is replayed or resolved once, never both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LetterState {
    Open,
    /// A replay has claimed it and is publishing the record.
    Replaying,
    Replayed,
    Resolved,
}

impl LetterState {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("replaying") => LetterState::Replaying,
            Some("replayed") => LetterState::Replayed,
            Some("resolved") => LetterState::Resolved,
            _ => LetterState::Open,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LetterState::Open => "open",
            LetterState::Replaying => "replaying",
            LetterState::Replayed => "replayed",
            LetterState::Resolved => "resolved",
        }
    }
}

/// One listed letter.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LetterSummary {
    pub id: Uuid,
    /// When it was set aside.
    pub at: DateTime<Utc>,
    /// Null when the record named no tenant (only a platform admin sees those).
    pub tenant: Option<String>,
    /// Why: `unknown_workflow`, `invalid_input`, `undecodable`, ...
    pub kind: String,
    /// The stage that set it aside.
    pub stage: String,
    /// A sentence naming the field and the reason.
    pub reason: String,
    /// The topic it was read from (and a replay writes it back to).
    pub topic: String,
    pub state: LetterState,
}

impl Positioned for LetterSummary {
    fn position(&self) -> Position {
        Position {
            day: self.at.date_naive(),
            at: self.at,
            id: self.id,
        }
    }
}

type ListRow = (
    DateTime<Utc>,
    Uuid,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn summary(row: ListRow) -> LetterSummary {
    let (at, id, tenant, kind, stage, reason, topic) = row;
    LetterSummary {
        id,
        at,
        tenant,
        kind: kind.unwrap_or_default(),
        stage: stage.unwrap_or_default(),
        reason: reason.unwrap_or_default(),
        topic: topic.unwrap_or_default(),
        state: LetterState::Open,
    }
}

/// What a listing keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LetterFilter {
    pub kind: Option<String>,
    pub stage: Option<String>,
    pub state: Option<LetterState>,
}

impl LetterFilter {
    fn keeps(&self, l: &LetterSummary) -> bool {
        self.kind.as_ref().is_none_or(|k| *k == l.kind)
            && self.stage.as_ref().is_none_or(|s| *s == l.stage)
            && self.state.is_none_or(|s| s == l.state)
    }
}

/// One letter whole: where it came from, why, its state and the original record.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    pub id: Uuid,
    pub tenant: Option<String>,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub stage: String,
    pub reason: String,
    pub topic: String,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub state: LetterState,
    pub state_at: Option<DateTime<Utc>>,
    pub state_by: Option<String>,
    /// The replay that holds the letter while it is `replaying`.
    pub claim: Option<Uuid>,
    /// Where the replay wrote the record.
    pub replayed_offset: Option<i64>,
}

type LetterRow = (
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<i64>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<(String, Option<Vec<u8>>)>>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<Uuid>,
    Option<i64>,
);

async fn state_of(
    session: &Session,
    statement: &PreparedStatement,
    id: Uuid,
) -> Result<Option<LetterState>, HistoryError> {
    let op = "listing dead letters";
    let bad = |reason: String| HistoryError::Result { op, reason };
    let row = session
        .execute_unpaged(statement, (id,))
        .await
        .map_err(|source| HistoryError::Execute {
            op,
            source: Box::new(source),
        })?
        .into_rows_result()
        .map_err(|e| bad(e.to_string()))?
        .maybe_first_row::<(Option<String>,)>()
        .map_err(|e| bad(e.to_string()))?;
    Ok(row.map(|(s,)| LetterState::parse(s.as_deref())))
}

impl HistoryStore {
    /// Letters listed under `tenant` (or [`PLATFORM`]) in `window`, newest first,
    /// after `after`, that `filter` keeps.
    pub async fn list_dead_letters(
        &self,
        tenant: &str,
        window: Window,
        filter: &LetterFilter,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Page<LetterSummary>, HistoryError> {
        let walk = Walk {
            op: "listing dead letters",
            statement: &self.st.dead_letters_of_day,
            window,
            after,
            limit,
            budget: self.budget,
            sized_to_page: filter == &LetterFilter::default(),
        };
        let bind = |d: NaiveDate, f, t| (tenant, d, f, t);
        let resolve = |rows| self.with_states(rows, filter);
        self.walk(walk, bind, summary, resolve).await
    }

    /// Each listed letter with its state, those `filter` keeps; a letter whose row has
    /// expired is skipped.
    async fn with_states(
        &self,
        rows: Vec<LetterSummary>,
        filter: &LetterFilter,
    ) -> Result<Resolved<LetterSummary>, HistoryError> {
        let reads = rows.len();
        let mut states: Vec<Option<LetterState>> = vec![None; rows.len()];
        let mut running = JoinSet::new();
        let mut ids = rows.iter().map(|r| r.id).enumerate();
        loop {
            while running.len() < STATES_IN_FLIGHT {
                let Some((i, id)) = ids.next() else { break };
                let (session, st) = (Arc::clone(&self.session), Arc::clone(&self.st));
                running
                    .spawn(async move { (i, state_of(&session, &st.dead_letter_state, id).await) });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            let (i, state) = done.map_err(|e| HistoryError::Result {
                op: "listing dead letters",
                reason: format!("a read task failed: {e}"),
            })?;
            states[i] = state?;
        }
        let items = rows
            .into_iter()
            .zip(states)
            .filter_map(|(mut r, s)| {
                r.state = s?;
                filter.keeps(&r).then_some(r)
            })
            .collect();
        Ok(Resolved { items, reads })
    }

    /// One letter, whoever's it is; the caller checks the tenant.
    pub async fn dead_letter(&self, id: Uuid) -> Result<Option<Letter>, HistoryError> {
        let op = "reading a dead letter";
        let bad = |reason: String| HistoryError::Result { op, reason };
        let row = self
            .session
            .execute_unpaged(&self.st.dead_letter, (id,))
            .await
            .map_err(|source| HistoryError::Execute {
                op,
                source: Box::new(source),
            })?
            .into_rows_result()
            .map_err(|e| bad(e.to_string()))?
            .maybe_first_row::<LetterRow>()
            .map_err(|e| bad(e.to_string()))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (
            tenant,
            at,
            kind,
            stage,
            reason,
            topic,
            partition,
            offset,
            key,
            value,
            headers,
            state,
            state_at,
            state_by,
            claim,
            replayed_offset,
        ) = row;
        // A row the sink has not written (only a state, say) is no letter.
        let (Some(at), Some(topic)) = (at, topic) else {
            return Ok(None);
        };
        Ok(Some(Letter {
            id,
            tenant,
            at,
            kind: kind.unwrap_or_default(),
            stage: stage.unwrap_or_default(),
            reason: reason.unwrap_or_default(),
            topic,
            partition,
            offset,
            key,
            value,
            headers: headers.unwrap_or_default(),
            state: LetterState::parse(state.as_deref()),
            state_at,
            state_by,
            claim,
            replayed_offset,
        }))
    }
}
