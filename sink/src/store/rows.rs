//! Events into CQL writes, one function per kind of event. Pure: what is written is
//! decided here, how it is sent is `Store`'s job.
//!
//! Every write is an `UPDATE ... SET` (or, for audit rows, which one event writes
//! whole, an `INSERT`), and a column the event does not know is bound as *unset*, never
//! null: a null would write a tombstone over what another event of the same row wrote.

use chrono::{DateTime, NaiveDate, Utc};
use scylla::value::{CqlDate, CqlTimestamp, CqlValue, MaybeUnset};
use serde_json::Value;

use aiq_topics::{AuditEvent, Event, RunEvent, StepEvent, StepStatus};

use super::index::{self, Listed};
use super::stamp::{run_rank, step_rank, write_timestamp};
use crate::settings::RetentionSettings;

/// The table, and so the prepared statement, a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Runs,
    RunsByDay,
    RunsByWorkflow,
    RunsByStatus,
    /// The delete of a run's key under its previous status.
    RunsByStatusUnlist,
    RunsByWorkflowStatus,
    RunsByWorkflowStatusUnlist,
    Steps,
    Audit,
    /// A redriven run's end cleared from its row: it runs again.
    RunsReopen,
    /// The same in its entry of the day's list.
    RunsByDayReopen,
    /// A dead letter's row (`dead_letters`).
    DeadLetters,
    /// Its listing (`dead_letters_by_day`).
    DeadLettersByDay,
}

impl Table {
    pub const ALL: [Table; 13] = [
        Table::Runs,
        Table::RunsByDay,
        Table::RunsByWorkflow,
        Table::RunsByStatus,
        Table::RunsByStatusUnlist,
        Table::RunsByWorkflowStatus,
        Table::RunsByWorkflowStatusUnlist,
        Table::Steps,
        Table::Audit,
        Table::RunsReopen,
        Table::RunsByDayReopen,
        Table::DeadLetters,
        Table::DeadLettersByDay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Runs | Table::RunsReopen => "runs",
            Table::RunsByDay | Table::RunsByDayReopen => "runs_by_day",
            Table::RunsByWorkflow => "runs_by_workflow_day",
            Table::RunsByStatus | Table::RunsByStatusUnlist => "runs_by_status_day",
            Table::RunsByWorkflowStatus | Table::RunsByWorkflowStatusUnlist => {
                "runs_by_workflow_status_day"
            }
            Table::Steps => "steps",
            Table::Audit => "audit",
            Table::DeadLetters => "dead_letters",
            Table::DeadLettersByDay => "dead_letters_by_day",
        }
    }

    /// The statement; its bind markers are in the order the functions below push values.
    pub(super) fn cql(self, ks: &str) -> String {
        if let Some(cql) = index::cql(self, ks).or_else(|| super::dead_letters::cql(self, ks)) {
            return cql;
        }
        match self {
            Table::Runs => format!(
                "UPDATE {ks}.runs USING TTL ? AND TIMESTAMP ? SET workflow = ?, version = ?, \
                 status = ?, trigger_source = ?, scheduled_at = ?, started_at = ?, \
                 finished_at = ?, duration_ms = ?, input = ?, output = ?, error_class = ?, \
                 error_step = ?, error = ? WHERE tenant = ? AND run_id = ?"
            ),
            Table::RunsByDay => format!(
                "UPDATE {ks}.runs_by_day USING TTL ? AND TIMESTAMP ? SET workflow = ?, \
                 version = ?, status = ?, trigger_source = ?, finished_at = ?, duration_ms = ? \
                 WHERE tenant = ? AND day = ? AND started_at = ? AND run_id = ?"
            ),
            Table::Steps => format!(
                "UPDATE {ks}.steps USING TTL ? AND TIMESTAMP ? SET kind = ?, status = ?, \
                 connector = ?, started_at = ?, finished_at = ?, duration_ms = ?, \
                 output_bytes = ?, error_class = ?, error = ? WHERE tenant = ? AND run_id = ? \
                 AND step = ? AND iteration = ? AND attempt = ?"
            ),
            Table::RunsReopen => format!(
                "DELETE finished_at, duration_ms, output, error_class, error_step, error \
                 FROM {ks}.runs USING TIMESTAMP ? WHERE tenant = ? AND run_id = ?"
            ),
            Table::RunsByDayReopen => format!(
                "DELETE finished_at, duration_ms FROM {ks}.runs_by_day USING TIMESTAMP ? \
                 WHERE tenant = ? AND day = ? AND started_at = ? AND run_id = ?"
            ),
            Table::Audit => format!(
                "INSERT INTO {ks}.audit (tenant, day, at, event_id, actor, action, subject, \
                 detail, actor_tenant, request_id, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, \
                 ?, ?, ?) USING TTL ? AND TIMESTAMP ?"
            ),
            Table::RunsByWorkflow
            | Table::RunsByStatus
            | Table::RunsByStatusUnlist
            | Table::RunsByWorkflowStatus
            | Table::RunsByWorkflowStatusUnlist
            | Table::DeadLetters
            | Table::DeadLettersByDay => {
                unreachable!("index::cql and dead_letters::cql have these statements")
            }
        }
    }
}

pub type Values = Vec<MaybeUnset<CqlValue>>;

/// One statement to execute: which table and its bound values.
#[derive(Debug, Clone)]
pub struct Write {
    pub table: Table,
    pub values: Values,
}

pub(super) fn set(v: CqlValue) -> MaybeUnset<CqlValue> {
    MaybeUnset::Set(v)
}

pub(super) fn opt(v: Option<CqlValue>) -> MaybeUnset<CqlValue> {
    v.map_or(MaybeUnset::Unset, MaybeUnset::Set)
}

pub(super) fn text(s: impl Into<String>) -> CqlValue {
    CqlValue::Text(s.into())
}

pub(super) fn ts(at: DateTime<Utc>) -> CqlValue {
    CqlValue::Timestamp(CqlTimestamp(at.timestamp_millis()))
}

pub(super) fn day(at: DateTime<Utc>) -> CqlValue {
    CqlValue::Date(CqlDate::from(at.date_naive()))
}

fn json(v: &Value) -> CqlValue {
    text(v.to_string())
}

fn int(v: u32) -> CqlValue {
    CqlValue::Int(i32::try_from(v).unwrap_or(i32::MAX))
}

fn bigint(v: u64) -> CqlValue {
    CqlValue::BigInt(i64::try_from(v).unwrap_or(i64::MAX))
}

/// The UTC day a row of `runs_by_day` or `audit` belongs to.
pub fn utc_day(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive()
}

/// The writes of one event of the events topic.
pub fn event_writes(event: &Event, retention: &RetentionSettings) -> Vec<Write> {
    match event {
        Event::Run(e) if e.status.is_terminal() => run_finished(e, retention),
        Event::Run(e) => run_started(e, retention),
        Event::Step(e) => vec![step(e, retention)],
        // Ingest cleared the run's rows in the store before it published the marker,
        // which is only for the Parquet history: there is nothing left to write here.
        Event::RunErased(_) => Vec::new(),
    }
}

/// `running`: the run's row and its entry in the day's list. A redriven run's event
/// carries the run's first start (`started_at`), which keeps its keys; its last end is
/// cleared, with the redrive's newer timestamp.
pub fn run_started(e: &RunEvent, retention: &RetentionSettings) -> Vec<Write> {
    let redriven = e.started_at.is_some();
    let started = e.started_at.unwrap_or(e.at);
    let ttl = set(CqlValue::Int(retention.ttl_secs(e.tenant.as_str())));
    let stamp = set(CqlValue::BigInt(write_timestamp(e.at, run_rank(e.status))));
    let source = e.source.map(|s| text(trigger_source(s)));
    let runs = vec![
        ttl.clone(),
        stamp.clone(),
        set(text(e.workflow.as_str())),
        set(int(e.version)),
        set(text(e.status.as_str())),
        opt(source.clone()),
        opt(e.scheduled_at.map(ts)),
        set(ts(started)),
        MaybeUnset::Unset,
        MaybeUnset::Unset,
        opt(e.input.as_ref().map(json)),
        MaybeUnset::Unset,
        MaybeUnset::Unset,
        MaybeUnset::Unset,
        MaybeUnset::Unset,
        set(text(e.tenant.as_str())),
        set(CqlValue::Uuid(e.run.as_uuid())),
    ];
    let by_day = vec![
        ttl,
        stamp,
        set(text(e.workflow.as_str())),
        set(int(e.version)),
        set(text(e.status.as_str())),
        opt(source),
        MaybeUnset::Unset,
        MaybeUnset::Unset,
        set(text(e.tenant.as_str())),
        set(day(started)),
        set(ts(started)),
        set(CqlValue::Uuid(e.run.as_uuid())),
    ];
    let listed = Listed {
        ttl: by_day[0].clone(),
        stamp: by_day[1].clone(),
        started_at: started,
        source: by_day[5].clone(),
        finished_at: MaybeUnset::Unset,
        duration: MaybeUnset::Unset,
    };
    let mut writes = vec![
        Write {
            table: Table::Runs,
            values: runs,
        },
        Write {
            table: Table::RunsByDay,
            values: by_day,
        },
    ];
    if redriven {
        let stamp = by_day_stamp(e);
        writes.push(Write {
            table: Table::RunsReopen,
            values: vec![
                stamp.clone(),
                set(text(e.tenant.as_str())),
                set(CqlValue::Uuid(e.run.as_uuid())),
            ],
        });
        writes.push(Write {
            table: Table::RunsByDayReopen,
            values: vec![
                stamp,
                set(text(e.tenant.as_str())),
                set(day(started)),
                set(ts(started)),
                set(CqlValue::Uuid(e.run.as_uuid())),
            ],
        });
    }
    writes.extend(index::run_index(e, listed));
    writes
}

fn by_day_stamp(e: &RunEvent) -> MaybeUnset<CqlValue> {
    set(CqlValue::BigInt(write_timestamp(e.at, run_rank(e.status))))
}

/// A terminal status. Without `started_at` (a run cancelled while queued) there is no
/// entry in the day's list to update, only the run's row.
pub fn run_finished(e: &RunEvent, retention: &RetentionSettings) -> Vec<Write> {
    let ttl = set(CqlValue::Int(retention.ttl_secs(e.tenant.as_str())));
    let stamp = set(CqlValue::BigInt(write_timestamp(e.at, run_rank(e.status))));
    let duration = e
        .started_at
        .map(|s| CqlValue::BigInt((e.at - s).num_milliseconds()));
    let runs = vec![
        ttl.clone(),
        stamp.clone(),
        set(text(e.workflow.as_str())),
        set(int(e.version)),
        set(text(e.status.as_str())),
        opt(e.source.map(|s| text(trigger_source(s)))),
        opt(e.scheduled_at.map(ts)),
        opt(e.started_at.map(ts)),
        set(ts(e.at)),
        opt(duration.clone()),
        opt(e.input.as_ref().map(json)),
        opt(e.output.as_ref().map(json)),
        opt(e.error.as_ref().map(|f| text(f.class.as_str()))),
        opt(e
            .error
            .as_ref()
            .and_then(|f| f.step.as_ref())
            .map(|s| text(s.as_str()))),
        opt(e.error.as_ref().map(|f| text(f.message.as_str()))),
        set(text(e.tenant.as_str())),
        set(CqlValue::Uuid(e.run.as_uuid())),
    ];
    let mut writes = vec![Write {
        table: Table::Runs,
        values: runs,
    }];
    if let Some(started_at) = e.started_at {
        let listed = Listed {
            ttl: ttl.clone(),
            stamp: stamp.clone(),
            started_at,
            source: MaybeUnset::Unset,
            finished_at: set(ts(e.at)),
            duration: opt(duration.clone()),
        };
        writes.push(Write {
            table: Table::RunsByDay,
            values: vec![
                ttl,
                stamp,
                set(text(e.workflow.as_str())),
                set(int(e.version)),
                set(text(e.status.as_str())),
                MaybeUnset::Unset,
                set(ts(e.at)),
                opt(duration),
                set(text(e.tenant.as_str())),
                set(day(started_at)),
                set(ts(started_at)),
                set(CqlValue::Uuid(e.run.as_uuid())),
            ],
        });
        writes.extend(index::run_index(e, listed));
    }
    writes
}

/// A step's row: `started` opens it, `waiting` only moves the status, an outcome
/// closes it.
pub fn step(e: &StepEvent, retention: &RetentionSettings) -> Write {
    let ttl = set(CqlValue::Int(retention.ttl_secs(e.tenant.as_str())));
    let stamp = set(CqlValue::BigInt(write_timestamp(e.at, step_rank(e.status))));
    let unset = || MaybeUnset::Unset;
    let (started_at, finished_at, duration, bytes, class, error) = match e.status {
        StepStatus::Started => (set(ts(e.at)), unset(), unset(), unset(), unset(), unset()),
        StepStatus::Waiting => (unset(), unset(), unset(), unset(), unset(), unset()),
        StepStatus::Succeeded
        | StepStatus::Failed
        | StepStatus::Retrying
        | StepStatus::TimedOut
        | StepStatus::Cancelled => (
            unset(),
            set(ts(e.at)),
            opt(e.duration_ms.map(bigint)),
            opt(e.output_bytes.map(bigint)),
            opt(e.error.as_ref().map(|f| text(f.class.as_str()))),
            opt(e.error.as_ref().map(|f| text(f.message.as_str()))),
        ),
    };
    let iteration = e
        .iteration
        .map_or(-1, |i| i64::try_from(i).unwrap_or(i64::MAX));
    Write {
        table: Table::Steps,
        values: vec![
            ttl,
            stamp,
            set(text(e.kind.as_str())),
            set(text(e.status.as_str())),
            opt(e.connector.as_deref().map(text)),
            started_at,
            finished_at,
            duration,
            bytes,
            class,
            error,
            set(text(e.tenant.as_str())),
            set(CqlValue::Uuid(e.run.as_uuid())),
            set(text(e.step.as_str())),
            set(CqlValue::BigInt(iteration)),
            set(int(e.attempt)),
        ],
    }
}

/// An audit row, written whole by its one event.
pub fn audit(e: &AuditEvent, retention: &RetentionSettings) -> Write {
    let detail = (!e.detail.is_null()).then(|| json(&e.detail));
    Write {
        table: Table::Audit,
        values: vec![
            set(text(e.tenant.as_str())),
            set(day(e.at)),
            set(ts(e.at)),
            set(CqlValue::Uuid(e.id)),
            set(text(e.actor.as_str())),
            set(text(e.action.as_str())),
            set(text(e.subject.as_str())),
            opt(detail),
            opt(e.actor_tenant.as_ref().map(|t| text(t.as_str()))),
            opt(e.request_id.as_deref().map(text)),
            opt(e.outcome.as_deref().map(text)),
            set(CqlValue::Int(retention.ttl_secs(e.tenant.as_str()))),
            set(CqlValue::BigInt(write_timestamp(e.at, 0))),
        ],
    }
}

/// The serde name of a trigger source, as stored.
fn trigger_source(s: aiq_topics::TriggerSource) -> String {
    match serde_json::to_value(s) {
        Ok(Value::String(name)) => name,
        _ => format!("{s:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiq_topics::{RunId, RunStatus, TenantId, WorkflowId};

    fn run(status: RunStatus, started_at: Option<DateTime<Utc>>) -> RunEvent {
        let tenant = TenantId::new("acme").unwrap();
        let workflow = WorkflowId::new("w").unwrap();
        RunEvent {
            run: RunId::from_idempotency_key(&tenant, &workflow, "k"),
            tenant,
            workflow,
            version: 3,
            status,
            at: DateTime::from_timestamp(86_400 * 2 + 5, 0).unwrap(),
            input: None,
            output: None,
            error: None,
            started_at,
            source: Some(aiq_topics::TriggerSource::SubWorkflow),
            scheduled_at: None,
        }
    }

    #[test]
    fn every_write_binds_as_many_values_as_its_statement_has_markers() {
        let r = RetentionSettings::default();
        let started = DateTime::from_timestamp(86_400, 0);
        let mut writes = run_started(&run(RunStatus::Running, None), &r);
        writes.extend(run_finished(&run(RunStatus::Failed, started), &r));
        for w in &writes {
            let markers = w.table.cql("ks").matches('?').count();
            assert_eq!(markers, w.values.len(), "{:?}", w.table);
        }
        // running: runs, runs_by_day and its three index rows; failed: the same and
        // the two deletes of its key under `running`.
        assert_eq!(writes.len(), 12);
    }

    #[test]
    fn a_terminal_status_moves_the_key_and_deletes_it_under_running_with_its_stamp() {
        let r = RetentionSettings::default();
        let started = DateTime::from_timestamp(86_400, 0);
        let running = run_started(&run(RunStatus::Running, None), &r);
        let tables: Vec<Table> = running.iter().map(|w| w.table).collect();
        assert_eq!(
            tables,
            [
                Table::Runs,
                Table::RunsByDay,
                Table::RunsByWorkflow,
                Table::RunsByStatus,
                Table::RunsByWorkflowStatus
            ]
        );
        let failed = run(RunStatus::Failed, started);
        let writes = run_finished(&failed, &r);
        let stamp = write_timestamp(failed.at, run_rank(RunStatus::Failed));
        let find = |t: Table| writes.iter().find(|w| w.table == t).unwrap();
        let listed = find(Table::RunsByStatus);
        assert!(matches!(&listed.values[1], MaybeUnset::Set(v) if *v == text("failed")));
        assert!(matches!(&listed.values[2], MaybeUnset::Set(v) if *v == day(started.unwrap())));
        let unlist = find(Table::RunsByStatusUnlist);
        assert!(matches!(&unlist.values[0], MaybeUnset::Set(CqlValue::BigInt(t)) if *t == stamp));
        assert!(matches!(&unlist.values[2], MaybeUnset::Set(v) if *v == text("running")));
        let unlist_both = find(Table::RunsByWorkflowStatusUnlist);
        assert!(matches!(&unlist_both.values[2], MaybeUnset::Set(v) if *v == text("w")));
        assert!(matches!(&unlist_both.values[3], MaybeUnset::Set(v) if *v == text("running")));
        let running_stamp = write_timestamp(failed.at, run_rank(RunStatus::Running));
        assert!(stamp > running_stamp);
    }

    #[test]
    fn a_run_cancelled_while_queued_writes_only_its_row_without_tombstones() {
        let r = RetentionSettings::default();
        let writes = run_finished(&run(RunStatus::Cancelled, None), &r);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].table, Table::Runs);
        assert!(
            writes[0]
                .values
                .iter()
                .all(|v| !matches!(v, MaybeUnset::Set(CqlValue::Empty)))
        );
        // started_at, duration_ms, output and the error columns stay unset.
        assert!(matches!(writes[0].values[7], MaybeUnset::Unset));
        assert!(matches!(writes[0].values[9], MaybeUnset::Unset));
        assert_eq!(
            trigger_source(aiq_topics::TriggerSource::SubWorkflow),
            "sub_workflow"
        );
    }

    #[test]
    fn the_day_of_a_finished_run_is_the_day_it_started() {
        let r = RetentionSettings::default();
        let started = DateTime::from_timestamp(86_400 - 1, 0);
        let writes = run_finished(&run(RunStatus::Succeeded, started), &r);
        let by_day = &writes[1].values;
        assert!(matches!(&by_day[9], MaybeUnset::Set(v) if *v == day(started.unwrap())));
        assert!(matches!(
            &by_day[7],
            MaybeUnset::Set(CqlValue::BigInt(86_406_000))
        ));
    }

    #[test]
    fn an_erasure_marker_writes_nothing_to_the_store() {
        let e = run(RunStatus::Failed, None);
        let day = e.at.date_naive();
        let marker = Event::RunErased(aiq_topics::RunErased {
            tenant: e.tenant,
            run: e.run,
            at: e.at,
            from: day,
            to: day,
        });
        assert!(event_writes(&marker, &RetentionSettings::default()).is_empty());
    }
}
