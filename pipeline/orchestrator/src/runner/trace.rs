//! Trace context: the W3C traceparent header of every record written about a run, and
//! the span a consumed record is handled in.

use aiq_topics::{TRACEPARENT, TraceParent};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};

use crate::core::InputTopic;

/// The headers of a record about a run: its W3C trace context.
pub(super) fn traced(tp: TraceParent) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(1).insert(Header {
        key: TRACEPARENT,
        value: Some(tp.to_string().as_bytes()),
    })
}

/// The span a consumed record is handled in, so that every log line the core writes
/// about it names its tenant, run and trace. ERROR level so that it is on whenever any
/// log line is. Read from the key and the traceparent header, since only the core
/// decodes the payload; a result's step and attempt exist only in its payload, so a
/// result is read twice (it is small: the output is skipped, not built).
pub(super) fn record_span(msg: &OwnedMessage, topic: InputTopic) -> tracing::Span {
    use tracing::field::Empty;
    let key = msg.key().unwrap_or_default();
    let tenant = key.split(|b| *b == b'#').next().unwrap_or(key);
    let span = tracing::error_span!(
        "record",
        topic = ?topic,
        tenant = %String::from_utf8_lossy(tenant),
        run_id = Empty,
        trace_id = Empty,
        step = Empty,
        attempt = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let trace = msg
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == TRACEPARENT))
        .and_then(|h| TraceParent::parse_bytes(h.value?).ok());
    if let Some(tp) = trace {
        span.record("run_id", tracing::field::display(tp.trace_id.run()));
        span.record("trace_id", tracing::field::display(tp.trace_id));
    }
    if topic == InputTopic::Results {
        #[derive(serde::Deserialize)]
        struct Attempt<'a> {
            #[serde(borrow)]
            step: std::borrow::Cow<'a, str>,
            attempt: u32,
        }
        if let Some(Ok(a)) = msg.payload().map(serde_json::from_slice::<Attempt<'_>>) {
            span.record("step", a.step.as_ref());
            span.record("attempt", a.attempt);
        }
    }
    span
}
