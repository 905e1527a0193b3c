//! One task record: run through its connector and its result written to the results
//! topic, or, when it does not decode, set aside on the dead-letter topic. Either way the
//! record's offset becomes committable only once Kafka has what was written, and its
//! slot is freed only then.

use std::sync::Arc;
use std::time::Instant;

use aiq_kafka::DeadLetterOrigin;
use aiq_topics::{
    DeadLetterKind, ErrorClass, TRACEPARENT, TaskMessage, TaskOutcome, TaskResult, TraceParent,
};
use chrono::{DateTime, Utc};
use rdkafka::message::{Header, Message, OwnedHeaders};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::commits::lock;
use crate::metrics::STAGE;
use crate::offsets::Ticket;
use crate::shared::{Sent, Shared};

/// The task a record holds, or why it holds none.
pub(crate) fn decode(msg: &impl Message) -> Result<TaskMessage, String> {
    match msg.payload().map(serde_json::from_slice) {
        Some(Ok(t)) => Ok(t),
        Some(Err(e)) => Err(format!("task is not valid: {e}")),
        None => Err("task record has no value".to_owned()),
    }
}

/// Runs `task` as a tokio task of its own, in a span that names it, so that every log
/// line of the task, connectors' included, says what it is.
pub(crate) fn start(
    shared: &Arc<Shared>,
    task: TaskMessage,
    ticket: Ticket,
    permit: OwnedSemaphorePermit,
) {
    let shared = Arc::clone(shared);
    shared.metrics.in_flight.inc();
    let span = tracing::error_span!(
        "task",
        tenant = %task.tenant,
        run_id = %task.run,
        step = %task.step,
        attempt = task.attempt,
        trace_id = %TraceParent::of_task(&task).trace_id,
    );
    tokio::spawn(run(shared, task, ticket, permit).instrument(span));
}

async fn run(
    shared: Arc<Shared>,
    mut task: TaskMessage,
    ticket: Ticket,
    permit: OwnedSemaphorePermit,
) {
    let started_at = Utc::now();
    let clock = Instant::now();
    let args = std::mem::take(&mut task.args);
    let unreadable = match shared.vault.open_field(&task.tenant, "args", args).await {
        Ok(args) => {
            task.args = args;
            None
        }
        Err(e) => Some(e),
    };
    let (outcome, opened) = match (unreadable, expiry(&task, started_at)) {
        // Not run: its arguments are gone with the tenant's keys (or were altered).
        (Some(e), _) => (
            TaskOutcome::Error {
                class: ErrorClass::Fatal,
                message: format!("the task's arguments do not open: {e}"),
            },
            Vec::new(),
        ),
        (None, Expiry::Expired(message)) => (
            TaskOutcome::Error {
                class: ErrorClass::Timeout,
                message,
            },
            Vec::new(),
        ),
        (None, Expiry::Live) => shared.connectors.call_opening(&task).await,
        (None, Expiry::Shortened(cut)) => shared.connectors.call_opening(&cut).await,
    };
    // Before the result: once the result is acknowledged the task is never done again,
    // so an open it made must already be on record.
    for name in opened {
        audit_secret(&shared, &task, &name, started_at).await;
    }
    let seconds = clock.elapsed().as_secs_f64();
    let result = TaskResult {
        tenant: task.tenant.clone(),
        run: task.run,
        step: task.step.clone(),
        attempt: task.attempt,
        outcome,
        started_at,
        finished_at: Utc::now(),
    };
    // Bounded on the clear output (what the limit promises); sealed after.
    let (mut result, mut payload) = bounded(result, shared.max_result_bytes);
    if let TaskOutcome::Error { message, .. } = &mut result.outcome {
        seal_message(&shared, &result.tenant, message).await;
    }
    if let TaskOutcome::Ok { output } = &mut result.outcome
        && let Err(e) = seal_output(&shared, &result.tenant, output).await
    {
        // The call was made: redoing it would do its effect twice, so the step
        // fails retryable only after the data-keys topic stayed away for minutes.
        tracing::error!(error = %e, "the task's output could not be sealed");
        result.outcome = TaskOutcome::Error {
            class: ErrorClass::Retryable,
            message: format!("the output could not be sealed: {e}"),
        };
    }
    // Sealing rewrote the result: its bytes are encoded again (once, and only then).
    if shared.vault.is_on() {
        payload = encode(&result);
    }
    shared.metrics.task_done(
        &result.tenant,
        &task.connector,
        outcome_label(&result.outcome),
        seconds,
        payload.len(),
    );
    shared.metrics.in_flight.dec();
    // At least once: only once Kafka has the result may the task's offset be committed.
    let sent = match send_result(&shared, &result, &payload).await {
        // Kafka will never take this result (its limit is below `max_result_bytes`):
        // the step fails, clean, rather than the send being retried forever.
        Sent::Refused(e) => {
            let size = payload.len();
            let refused = TaskResult {
                outcome: TaskOutcome::Error {
                    class: ErrorClass::TooLarge,
                    message: format!("Kafka refused the result of {size} bytes: {e}"),
                },
                ..result
            };
            let payload = encode(&refused);
            send_result(&shared, &refused, &payload).await
        }
        sent => sent,
    };
    match sent {
        Sent::Acked => lock(&shared.pending).finished(ticket),
        Sent::Abandoned => {}
        // Not even the short error is taken: redoing the task would meet the same
        // refusal, so the partition goes on and the orchestrator's backstop fails the
        // attempt.
        Sent::Refused(e) => {
            tracing::error!(error = %e, "result refused by Kafka; left to the backstop");
            lock(&shared.pending).finished(ticket);
        }
    }
    drop(permit);
}

/// Seals a task's output under its tenant's key, waiting out a data-keys topic that is
/// away (about five minutes at most). An erased tenant's output is emptied.
async fn seal_output(
    shared: &Shared,
    tenant: &aiq_topics::TenantId,
    output: &mut serde_json::Value,
) -> Result<(), aiq_vault::VaultError> {
    if !shared.vault.is_on() {
        return Ok(());
    }
    let mut backoff = std::time::Duration::from_millis(100);
    for _ in 0..60 {
        match shared.vault.seal_field(tenant, "output", output).await {
            Ok(sealed) => {
                *output = sealed;
                return Ok(());
            }
            Err(aiq_vault::VaultError::Erased { .. }) => {
                *output = serde_json::Value::Null;
                return Ok(());
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "sealing a task's output; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
    Err(aiq_vault::VaultError::Unavailable(
        std::time::Duration::from_secs(300),
    ))
}

/// Seals an error's message (it can quote a URL, a response, an argument). When the
/// tenant's key cannot be had, the message is replaced by one that says so: the class
/// still tells the orchestrator what to do, and nothing of the tenant leaks.
async fn seal_message(shared: &Shared, tenant: &aiq_topics::TenantId, message: &mut String) {
    if !shared.vault.is_on() {
        return;
    }
    let sealed = match shared.vault.ensure(tenant).await {
        Ok(()) => shared.vault.seal_text(tenant, "message", message),
        Err(e) => Err(e),
    };
    *message = match sealed {
        Ok(s) => s,
        Err(aiq_vault::VaultError::Erased { .. }) => String::new(),
        Err(e) => {
            tracing::warn!(error = %e, "an error message could not be sealed; replaced");
            format!("the error message could not be sealed ({e}); see the worker's log")
        }
    };
}

fn outcome_label(outcome: &TaskOutcome) -> &'static str {
    match outcome {
        TaskOutcome::Ok { .. } => "ok",
        TaskOutcome::Error { class, .. } => class.as_str(),
    }
}

fn encode(result: &TaskResult) -> Vec<u8> {
    // Only ids, strings and JSON values: serialising cannot fail.
    serde_json::to_vec(result).unwrap_or_default()
}

/// The result and its encoding; a result encoding to more than `max_bytes` becomes a
/// `too_large` error naming both sizes, which the run can handle like any failure.
fn bounded(result: TaskResult, max_bytes: usize) -> (TaskResult, Vec<u8>) {
    let payload = encode(&result);
    if payload.len() <= max_bytes {
        return (result, payload);
    }
    let size = payload.len();
    tracing::warn!(size, limit = max_bytes, "task result too large");
    let result = TaskResult {
        outcome: TaskOutcome::Error {
            class: ErrorClass::TooLarge,
            message: format!(
                "the result is {size} bytes, over the limit of {max_bytes} bytes \
                 (worker.max_result_bytes)"
            ),
        },
        ..result
    };
    let payload = encode(&result);
    (result, payload)
}

/// Whether a task may still run when a worker picks it up.
#[derive(Debug, PartialEq)]
enum Expiry {
    Live,
    /// Too late: the orchestrator's backstop has failed this attempt already.
    Expired(String),
    /// Runs with a timeout cut short, to end by the backstop: past it the outcome no
    /// longer counts.
    Shortened(TaskMessage),
}

fn expiry(task: &TaskMessage, now: DateTime<Utc>) -> Expiry {
    let Some(expires_at) = task.expires_at else {
        // Written before tasks carried an expiry: run as always.
        return Expiry::Live;
    };
    match u64::try_from(expires_at.signed_duration_since(now).num_milliseconds()) {
        Ok(left) if left > 0 && left < task.timeout_ms => Expiry::Shortened(TaskMessage {
            timeout_ms: left,
            ..task.clone()
        }),
        Ok(left) if left > 0 => Expiry::Live,
        _ => Expiry::Expired(format!(
            "expired before a worker picked it up (expired at {expires_at}, picked up at {now})"
        )),
    }
}

/// Records that the task opened the tenant's secret `name` (its name, never its value).
async fn audit_secret(shared: &Shared, task: &TaskMessage, name: &str, at: chrono::DateTime<Utc>) {
    let event = aiq_topics::AuditEvent {
        id: uuid::Uuid::new_v4(),
        tenant: task.tenant.clone(),
        at,
        actor: format!("worker:{}", task.connector),
        action: aiq_topics::AuditAction::SecretOpened,
        subject: name.to_owned(),
        detail: serde_json::json!({
            "run": task.run.to_string(), "step": task.step.as_str(), "attempt": task.attempt,
        }),
        actor_tenant: None,
        request_id: None,
        outcome: Some("ok".into()),
    };
    let payload = event.encode();
    let sent = shared
        .send_until_acked(
            &shared.audit,
            Some(task.tenant.as_str().as_bytes()),
            Some(&payload),
            None,
            &task.run,
        )
        .await;
    if let Sent::Refused(e) = sent {
        tracing::error!(secret = name, error = %e, "secret_opened audit event refused by Kafka");
    }
}

async fn send_result(shared: &Shared, result: &TaskResult, payload: &[u8]) -> Sent {
    let key = result.tenant.as_str().as_bytes();
    let traceparent = TraceParent::of_result(result).to_string();
    let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
        key: TRACEPARENT,
        value: Some(traceparent.as_bytes()),
    });
    shared
        .send_until_acked(
            &shared.results,
            Some(key),
            Some(payload),
            Some(&headers),
            &result.run,
        )
        .await
}

/// Writes a task record that does not decode to the dead letters, with the headers the
/// orchestrator would set plus the record's own.
pub(crate) fn set_aside(
    shared: &Arc<Shared>,
    msg: &impl Message,
    reason: &str,
    ticket: Ticket,
    permit: OwnedSemaphorePermit,
) {
    let origin = DeadLetterOrigin {
        kind: DeadLetterKind::Undecodable,
        reason,
        stage: STAGE,
        topic: msg.topic(),
        partition: msg.partition(),
        offset: msg.offset(),
    };
    let headers = match msg.headers() {
        Some(original) => origin.headers_after(original),
        None => origin.headers(),
    };
    shared
        .metrics
        .dead_letters
        .with_label_values(&[DeadLetterKind::Undecodable.as_str()])
        .inc();
    let at = format!("{}/{}@{}", msg.topic(), msg.partition(), msg.offset());
    tracing::warn!(record = %at, %reason, "task record dead-lettered");
    let key = msg.key().map(<[u8]>::to_vec);
    let payload = msg.payload().map(<[u8]>::to_vec);
    let shared = Arc::clone(shared);
    // Like a result: the offset is done only once Kafka has the dead letter, so keep
    // trying (off the consume loop, which must keep serving rebalances).
    tokio::spawn(async move {
        let mut sent = shared
            .send_until_acked(
                &shared.dead_letters,
                key.as_deref(),
                payload.as_deref(),
                Some(&headers),
                &at,
            )
            .await;
        if let Sent::Refused(e) = &sent {
            // The dead-letter topic takes less than the tasks topic did: keep the key
            // and the headers, which say where the record is.
            tracing::warn!(error = %e, record = %at, "dead letter refused; sent without its value");
            sent = shared
                .send_until_acked(
                    &shared.dead_letters,
                    key.as_deref(),
                    None,
                    Some(&headers),
                    &at,
                )
                .await;
        }
        match sent {
            Sent::Acked => lock(&shared.pending).finished(ticket),
            Sent::Abandoned => {}
            // Stuck here forever otherwise; the log line is all that is left of it.
            Sent::Refused(e) => {
                tracing::error!(error = %e, record = %at, "dead letter refused; passed over");
                lock(&shared.pending).finished(ticket);
            }
        }
        drop(permit);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiq_topics::{RunId, StepId, TenantId};
    use serde_json::json;

    fn task(timeout_ms: u64, expires_at: Option<DateTime<Utc>>) -> TaskMessage {
        TaskMessage {
            tenant: TenantId::new("acme").unwrap(),
            run: RunId::random(),
            step: StepId::new("s").unwrap(),
            attempt: 1,
            connector: "noop".into(),
            args: json!({}),
            timeout_ms,
            dispatched_at: Utc::now(),
            expires_at,
        }
    }

    #[test]
    fn a_task_runs_cut_short_or_not_at_all_by_its_expiry() {
        let now = Utc::now();
        let s = chrono::Duration::seconds;
        assert_eq!(expiry(&task(10_000, None), now), Expiry::Live);
        assert_eq!(expiry(&task(10_000, Some(now + s(60))), now), Expiry::Live);
        let Expiry::Shortened(cut) = expiry(&task(10_000, Some(now + s(2))), now) else {
            panic!("not shortened");
        };
        assert_eq!(cut.timeout_ms, 2_000);
        for at in [now, now - s(1)] {
            let e = expiry(&task(10_000, Some(at)), now);
            assert!(
                matches!(&e, Expiry::Expired(m) if m.starts_with("expired before a worker picked it up")),
                "{e:?}"
            );
        }
    }

    #[test]
    fn a_result_over_the_limit_becomes_a_too_large_error_naming_both_sizes() {
        let t = task(1, None);
        let result = |output| TaskResult {
            tenant: t.tenant.clone(),
            run: t.run,
            step: t.step.clone(),
            attempt: 1,
            outcome: TaskOutcome::Ok { output },
            started_at: Utc::now(),
            finished_at: Utc::now(),
        };
        let small = result(json!("x"));
        let (kept, payload) = bounded(small.clone(), 1000);
        assert_eq!(kept, small);
        assert_eq!(payload, encode(&small));
        let big = result(json!("x".repeat(2000)));
        let size = encode(&big).len();
        let (cut, payload) = bounded(big, 1000);
        assert!(payload.len() <= 1000);
        let TaskOutcome::Error { class, message } = cut.outcome else {
            panic!("kept");
        };
        assert_eq!(class, ErrorClass::TooLarge);
        assert!(message.contains(&format!("{size} bytes")), "{message}");
        assert!(message.contains("limit of 1000 bytes"), "{message}");
    }
}
