//! Bulk replays chosen by SQL: a predicate over the tenant's `runs` table picks the
//! runs (evaluated by the analytics engine in the caller's scope, so a tenant's
//! predicate cannot reach another tenant's runs); a dry run answers the count and a
//! sample, a real one becomes a job that redrives or reruns each run, throttled, with
//! progress, cancellable, and never twice.
//!
//! - `select`: the predicate into the runs it matches;
//! - `store`: jobs in Cassandra, their progress and their leases;
//! - `runner`: the loop that finds jobs, takes them and works through them.

pub mod runner;
pub mod select;
pub mod store;

use aiq_topics::{RunId, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

pub use runner::{Replayer, RunnerSettings, spawn_runner};
pub use select::{MAX_RUNS, SelectError, matching};
pub use store::{ReplayStore, StoreError};

/// What a job does to each run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplayMode {
    /// Resume the failed run at its failed step (runs not failed are skipped).
    Redrive,
    /// Start a new run with the same input.
    Rerun,
}

impl ReplayMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayMode::Redrive => "redrive",
            ReplayMode::Rerun => "rerun",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "redrive" => Some(ReplayMode::Redrive),
            "rerun" => Some(ReplayMode::Rerun),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Done,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("done") => JobState::Done,
            Some("cancelled") => JobState::Cancelled,
            _ => JobState::Running,
        }
    }
}

/// One run a job replays: the tenant it belongs to and its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub tenant: TenantId,
    pub run: RunId,
}

impl Target {
    pub fn encode(&self) -> String {
        format!("{}/{}", self.tenant, self.run)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (t, r) = s.split_once('/')?;
        Some(Self {
            tenant: TenantId::new(t).ok()?,
            run: r.parse().ok()?,
        })
    }
}

/// A job as stored: what it was asked to do and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Job {
    pub id: Uuid,
    /// The tenant that asked (a platform admin's own, for a job across tenants).
    #[schema(value_type = String)]
    pub tenant: TenantId,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// The predicate over `runs`, as given.
    #[serde(rename = "where")]
    pub predicate: String,
    pub mode: ReplayMode,
    /// Chosen across every tenant (a platform admin's job).
    pub platform: bool,
    pub max_per_second: u32,
    pub state: JobState,
    /// Runs the predicate matched.
    pub total: usize,
    /// Runs replayed.
    pub done: u32,
    /// Runs passed over: not failed any more (a redrive), or gone from the history.
    pub skipped: u32,
    /// Runs whose replay failed for good; `last_error` says why.
    pub failed: u32,
    pub last_error: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub next_index: usize,
    #[serde(skip)]
    pub targets: Vec<Target>,
}

/// What a new job is asked to do.
pub struct JobRequest {
    pub tenant: TenantId,
    pub created_by: String,
    pub predicate: String,
    pub mode: ReplayMode,
    pub platform: bool,
    pub max_per_second: u32,
}

impl Job {
    /// A job not started yet over `targets`.
    pub fn new(req: JobRequest, targets: Vec<Target>, now: DateTime<Utc>) -> Self {
        Self {
            id: Uuid::new_v4(),
            tenant: req.tenant,
            created_at: now,
            created_by: req.created_by,
            predicate: req.predicate,
            mode: req.mode,
            platform: req.platform,
            max_per_second: req.max_per_second,
            state: JobState::Running,
            total: targets.len(),
            done: 0,
            skipped: 0,
            failed: 0,
            last_error: None,
            updated_at: Some(now),
            next_index: 0,
            targets,
        }
    }
}
