//! The tenant's audit trail from the `audit` table, newest first.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::walk::{Page, Positioned, Resolved, Walk};
use super::{HistoryError, HistoryStore, Position, Window};

pub(super) fn list_cql(ks: &str) -> String {
    format!(
        "SELECT at, event_id, actor, action, subject, detail, actor_tenant, request_id, \
         outcome FROM {ks}.audit \
         WHERE tenant = ? AND day = ? AND at >= ? AND at <= ?"
    )
}

/// Who changed what, and when.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub subject: Option<String>,
    /// What changed, as the action records it (an object, or null when the action has
    /// nothing to add).
    #[schema(value_type = Value)]
    pub detail: Value,
    /// The actor's own tenant, when it acted for this one (a platform admin).
    pub actor_tenant: Option<String>,
    pub request_id: Option<String>,
    /// An HTTP status, or `ok`.
    pub outcome: Option<String>,
}

pub(super) type AuditRow = (
    DateTime<Utc>,
    Uuid,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

pub(super) fn entry(row: AuditRow) -> AuditEntry {
    let (at, id, actor, action, subject, detail, actor_tenant, request_id, outcome) = row;
    AuditEntry {
        id,
        at,
        actor,
        action,
        subject,
        detail: detail
            .map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)))
            .unwrap_or(Value::Null),
        actor_tenant,
        request_id,
        outcome,
    }
}

impl Positioned for AuditEntry {
    fn position(&self) -> Position {
        Position {
            day: self.at.date_naive(),
            at: self.at,
            id: self.id,
        }
    }
}

impl HistoryStore {
    /// The tenant's audit events in `window`, newest first, after `after`.
    pub async fn list_audit(
        &self,
        tenant: &str,
        window: Window,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Page<AuditEntry>, HistoryError> {
        let walk = Walk {
            op: "listing audit events",
            statement: &self.st.audit_of_day,
            window,
            after,
            limit,
            budget: self.budget,
            sized_to_page: true,
        };
        let bind = |d: NaiveDate, f, t| (tenant, d, f, t);
        let as_is = |items| std::future::ready(Ok(Resolved { items, reads: 0 }));
        self.walk(walk, bind, entry, as_is).await
    }
}
