//! The state of one run, as the orchestrator keeps it and writes it to its changelog.
//!
//! Only ordered maps, so that the same history always serialises to the same bytes.

use std::collections::{BTreeMap, BTreeSet};

use aiq_topics::{Failure, RunId, RunStatus, StepId, TenantId, WorkflowId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::definition::Join;
use crate::workflow::BlockId;

/// Bumped whenever the encoding changes incompatibly; `decode` refuses other versions.
pub const STATE_FORMAT: u8 = 1;

/// A frame is one thread of control: the run itself, a parallel branch, or one foreach
/// iteration. Frames form a tree through `parent`.
pub type FrameId = u32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub format: u8,
    pub run: RunId,
    pub tenant: TenantId,
    pub workflow: WorkflowId,
    pub version: u32,
    pub content_hash: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    pub input: Value,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub frames: BTreeMap<FrameId, Frame>,
    pub next_frame: FrameId,
    /// The last dispatch number of each task step; attempt numbers are unique per step
    /// across the whole run, so a result names exactly one dispatch.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dispatches: BTreeMap<StepId, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timers: BTreeMap<String, Timer>,
    /// Signals that arrived before a step waited for them (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<BufferedSignal>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// Where a failed or timed-out run stood when it ended: what a redrive resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
    /// How often the run was redriven.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redrives: u32,
}

/// The top-level step a failed or timed-out run was at, and what the run's top level
/// had done before it: a redrive starts that step again (fresh attempts) with these
/// outputs and the run's variables as they were. A parallel or foreach step that failed
/// runs again whole, every branch or iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    pub at: StepId,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<StepId, Value>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub last: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
    pub block: BlockId,
    pub at: StepId,
    pub pending: Pending,
    /// Outputs of the steps finished in this frame, visible as `steps.<id>.output`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<StepId, Value>,
    /// Output of the last step finished: the block's output when it ends.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub last: Value,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub item: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// Attempts made of the current task step in this frame.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tries: u32,
}

/// A field that is written is present, even when its value is `null` (serde would read
/// `null` back as absent, and a decoded state must encode to the same bytes).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    pub frame: FrameId,
    /// The branch index or the iteration index.
    pub slot: u64,
}

/// What a frame waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "on", rename_all = "snake_case")]
pub enum Pending {
    /// About to run its current step (only between transitions' internal steps).
    Ready,
    /// A dispatched task attempt.
    Task {
        attempt: u32,
    },
    /// A retry's backoff timer.
    Backoff,
    /// A wait step's timer.
    Timer,
    Signal {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation: Option<String>,
    },
    Branches {
        join: Join,
        fail_fast: bool,
        open: BTreeSet<u64>,
        #[serde(with = "index_keyed")]
        done: BTreeMap<u64, Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<Failure>,
    },
    Foreach {
        items: Vec<Value>,
        started: u64,
        concurrency: u32,
        open: BTreeSet<u64>,
        #[serde(with = "index_keyed")]
        done: BTreeMap<u64, Value>,
    },
    Child {
        run: RunId,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timer {
    pub due: DateTime<Utc>,
    pub purpose: TimerPurpose,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "for", rename_all = "snake_case")]
pub enum TimerPurpose {
    RunTimeout,
    Retry { frame: FrameId },
    TaskTimeout { frame: FrameId, attempt: u32 },
    Wait { frame: FrameId },
    SignalTimeout { frame: FrameId },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferedSignal {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
    pub payload: Value,
}

/// `Pending` is internally tagged, and serde reads such an enum through a buffer that
/// cannot turn the JSON object keys `"0"`, `"1"` back into integers. These maps are
/// written as they always were (an object keyed by the index) and read through string
/// keys.
mod index_keyed {
    use std::collections::BTreeMap;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(m: &BTreeMap<u64, Value>, s: S) -> Result<S::Ok, S::Error> {
        m.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u64, Value>, D::Error> {
        BTreeMap::<String, Value>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                k.parse::<u64>()
                    .map(|k| (k, v))
                    .map_err(|_| D::Error::custom(format!("index key {k:?} is not a number")))
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("run state is empty")]
    Empty,
    #[error("run state has format {found}; this build reads format {STATE_FORMAT}")]
    Format { found: u8 },
    #[error("run state does not decode: {0}")]
    Json(#[from] serde_json::Error),
}

impl RunState {
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }

    /// `[format byte][JSON]`: a version tag the changelog reader checks before parsing.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![STATE_FORMAT];
        // Serialising plain data cannot fail.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&format, json) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if format != STATE_FORMAT {
            return Err(DecodeError::Format { found: format });
        }
        Ok(serde_json::from_slice(json)?)
    }
}

#[cfg(test)]
mod json_key_order {
    /// Replays and snapshots compare bytes, and serde_json orders object keys by name
    /// unless some crate in the build enables its `preserve_order` feature. If this
    /// fails, find it with `cargo tree -e features -i serde_json` and turn it off.
    #[test]
    fn serde_json_orders_keys_by_name_in_this_build() {
        let v: serde_json::Value = serde_json::from_str(r#"{"b": 1, "a": 2}"#).unwrap();
        assert_eq!(v.to_string(), r#"{"a":2,"b":1}"#);
    }
}
