//! Audit events for configuration changes, published to the audit topic (key = tenant)
//! once the change itself has succeeded. The sink stores them in the `audit` table.

use aiq_topics::{AuditAction, AuditEvent, TopicKind};
use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use crate::caller::Caller;
use crate::publisher::{Delivery, PublishError, Publisher};

/// The event for `action` on `subject` by `caller`. `detail` must never hold a secret
/// value: callers pass names, ids and versions only.
pub fn event(caller: &Caller, action: AuditAction, subject: &str, detail: Value) -> AuditEvent {
    AuditEvent {
        id: Uuid::new_v4(),
        tenant: caller.tenant.clone(),
        at: Utc::now(),
        actor: caller.subject.clone(),
        action,
        subject: subject.to_owned(),
        detail,
        actor_tenant: caller.own_tenant.clone(),
        request_id: None,
        outcome: None,
    }
}

pub async fn publish(publisher: &Publisher, event: &AuditEvent) -> Result<Delivery, PublishError> {
    publisher
        .send(TopicKind::Audit, event.tenant.as_str(), &event.encode())
        .await
}

/// Publishes the event for a change that has already been made. The change stands
/// whether or not the event is acknowledged (answering 503 would invite a retry that
/// repeats it), so a failure is logged loudly rather than returned.
pub async fn record(
    publisher: &Publisher,
    caller: &Caller,
    action: AuditAction,
    subject: &str,
    detail: Value,
) {
    let e = event(caller, action, subject, detail);
    if let Err(err) = publish(publisher, &e).await {
        tracing::error!(
            tenant = %e.tenant,
            action = e.action.as_str(),
            subject = %e.subject,
            event_id = %e.id,
            error = %err,
            "audit event not published; the change was made"
        );
    }
}
