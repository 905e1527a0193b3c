//! W3C trace context for the records about a run, kept stateless.
//!
//! The trace id of a run *is* its run id (the UUID's 16 bytes), so any stage can name a
//! run's trace from the record in hand without storing anything. Each record carries a
//! `traceparent` header whose span id is derived from what the record is (the trigger,
//! task attempt, result attempt or event), so the same record always gets the same span
//! id, including when it is produced again after a crash.
//!
//! A caller's own trace (an HTTP request to ingest with a `traceparent`) is not adopted:
//! the run keeps its run id as trace id, and the caller's traceparent travels as a link
//! in [`PARENT_TRACEPARENT`]. Adopting it would make a retried request (same idempotency
//! key, same run) report under two traces, and one caller trace would hold many runs.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::events::Event;
use crate::ids::{RunId, StepId};
use crate::task::{TaskMessage, TaskResult};

/// The header name of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// The header on a trigger holding the traceparent its HTTP caller sent: a link to the
/// caller's trace, which the run does not join (see the module documentation).
pub const PARENT_TRACEPARENT: &str = "aiq-parent-traceparent";

/// The only flag defined so far: the caller recorded this span.
const SAMPLED: u8 = 0x01;
const VERSION: u8 = 0x00;
/// `00-` + 32 + `-` + 16 + `-` + 2.
const V00_LEN: usize = 55;

/// Why a traceparent was refused; the value is ignored then, as the W3C spec asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("traceparent {value:?} is not valid: {reason}")]
pub struct TraceError {
    pub value: String,
    pub reason: &'static str,
}

/// A W3C trace id: 16 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

impl TraceId {
    /// The trace of a run. Run ids are random or name-based UUIDs, never the nil UUID
    /// that would make the all-zero (invalid) trace id.
    pub fn of_run(run: RunId) -> Self {
        Self(*run.as_uuid().as_bytes())
    }

    /// `None` for the all-zero id, which the spec declares invalid.
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        (bytes != [0; 16]).then_some(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The run whose trace this is, if it is a run's trace.
    pub fn run(&self) -> RunId {
        RunId::from_uuid(Uuid::from_bytes(self.0))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

/// A W3C span (parent) id: 8 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

impl SpanId {
    /// `None` for the all-zero id, which the spec declares invalid.
    pub fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        (bytes != [0; 8]).then_some(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }

    /// The span id of the record described by `label` in the trace of `run`: FNV-1a
    /// over both, then a 64-bit mixer so that labels differing in one character differ
    /// in every byte. Both are fixed by their published constants, unlike std's
    /// hasher, so every build and every stage derives the same id.
    pub fn derive(run: RunId, label: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in run.as_uuid().as_bytes().iter().chain(label.as_bytes()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        // Zero is not a valid span id; one in 2^64 labels maps elsewhere.
        Self(h.max(1).to_be_bytes())
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

/// What a record about a run is, which decides its span id.
#[derive(Debug, Clone, Copy)]
pub enum Traced<'a> {
    /// The trigger that starts the run.
    Trigger,
    /// A task the orchestrator dispatches.
    Task { step: &'a StepId, attempt: u32 },
    /// A worker's result for a task attempt.
    Result { step: &'a StepId, attempt: u32 },
    /// A run or step event.
    Event(&'a Event),
}

impl Traced<'_> {
    /// The name the span id is derived from: `trigger`, `task/<step>/<attempt>`,
    /// `result/<step>/<attempt>`, `event/run/<status>` or
    /// `event/step/<step>/<attempt>/<status>[/<iteration>]`.
    pub fn label(&self) -> String {
        match self {
            Traced::Trigger => "trigger".to_owned(),
            Traced::Task { step, attempt } => format!("task/{step}/{attempt}"),
            Traced::Result { step, attempt } => format!("result/{step}/{attempt}"),
            Traced::Event(Event::Run(e)) => format!("event/run/{}", e.status.as_str()),
            Traced::Event(Event::Step(e)) => {
                let mut l = format!("event/step/{}/{}/{}", e.step, e.attempt, e.status.as_str());
                if let Some(i) = e.iteration {
                    l.push_str(&format!("/{i}"));
                }
                l
            }
            Traced::Event(Event::RunErased(_)) => "event/run/erased".to_owned(),
        }
    }
}

/// A parsed or derived `traceparent` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: u8,
}

impl TraceParent {
    /// The traceparent of a record about `run`; always sampled, since every record of
    /// a run is kept anyway.
    pub fn of(run: RunId, what: Traced<'_>) -> Self {
        Self {
            trace_id: TraceId::of_run(run),
            span_id: SpanId::derive(run, &what.label()),
            flags: SAMPLED,
        }
    }

    pub fn of_trigger(run: RunId) -> Self {
        Self::of(run, Traced::Trigger)
    }

    pub fn of_task(t: &TaskMessage) -> Self {
        Self::of(
            t.run,
            Traced::Task {
                step: &t.step,
                attempt: t.attempt,
            },
        )
    }

    pub fn of_result(r: &TaskResult) -> Self {
        Self::of(
            r.run,
            Traced::Result {
                step: &r.step,
                attempt: r.attempt,
            },
        )
    }

    pub fn of_event(e: &Event) -> Self {
        Self::of(e.run(), Traced::Event(e))
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// Parses a header value as Kafka or HTTP hands it over.
    pub fn parse_bytes(value: &[u8]) -> Result<Self, TraceError> {
        match std::str::from_utf8(value) {
            Ok(s) => s.parse(),
            Err(_) => Err(TraceError {
                value: String::from_utf8_lossy(value).into_owned(),
                reason: "not UTF-8",
            }),
        }
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VERSION:02x}-{}-{}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

impl FromStr for TraceParent {
    type Err = TraceError;

    /// Accepts the spec's version 00 exactly, and later versions by their version 00
    /// prefix (the spec's forward-compatibility rule); refuses version `ff`, upper-case
    /// hex and all-zero ids.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| TraceError {
            value: s.chars().take(V00_LEN + 8).collect(),
            reason,
        };
        let b = s.as_bytes();
        if b.len() < V00_LEN {
            return Err(err("shorter than 55 characters"));
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(err("fields are not separated by '-' at 2, 35 and 52"));
        }
        let version = hex_byte(&b[0..2]).ok_or_else(|| err("version is not 2 hex digits"))?;
        match version {
            0xff => return Err(err("version ff is forbidden")),
            VERSION if b.len() != V00_LEN => {
                return Err(err("version 00 is exactly 55 characters"));
            }
            _ if b.len() > V00_LEN && b[V00_LEN] != b'-' => {
                return Err(err("a later version's extra fields follow a '-'"));
            }
            _ => {}
        }
        let mut trace = [0u8; 16];
        hex_into(&b[3..35], &mut trace).ok_or_else(|| err("trace id is not 32 hex digits"))?;
        let mut span = [0u8; 8];
        hex_into(&b[36..52], &mut span).ok_or_else(|| err("parent id is not 16 hex digits"))?;
        let flags = hex_byte(&b[53..55]).ok_or_else(|| err("flags are not 2 hex digits"))?;
        Ok(Self {
            trace_id: TraceId::from_bytes(trace).ok_or_else(|| err("trace id is all zero"))?,
            span_id: SpanId::from_bytes(span).ok_or_else(|| err("parent id is all zero"))?,
            flags,
        })
    }
}

/// Encoded on the stack and written once (the `hex` crate's table encoder): a `write!`
/// per byte was a visible share of the orchestrator's time per record.
fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let mut buf = [0u8; 32];
    let out = buf.get_mut(..bytes.len() * 2).ok_or(fmt::Error)?;
    hex::encode_to_slice(bytes, out).map_err(|_| fmt::Error)?;
    // Hex digits are ASCII.
    f.write_str(std::str::from_utf8(out).map_err(|_| fmt::Error)?)
}

/// Lower-case only: the spec's HEXDIGLC.
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    match pair {
        [hi, lo] => Some((nibble(*hi)? << 4) | nibble(*lo)?),
        _ => None,
    }
}

fn hex_into(digits: &[u8], out: &mut [u8]) -> Option<()> {
    if digits.len() != out.len() * 2 {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *o = hex_byte(pair)?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{RunEvent, RunStatus, StepEvent, StepStatus};
    use crate::ids::{TenantId, WorkflowId};
    use chrono::Utc;
    use proptest::prelude::*;

    const SPEC_EXAMPLE: &str = "00-4bf92f3577b34ed9a4e6f6263d7fb6ee-00f067aa0ba902b7-01";

    fn run() -> RunId {
        "6f1d2c3b-4a59-4e87-9c10-0123456789ab".parse().unwrap()
    }

    #[test]
    fn the_spec_example_parses_and_formats_back() {
        let tp: TraceParent = SPEC_EXAMPLE.parse().unwrap();
        assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34ed9a4e6f6263d7fb6ee");
        assert_eq!(tp.span_id.to_string(), "00f067aa0ba902b7");
        assert!(tp.sampled());
        assert_eq!(tp.to_string(), SPEC_EXAMPLE);
        assert_eq!(
            TraceParent::parse_bytes(SPEC_EXAMPLE.as_bytes()).unwrap(),
            tp
        );
    }

    #[test]
    fn the_trace_id_of_a_run_is_its_uuid_in_hex() {
        let tp = TraceParent::of_trigger(run());
        assert_eq!(tp.trace_id.to_string(), "6f1d2c3b4a594e879c100123456789ab");
        assert_eq!(
            tp.trace_id.to_string(),
            run().as_uuid().simple().to_string()
        );
        assert_eq!(tp.trace_id.run(), run());
        let s = tp.to_string();
        assert_eq!(s.len(), 55);
        assert!(s.starts_with("00-6f1d2c3b4a594e879c100123456789ab-"));
        assert!(s.ends_with("-01"));
    }

    #[test]
    fn span_ids_are_stable_and_differ_by_record() {
        let step = StepId::new("fetch").unwrap();
        let task = |attempt| {
            TraceParent::of(
                run(),
                Traced::Task {
                    step: &step,
                    attempt,
                },
            )
        };
        let result = TraceParent::of(
            run(),
            Traced::Result {
                step: &step,
                attempt: 1,
            },
        );
        assert_eq!(task(1), task(1));
        assert_ne!(task(1).span_id, task(2).span_id);
        assert_ne!(task(1).span_id, result.span_id);
        assert_ne!(
            TraceParent::of_trigger(run()).span_id,
            TraceParent::of_trigger(RunId::random()).span_id
        );
        assert_eq!(
            SpanId::derive(run(), "task/fetch/1"),
            task(1).span_id,
            "the label of a task is task/<step>/<attempt>"
        );
    }

    #[test]
    fn span_id_derivation_is_pinned() {
        // A change here re-ids every record in flight: only with a migration note.
        assert_eq!(
            SpanId::derive(run(), "trigger").to_string(),
            PINNED_TRIGGER_SPAN
        );
    }

    // Computed independently (Python) from the FNV-1a and mixer constants.
    const PINNED_TRIGGER_SPAN: &str = "0ff6f7154ec4b70b";

    #[test]
    fn events_and_tasks_label_themselves() {
        let tenant = TenantId::new("acme").unwrap();
        let step = StepId::new("fetch").unwrap();
        let at = Utc::now();
        let run_event = Event::Run(RunEvent {
            tenant: tenant.clone(),
            run: run(),
            workflow: WorkflowId::new("wf").unwrap(),
            version: 1,
            status: RunStatus::Succeeded,
            at,
            input: None,
            output: None,
            error: None,
            started_at: None,
            source: None,
            scheduled_at: None,
        });
        let mut step_event = StepEvent {
            tenant: tenant.clone(),
            run: run(),
            step: step.clone(),
            attempt: 2,
            status: StepStatus::Started,
            at,
            kind: "task".into(),
            connector: None,
            error: None,
            iteration: None,
            duration_ms: None,
            output_bytes: None,
        };
        assert_eq!(Traced::Event(&run_event).label(), "event/run/succeeded");
        assert_eq!(
            Traced::Event(&Event::Step(step_event.clone())).label(),
            "event/step/fetch/2/started"
        );
        step_event.iteration = Some(7);
        let e = Event::Step(step_event);
        assert_eq!(Traced::Event(&e).label(), "event/step/fetch/2/started/7");
        let tp = TraceParent::of_event(&e);
        assert_eq!(tp.trace_id, TraceId::of_run(run()));
        assert_eq!(
            tp.span_id,
            SpanId::derive(run(), "event/step/fetch/2/started/7")
        );

        let task = TaskMessage {
            tenant,
            run: run(),
            step,
            attempt: 3,
            connector: "http".into(),
            args: serde_json::Value::Null,
            timeout_ms: 1,
            dispatched_at: at,
            expires_at: None,
        };
        assert_eq!(
            TraceParent::of_task(&task).span_id,
            SpanId::derive(run(), "task/fetch/3")
        );
    }

    #[test]
    fn invalid_values_are_refused_with_a_reason() {
        let cases = [
            ("", "shorter"),
            (
                "00-4bf92f3577b34ed9a4e6f6263d7fb6ee-00f067aa0ba902b7-0",
                "shorter",
            ),
            (
                "00-4BF92F3577B34ED9A4E6F6263D7FB6EE-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "all zero",
            ),
            (
                "00-4bf92f3577b34ed9a4e6f6263d7fb6ee-0000000000000000-01",
                "all zero",
            ),
            (
                "ff-4bf92f3577b34ed9a4e6f6263d7fb6ee-00f067aa0ba902b7-01",
                "ff",
            ),
            (
                "00-4bf92f3577b34ed9a4e6f6263d7fb6ee-00f067aa0ba902b7-01-x",
                "exactly",
            ),
            (
                "00_4bf92f3577b34ed9a4e6f6263d7fb6ee-00f067aa0ba902b7-01",
                "separated",
            ),
            (
                "00-4bf92f3577b34ed9a4e6f6263d7fb6ee-00f067aa0ba902b7-zz",
                "flags",
            ),
            (
                "01-4bf92f3577b34ed9a4e6f6263d7fb6ee-00f067aa0ba902b7-01x",
                "extra",
            ),
        ];
        for (value, reason) in cases {
            let e = value.parse::<TraceParent>().unwrap_err();
            assert!(e.reason.contains(reason), "{value:?}: {e}");
        }
        assert!(TraceParent::parse_bytes(&[0xff; 55]).is_err());
    }

    #[test]
    fn later_versions_are_read_by_their_version_00_prefix() {
        let v = "01-4bf92f3577b34ed9a4e6f6263d7fb6ee-00f067aa0ba902b7-01-future";
        let tp: TraceParent = v.parse().unwrap();
        assert_eq!(tp.to_string(), SPEC_EXAMPLE);
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(
            trace in any::<[u8; 16]>(),
            span in any::<[u8; 8]>(),
            flags in any::<u8>(),
        ) {
            prop_assume!(trace != [0; 16] && span != [0; 8]);
            let tp = TraceParent {
                trace_id: TraceId::from_bytes(trace).unwrap(),
                span_id: SpanId::from_bytes(span).unwrap(),
                flags,
            };
            let s = tp.to_string();
            prop_assert_eq!(s.len(), 55);
            prop_assert_eq!(s.parse::<TraceParent>().unwrap(), tp);
        }

        #[test]
        fn derived_traceparents_parse_back_to_their_run(
            run in any::<u128>(),
            label in "[a-z/0-9_-]{0,40}",
        ) {
            let run = RunId::from_uuid(Uuid::from_u128(run));
            prop_assume!(run.as_uuid() != Uuid::nil());
            let tp = TraceParent {
                trace_id: TraceId::of_run(run),
                span_id: SpanId::derive(run, &label),
                flags: SAMPLED,
            };
            let back: TraceParent = tp.to_string().parse().unwrap();
            prop_assert_eq!(back.trace_id.run(), run);
            prop_assert_eq!(back.span_id, SpanId::derive(run, &label));
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<TraceParent>();
        }
    }
}
