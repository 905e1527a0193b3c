//! One task record: run through its connector and its result written to the results
//! topic, or, when it does not decode, set aside on the dead-letter topic. Either way the
//! record's offset becomes committable only once Kafka has what was written, and its
//! slot is freed only then.

use std::sync::Arc;
use std::time::Instant;

use aiq_kafka::DeadLetterOrigin;
use aiq_topics::{DeadLetterKind, TRACEPARENT, TaskMessage, TaskOutcome, TaskResult, TraceParent};
use chrono::Utc;
use rdkafka::message::{Header, Message, OwnedHeaders};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::commits::lock;
use crate::metrics::STAGE;
use crate::offsets::Ticket;
use crate::shared::Shared;

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

async fn run(shared: Arc<Shared>, task: TaskMessage, ticket: Ticket, permit: OwnedSemaphorePermit) {
    let started_at = Utc::now();
    let clock = Instant::now();
    let outcome = shared.connectors.call(&task).await;
    let class = match &outcome {
        TaskOutcome::Ok { .. } => "ok",
        TaskOutcome::Error { class, .. } => class.as_str(),
    };
    let seconds = clock.elapsed().as_secs_f64();
    let class = class.to_owned();
    let TaskMessage {
        tenant,
        run,
        step,
        attempt,
        ..
    } = task;
    let result = TaskResult {
        tenant,
        run,
        step,
        attempt,
        outcome,
        started_at,
        finished_at: Utc::now(),
    };
    let payload = serde_json::to_vec(&result).unwrap_or_default();
    shared.metrics.task_done(
        &result.tenant,
        &task.connector,
        &class,
        seconds,
        payload.len(),
    );
    shared.metrics.in_flight.dec();
    let key = result.tenant.as_str().as_bytes();
    let traceparent = TraceParent::of_result(&result).to_string();
    let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
        key: TRACEPARENT,
        value: Some(traceparent.as_bytes()),
    });
    // At least once: only once Kafka has the result may the task's offset be committed.
    let sent = shared.send_until_acked(
        &shared.results,
        Some(key),
        Some(&payload),
        Some(&headers),
        &result.run,
    );
    if sent.await {
        lock(&shared.pending).finished(ticket);
    }
    drop(permit);
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
        let sent = shared.send_until_acked(
            &shared.dead_letters,
            key.as_deref(),
            payload.as_deref(),
            Some(&headers),
            &at,
        );
        if sent.await {
            lock(&shared.pending).finished(ticket);
        }
        drop(permit);
    });
}
