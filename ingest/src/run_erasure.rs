//! Erasing one ended run's payloads (`DELETE /v1/runs/{id}`): its input, output and
//! error messages, wherever this deployment keeps them for reading.
//!
//! The tenant's data key stays (its other runs use it), so this is deletion, not
//! crypto-shredding. In order:
//!
//! 1. the history rows: the run's input, output and error message and every step's
//!    error message are cleared, and the row is marked erased (a rerun, which needs the
//!    input, is refused from then on);
//! 2. the orchestrator is told (a signal) to drop the state it keeps of a failed run for
//!    redrive, which holds the input and the step outputs; its changelog entry is
//!    tombstoned;
//! 3. a `run_erased` record goes on the events topic, keyed by tenant like the run's own
//!    events, so it lands behind all of them: the sink clears the run's error messages
//!    from the Parquet files of the run's days (both tiers, rewritten whole) and from
//!    the rows it still holds, before it commits past the record;
//! 4. the certificate goes to the audit trail.
//!
//! Each step is idempotent, and a failure answers 503 before the row is marked: the
//! same call finishes the job.

use aiq_topics::{
    AuditAction, Event, RunErased, RunId, RunStatus, SignalAction, SignalEvent, TenantId, TopicKind,
};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::caller::Caller;
use crate::history::{ErasedRunRows, HistoryError, HistoryStore};
use crate::publisher::{PublishError, Publisher};

/// The most days a run's events are looked for in the Parquet history: the longest a
/// run can last (its timeout is bounded well below this).
const MAX_RUN_DAYS: i64 = 400;

#[derive(Debug, thiserror::Error)]
pub enum RunErasureError {
    #[error("run {0} was not found")]
    NotFound(RunId),
    #[error(
        "run {run} is {status}; only an ended run's payloads are erased (cancel it first, \
         or wait for it to end)"
    )]
    NotEnded { run: RunId, status: String },
    #[error("run {run}'s payloads were already erased at {at}")]
    AlreadyErased { run: RunId, at: DateTime<Utc> },
    #[error("the history store: {0}")]
    History(#[from] HistoryError),
    #[error("Kafka: {0}")]
    Publish(#[from] PublishError),
}

/// The certificate of one run's erasure, kept in the audit trail.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunErasureCertificate {
    pub run_id: String,
    pub tenant: String,
    pub workflow: Option<String>,
    pub status: String,
    pub erased_at: DateTime<Utc>,
    /// Who erased it (a token's subject or an API key id), and from which tenant.
    pub erased_by: String,
    pub erased_by_tenant: String,
    /// What was cleared in the history store at once.
    pub history: ErasedRunRows,
    /// The days whose Parquet files the sink clears (both tiers), first and last.
    pub parquet_from: NaiveDate,
    pub parquet_to: NaiveDate,
    /// What remains, and why.
    pub retained: Vec<String>,
}

/// The days the run's events fall on: from its first start (or schedule) to its end.
fn days(
    started: Option<DateTime<Utc>>,
    ended: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (NaiveDate, NaiveDate) {
    let to = ended.unwrap_or(now);
    let from = started
        .unwrap_or(to)
        .max(to - chrono::Duration::days(MAX_RUN_DAYS));
    (from.date_naive(), to.date_naive())
}

/// Erases the payloads of `caller`'s tenant's ended run `run` (see the module).
/// `sealed` says whether this deployment seals payloads (it decides what the
/// certificate says of the copies Kafka retains).
pub async fn erase_run(
    publisher: &Publisher,
    history: &HistoryStore,
    caller: &Caller,
    run: RunId,
    sealed: bool,
) -> Result<RunErasureCertificate, RunErasureError> {
    let tenant: &TenantId = &caller.tenant;
    let detail = history
        .run_row(tenant.as_str(), run.as_uuid())
        .await?
        .ok_or(RunErasureError::NotFound(run))?;
    if let Some(at) = detail.payloads_erased_at {
        return Err(RunErasureError::AlreadyErased { run, at });
    }
    let status = detail.status.clone().unwrap_or_default();
    let ended = [
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::TimedOut,
    ]
    .iter()
    .any(|s| s.as_str() == status);
    if !ended || detail.finished_at.is_none() {
        return Err(RunErasureError::NotEnded { run, status });
    }
    let now = Utc::now();
    let first = match (detail.scheduled_at, detail.started_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let (from, to) = days(first, detail.finished_at, now);

    // The orchestrator and the sink first: should either fail, the row is not marked
    // yet and the same call does it all again.
    let forget = SignalEvent {
        tenant: tenant.clone(),
        run,
        action: SignalAction::Erase,
    };
    publisher
        .send(TopicKind::Signals, tenant.as_str(), &forget.encode())
        .await?;
    let marker = Event::RunErased(RunErased {
        tenant: tenant.clone(),
        run,
        at: now,
        from,
        to,
    });
    publisher
        .send(TopicKind::Events, tenant.as_str(), &marker.encode())
        .await?;
    let rows = history
        .erase_run_payloads(tenant.as_str(), run.as_uuid(), now)
        .await?;

    let kafka = if sealed {
        "records in Kafka topics until their retention ends: sealed under the tenant's data key, readable only by this deployment's processes"
    } else {
        "records in Kafka topics until their retention ends: in clear, since this deployment seals no payloads (no `secrets.key_file`)"
    };
    let certificate = RunErasureCertificate {
        run_id: run.to_string(),
        tenant: tenant.to_string(),
        workflow: detail.workflow.clone(),
        status,
        erased_at: now,
        erased_by: caller.subject.clone(),
        erased_by_tenant: caller.own_tenant.as_ref().unwrap_or(tenant).to_string(),
        history: rows,
        parquet_from: from,
        parquet_to: to,
        retained: vec![
            kafka.into(),
            "Cassandra's older SSTables until compaction drops the shadowed values".into(),
            "the run's ids, statuses, times, sizes and error classes: kept for reports".into(),
            "the audit trail (no payloads): kept, with this certificate".into(),
        ],
    };
    crate::audit::record(
        publisher,
        caller,
        AuditAction::RunErased,
        &run.to_string(),
        serde_json::to_value(&certificate).unwrap_or_default(),
    )
    .await;
    tracing::info!(tenant = %tenant, %run, by = %caller.subject, "run payloads erased");
    Ok(certificate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_days_run_from_the_first_start_to_the_end_and_are_bounded() {
        let t = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 3, d, h, 0, 0).unwrap();
        let now = t(20, 0);
        let date = |d: u32| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
        assert_eq!(days(Some(t(1, 23)), Some(t(3, 1)), now), (date(1), date(3)));
        assert_eq!(days(None, Some(t(3, 1)), now), (date(3), date(3)));
        assert_eq!(days(Some(t(2, 0)), None, now), (date(2), date(20)));
        let long_ago = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
        let (from, to) = days(Some(long_ago), Some(now), now);
        assert_eq!((to - from).num_days(), MAX_RUN_DAYS);
    }
}
