//! What the orchestrator writes to its compacted changelog, one entry per piece of
//! state, so that a partition's state is the latest value of each key.
//!
//! Keys are `tenant/kind/id`; a tombstone (no value) removes the entry. Values are a
//! format byte followed by JSON, like run states: an unknown format is refused, not
//! misread.

use aiq_engine::RunState;
use aiq_topics::{
    RunId, RunStatus, SignalEvent, StepId, TaskMessage, TenantId, TriggerEvent, WorkflowId,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const ENTRY_FORMAT: u8 = 1;

const FINISHED_PREFIX: &str = "~/finished/";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKey {
    /// A run in flight, then (once finished) its short record.
    Run(TenantId, RunId),
    /// A run waiting for a quota slot.
    Queued(TenantId, RunId),
    /// The cursor of one cron trigger of a workflow.
    Cron(TenantId, WorkflowId, u32),
    /// A task waiting for an in-flight slot: run, step, attempt.
    Held(TenantId, RunId, StepId, u32),
    /// A signal or cancel for a run not seen yet (or queued): run, arrival number.
    Early(TenantId, RunId, u64),
    /// A chunk of finished-run markers: the start of their time bucket (Unix seconds)
    /// and the chunk's number. Partition-wide, so the key names no tenant: it starts
    /// with `~`, which no tenant id may.
    Finished(i64, u64),
}

// Externally tagged (`{"run": {...}}`): an internally tagged enum buffers its content,
// and buffered content cannot read the integer map keys of a run's frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    Run(Box<LiveRun>),
    Finished(FinishedRun),
    Queued(QueuedRun),
    Cron(CronCursor),
    Held(HeldTask),
    Early(EarlySignal),
    Markers(MarkerChunk),
}

/// Runs that ended, remembered so that a late duplicate trigger starts nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkerChunk {
    pub runs: Vec<FinishedMark>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedMark {
    pub tenant: TenantId,
    pub run: RunId,
    pub status: RunStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlySignal {
    /// Arrival order within the partition: applied in this order.
    pub seq: u64,
    pub received_at: DateTime<Utc>,
    /// Where it was consumed, for the dead-letter headers should its run never appear.
    pub offset: i64,
    pub signal: SignalEvent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldTask {
    /// Arrival order within the partition.
    pub seq: u64,
    pub workflow: WorkflowId,
    pub version: u32,
    pub task: TaskMessage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveRun {
    /// The run to tell when this one ends (a sub-workflow's parent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<RunId>,
    pub state: RunState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedRun {
    pub tenant: TenantId,
    pub workflow: WorkflowId,
    pub status: RunStatus,
    pub finished_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedRun {
    /// Arrival order within the partition.
    pub seq: u64,
    pub run: RunId,
    pub version: u32,
    pub trigger: TriggerEvent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronCursor {
    /// The last tick fired (or skipped by policy); the next is the first after it.
    pub last_tick: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunId>,
    /// When `last_run`'s trigger was written, while it is on its way through the
    /// triggers topic: cleared when the orchestrator consumes it back. (Entries written
    /// before this field existed read as consumed.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("changelog key {0:?} is not tenant/kind/id")]
    Key(String),
    #[error("changelog value is empty")]
    Empty,
    #[error("changelog value has format {0}; this build reads format {ENTRY_FORMAT}")]
    Format(u8),
    #[error("changelog value does not decode: {0}")]
    Json(#[from] serde_json::Error),
}

impl EntryKey {
    pub fn encode(&self) -> String {
        match self {
            EntryKey::Run(t, r) => format!("{t}/run/{r}"),
            EntryKey::Queued(t, r) => format!("{t}/queued/{r}"),
            EntryKey::Cron(t, w, i) => format!("{t}/cron/{w}/{i}"),
            EntryKey::Held(t, r, s, a) => format!("{t}/held/{r}/{s}/{a}"),
            EntryKey::Early(t, r, n) => format!("{t}/early/{r}/{n}"),
            EntryKey::Finished(b, n) => format!("{FINISHED_PREFIX}{b}/{n}"),
        }
    }

    pub fn decode(key: &[u8]) -> Result<Self, EntryError> {
        let text = std::str::from_utf8(key).map_err(|_| EntryError::Key(lossy(key)))?;
        let bad = || EntryError::Key(text.to_owned());
        if let Some(rest) = text.strip_prefix(FINISHED_PREFIX) {
            let (bucket, seq) = rest.split_once('/').ok_or_else(bad)?;
            return Ok(EntryKey::Finished(
                bucket.parse().map_err(|_| bad())?,
                seq.parse().map_err(|_| bad())?,
            ));
        }
        let mut parts = text.splitn(3, '/');
        let tenant = TenantId::new(parts.next().ok_or_else(bad)?).map_err(|_| bad())?;
        let kind = parts.next().ok_or_else(bad)?;
        let rest = parts.next().ok_or_else(bad)?;
        let run = || rest.parse::<RunId>().map_err(|_| bad());
        Ok(match kind {
            "run" => EntryKey::Run(tenant, run()?),
            "queued" => EntryKey::Queued(tenant, run()?),
            "cron" => {
                let (wf, idx) = rest.rsplit_once('/').ok_or_else(bad)?;
                EntryKey::Cron(
                    tenant,
                    WorkflowId::new(wf).map_err(|_| bad())?,
                    idx.parse().map_err(|_| bad())?,
                )
            }
            "held" => {
                let mut p = rest.splitn(3, '/');
                let run = p
                    .next()
                    .ok_or_else(bad)?
                    .parse::<RunId>()
                    .map_err(|_| bad())?;
                let step = StepId::new(p.next().ok_or_else(bad)?).map_err(|_| bad())?;
                let attempt = p.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
                EntryKey::Held(tenant, run, step, attempt)
            }
            "early" => {
                let (run, seq) = rest.split_once('/').ok_or_else(bad)?;
                EntryKey::Early(
                    tenant,
                    run.parse().map_err(|_| bad())?,
                    seq.parse().map_err(|_| bad())?,
                )
            }
            _ => return Err(bad()),
        })
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENTRY_FORMAT];
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_writer(&mut out, self)
            .unwrap_or_else(|e| unreachable!("changelog entry encodes: {e}"));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        match bytes.split_first() {
            None => Err(EntryError::Empty),
            Some((&ENTRY_FORMAT, json)) => Ok(serde_json::from_slice(json)?),
            Some((&other, _)) => Err(EntryError::Format(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_bad_keys_are_named() {
        let t = TenantId::new("acme").unwrap();
        let w = WorkflowId::new("nightly.sync").unwrap();
        let r = RunId::from_idempotency_key(&t, &w, "k");
        for k in [
            EntryKey::Run(t.clone(), r),
            EntryKey::Queued(t.clone(), r),
            EntryKey::Cron(t.clone(), w.clone(), 2),
            EntryKey::Held(t.clone(), r, StepId::new("fetch").unwrap(), 3),
            EntryKey::Early(t.clone(), r, 42),
            EntryKey::Finished(-3600, 7),
        ] {
            assert_eq!(EntryKey::decode(k.encode().as_bytes()).unwrap(), k);
        }
        assert_eq!(
            EntryKey::decode(b"acme/bogus/1").unwrap_err().to_string(),
            "changelog key \"acme/bogus/1\" is not tenant/kind/id"
        );
        let c = Entry::Cron(CronCursor {
            last_tick: DateTime::from_timestamp(60, 0).unwrap(),
            last_run: None,
            fired_at: None,
        });
        assert_eq!(Entry::decode(&c.encode()).unwrap(), c);
        assert!(matches!(
            Entry::decode(b"\x09{}"),
            Err(EntryError::Format(9))
        ));
    }
}
