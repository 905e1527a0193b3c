//! The listing indexes of a run: `runs_by_workflow_day`, `runs_by_status_day` and
//! `runs_by_workflow_status_day`, written with every write of `runs_by_day` and keyed by
//! the same day and start instant.
//!
//! A run's workflow never changes, so its row in `runs_by_workflow_day` is updated like
//! its row in `runs_by_day`. Its status does: `running` writes the run's key under
//! `running`; a terminal status writes it under that status and deletes it under
//! `running`, the delete carrying the terminal event's write timestamp. That timestamp
//! is larger than the `running` write's (see `stamp`), so a `running` replayed after the
//! terminal event lands under the tombstone and stays deleted, in whichever order the
//! two are written.

use chrono::{DateTime, Utc};
use scylla::value::{CqlValue, MaybeUnset};

use aiq_topics::{RunEvent, RunStatus};

use super::rows::{Table, Write, day, set, text, ts};

/// The statement of an index table; `None` for the other tables.
pub(super) fn cql(table: Table, ks: &str) -> Option<String> {
    Some(match table {
        Table::RunsByWorkflow => format!(
            "UPDATE {ks}.runs_by_workflow_day USING TTL ? AND TIMESTAMP ? SET version = ?, \
             status = ?, trigger_source = ?, finished_at = ?, duration_ms = ? \
             WHERE tenant = ? AND workflow = ? AND day = ? AND started_at = ? AND run_id = ?"
        ),
        Table::RunsByStatus => format!(
            "INSERT INTO {ks}.runs_by_status_day (tenant, status, day, started_at, run_id) \
             VALUES (?, ?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?"
        ),
        Table::RunsByStatusUnlist => format!(
            "DELETE FROM {ks}.runs_by_status_day USING TIMESTAMP ? WHERE tenant = ? \
             AND status = ? AND day = ? AND started_at = ? AND run_id = ?"
        ),
        Table::RunsByWorkflowStatus => format!(
            "INSERT INTO {ks}.runs_by_workflow_status_day (tenant, workflow, status, day, \
             started_at, run_id) VALUES (?, ?, ?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?"
        ),
        Table::RunsByWorkflowStatusUnlist => format!(
            "DELETE FROM {ks}.runs_by_workflow_status_day USING TIMESTAMP ? WHERE \
             tenant = ? AND workflow = ? AND status = ? AND day = ? AND started_at = ? \
             AND run_id = ?"
        ),
        Table::Runs
        | Table::RunsByDay
        | Table::Steps
        | Table::Audit
        | Table::RunsReopen
        | Table::RunsByDayReopen
        | Table::DeadLetters
        | Table::DeadLettersByDay => return None,
    })
}

/// What the index rows of one run event hold beside its keys.
pub(super) struct Listed {
    pub ttl: MaybeUnset<CqlValue>,
    pub stamp: MaybeUnset<CqlValue>,
    pub started_at: DateTime<Utc>,
    pub source: MaybeUnset<CqlValue>,
    pub finished_at: MaybeUnset<CqlValue>,
    pub duration: MaybeUnset<CqlValue>,
}

/// The index writes of a run event whose run has started.
pub(super) fn run_index(e: &RunEvent, l: Listed) -> Vec<Write> {
    let key = |status: RunStatus| {
        [
            set(text(status.as_str())),
            set(day(l.started_at)),
            set(ts(l.started_at)),
            set(CqlValue::Uuid(e.run.as_uuid())),
        ]
    };
    let tenant = || set(text(e.tenant.as_str()));
    let workflow = || set(text(e.workflow.as_str()));
    let by_workflow = vec![
        l.ttl.clone(),
        l.stamp.clone(),
        set(CqlValue::Int(i32::try_from(e.version).unwrap_or(i32::MAX))),
        set(text(e.status.as_str())),
        l.source,
        l.finished_at,
        l.duration,
        tenant(),
        workflow(),
        set(day(l.started_at)),
        set(ts(l.started_at)),
        set(CqlValue::Uuid(e.run.as_uuid())),
    ];
    let mut by_status = vec![tenant()];
    by_status.extend(key(e.status));
    by_status.extend([l.ttl.clone(), l.stamp.clone()]);
    let mut by_both = vec![tenant(), workflow()];
    by_both.extend(key(e.status));
    by_both.extend([l.ttl, l.stamp.clone()]);
    let mut writes = vec![
        Write {
            table: Table::RunsByWorkflow,
            values: by_workflow,
        },
        Write {
            table: Table::RunsByStatus,
            values: by_status,
        },
        Write {
            table: Table::RunsByWorkflowStatus,
            values: by_both,
        },
    ];
    if e.status.is_terminal() {
        let mut unlist = vec![l.stamp.clone(), tenant()];
        unlist.extend(key(RunStatus::Running));
        let mut unlist_both = vec![l.stamp, tenant(), workflow()];
        unlist_both.extend(key(RunStatus::Running));
        writes.push(Write {
            table: Table::RunsByStatusUnlist,
            values: unlist,
        });
        writes.push(Write {
            table: Table::RunsByWorkflowStatusUnlist,
            values: unlist_both,
        });
    }
    writes
}
