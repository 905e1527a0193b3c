//! Events as table rows, and rows as Arrow batches of `Table::file_schema()`.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;

use aiq_sql::layout::Table;
use aiq_topics::{AuditEvent, RunEvent, StepEvent};
use arrow_array::builder::{
    Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::ArrowError;
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq)]
pub(super) struct RunRow {
    pub offset: i64,
    pub run_id: String,
    pub workflow: String,
    pub version: i32,
    pub status: &'static str,
    pub at: i64,
    pub started_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub source: Option<String>,
    pub scheduled_at: Option<i64>,
    pub error_class: Option<&'static str>,
    pub error_step: Option<String>,
    pub error_message: Option<String>,
    pub input_bytes: Option<i64>,
    pub output_bytes: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct StepRow {
    pub offset: i64,
    pub run_id: String,
    pub step: String,
    pub attempt: i32,
    pub iteration: Option<i64>,
    pub status: &'static str,
    pub at: i64,
    pub kind: String,
    pub connector: Option<String>,
    pub duration_ms: Option<i64>,
    pub output_bytes: Option<i64>,
    pub error_class: Option<&'static str>,
    pub error_message: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct AuditRow {
    pub offset: i64,
    pub event_id: String,
    pub at: i64,
    pub actor: String,
    pub action: &'static str,
    pub subject: String,
    pub detail: Option<String>,
    pub actor_tenant: Option<String>,
    pub request_id: Option<String>,
    pub outcome: Option<String>,
}

/// The rows of one file, kept in offset order with one row per offset.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Rows {
    Runs(Vec<RunRow>),
    Steps(Vec<StepRow>),
    Audit(Vec<AuditRow>),
}

/// One record as the row it becomes.
pub(super) enum Row {
    Run(RunRow),
    Step(StepRow),
    Audit(AuditRow),
}

impl Row {
    pub fn from_run(offset: i64, e: &RunEvent) -> Row {
        Row::Run(run_row(offset, e))
    }

    pub fn from_step(offset: i64, e: &StepEvent) -> Row {
        Row::Step(step_row(offset, e))
    }

    pub fn from_audit(offset: i64, e: &AuditEvent) -> Row {
        Row::Audit(AuditRow {
            offset,
            event_id: e.id.to_string(),
            at: micros(e.at),
            actor: e.actor.clone(),
            action: e.action.as_str(),
            subject: e.subject.clone(),
            detail: (!e.detail.is_null()).then(|| e.detail.to_string()),
            actor_tenant: e.actor_tenant.as_ref().map(|t| t.as_str().to_owned()),
            request_id: e.request_id.clone(),
            outcome: e.outcome.clone(),
        })
    }

    pub fn table(&self) -> Table {
        match self {
            Row::Run(_) => Table::Runs,
            Row::Step(_) => Table::Steps,
            Row::Audit(_) => Table::Audit,
        }
    }
}

impl Rows {
    pub fn new(table: Table) -> Rows {
        match table {
            Table::Runs => Rows::Runs(Vec::new()),
            Table::Steps => Rows::Steps(Vec::new()),
            Table::Audit => Rows::Audit(Vec::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Rows::Runs(v) => v.is_empty(),
            Rows::Steps(v) => v.is_empty(),
            Rows::Audit(v) => v.is_empty(),
        }
    }

    /// The rows whose offsets are not in `offsets`.
    pub fn without(&self, offsets: &HashSet<i64>) -> Rows {
        match self {
            Rows::Runs(v) => Rows::Runs(
                v.iter()
                    .filter(|r| !offsets.contains(&r.offset))
                    .cloned()
                    .collect(),
            ),
            Rows::Steps(v) => Rows::Steps(
                v.iter()
                    .filter(|r| !offsets.contains(&r.offset))
                    .cloned()
                    .collect(),
            ),
            Rows::Audit(v) => Rows::Audit(
                v.iter()
                    .filter(|r| !offsets.contains(&r.offset))
                    .cloned()
                    .collect(),
            ),
        }
    }

    /// Adds a row in offset order; a redelivered offset replaces its earlier row, so a
    /// replay into the same window adds no copies.
    pub fn insert(&mut self, row: Row) {
        match (self, row) {
            (Rows::Runs(v), Row::Run(r)) => insert_ordered(v, r, |r| r.offset),
            (Rows::Steps(v), Row::Step(r)) => insert_ordered(v, r, |r| r.offset),
            (Rows::Audit(v), Row::Audit(r)) => insert_ordered(v, r, |r| r.offset),
            // The group key holds the table, so a row always meets rows of its own kind.
            _ => debug_assert!(false, "a row was grouped under another table"),
        }
    }

    /// Clears the error message of every run or step row of the run `run_id` (the
    /// messages are the tables' only payloads; ids, times and classes stay); returns how
    /// many rows held one.
    pub fn clear_run_messages(&mut self, run_id: &str) -> usize {
        fn clear<'a>(messages: impl Iterator<Item = &'a mut Option<String>>) -> usize {
            messages.filter_map(Option::take).count()
        }
        match self {
            Rows::Runs(v) => clear(
                v.iter_mut()
                    .filter(|r| r.run_id == run_id)
                    .map(|r| &mut r.error_message),
            ),
            Rows::Steps(v) => clear(
                v.iter_mut()
                    .filter(|r| r.run_id == run_id)
                    .map(|r| &mut r.error_message),
            ),
            Rows::Audit(_) => 0,
        }
    }

    pub fn to_batch(&self, partition: i32) -> Result<RecordBatch, ArrowError> {
        match self {
            Rows::Runs(v) => runs_batch(v, partition),
            Rows::Steps(v) => steps_batch(v, partition),
            Rows::Audit(v) => audit_batch(v, partition),
        }
    }
}

fn insert_ordered<R>(rows: &mut Vec<R>, row: R, offset: impl Fn(&R) -> i64) {
    let o = offset(&row);
    match rows.last() {
        Some(last) if offset(last) >= o => match rows.binary_search_by_key(&o, &offset) {
            Ok(i) => rows[i] = row,
            Err(i) => rows.insert(i, row),
        },
        _ => rows.push(row),
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The length of a value's compact JSON, counted without building the string.
fn json_len(v: &serde_json::Value) -> i64 {
    struct Count(u64);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // A `Value` always serialises; a failure could only come from the writer, which has none.
    let _ = serde_json::to_writer(&mut c, v);
    saturating_i64(c.0)
}

fn source_name<T: serde::Serialize>(s: &T) -> Option<String> {
    match serde_json::to_value(s) {
        Ok(serde_json::Value::String(s)) => Some(s),
        _ => None,
    }
}

fn run_row(offset: i64, e: &RunEvent) -> RunRow {
    RunRow {
        offset,
        run_id: e.run.to_string(),
        workflow: e.workflow.as_str().to_owned(),
        version: i32::try_from(e.version).unwrap_or(i32::MAX),
        status: e.status.as_str(),
        at: micros(e.at),
        started_at: e.started_at.map(micros),
        duration_ms: e.started_at.map(|s| (e.at - s).num_milliseconds()),
        source: e.source.as_ref().and_then(source_name),
        scheduled_at: e.scheduled_at.map(micros),
        error_class: e.error.as_ref().map(|f| f.class.as_str()),
        error_step: e
            .error
            .as_ref()
            .and_then(|f| f.step.as_ref())
            .map(|s| s.as_str().to_owned()),
        error_message: e.error.as_ref().map(|f| f.message.clone()),
        input_bytes: e.input.as_ref().map(json_len),
        output_bytes: e.output.as_ref().map(json_len),
    }
}

fn step_row(offset: i64, e: &StepEvent) -> StepRow {
    StepRow {
        offset,
        run_id: e.run.to_string(),
        step: e.step.as_str().to_owned(),
        attempt: i32::try_from(e.attempt).unwrap_or(i32::MAX),
        iteration: e.iteration.map(saturating_i64),
        status: e.status.as_str(),
        at: micros(e.at),
        kind: e.kind.clone(),
        connector: e.connector.clone(),
        duration_ms: e.duration_ms.map(saturating_i64),
        output_bytes: e.output_bytes.map(saturating_i64),
        error_class: e.error.as_ref().map(|f| f.class.as_str()),
        error_message: e.error.as_ref().map(|f| f.message.clone()),
    }
}

fn text<'a>(n: usize, values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(n, n * 16);
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

fn int64(n: usize, values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    let mut b = Int64Builder::with_capacity(n);
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

fn int32(n: usize, values: impl Iterator<Item = Option<i32>>) -> ArrayRef {
    let mut b = Int32Builder::with_capacity(n);
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

fn ts(n: usize, values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

fn runs_batch(rows: &[RunRow], partition: i32) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let it = || rows.iter();
    let columns = vec![
        text(n, it().map(|r| Some(r.run_id.as_str()))),
        text(n, it().map(|r| Some(r.workflow.as_str()))),
        int32(n, it().map(|r| Some(r.version))),
        text(n, it().map(|r| Some(r.status))),
        ts(n, it().map(|r| Some(r.at))),
        ts(n, it().map(|r| r.started_at)),
        int64(n, it().map(|r| r.duration_ms)),
        text(n, it().map(|r| r.source.as_deref())),
        ts(n, it().map(|r| r.scheduled_at)),
        text(n, it().map(|r| r.error_class)),
        text(n, it().map(|r| r.error_step.as_deref())),
        text(n, it().map(|r| r.error_message.as_deref())),
        int64(n, it().map(|r| r.input_bytes)),
        int64(n, it().map(|r| r.output_bytes)),
        int32(n, it().map(|_| Some(partition))),
        int64(n, it().map(|r| Some(r.offset))),
    ];
    RecordBatch::try_new(Table::Runs.file_schema(), columns)
}

fn steps_batch(rows: &[StepRow], partition: i32) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let it = || rows.iter();
    let columns = vec![
        text(n, it().map(|r| Some(r.run_id.as_str()))),
        text(n, it().map(|r| Some(r.step.as_str()))),
        int32(n, it().map(|r| Some(r.attempt))),
        int64(n, it().map(|r| r.iteration)),
        text(n, it().map(|r| Some(r.status))),
        ts(n, it().map(|r| Some(r.at))),
        text(n, it().map(|r| Some(r.kind.as_str()))),
        text(n, it().map(|r| r.connector.as_deref())),
        int64(n, it().map(|r| r.duration_ms)),
        int64(n, it().map(|r| r.output_bytes)),
        text(n, it().map(|r| r.error_class)),
        text(n, it().map(|r| r.error_message.as_deref())),
        int32(n, it().map(|_| Some(partition))),
        int64(n, it().map(|r| Some(r.offset))),
    ];
    RecordBatch::try_new(Table::Steps.file_schema(), columns)
}

fn audit_batch(rows: &[AuditRow], partition: i32) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let it = || rows.iter();
    let columns = vec![
        text(n, it().map(|r| Some(r.event_id.as_str()))),
        ts(n, it().map(|r| Some(r.at))),
        text(n, it().map(|r| Some(r.actor.as_str()))),
        text(n, it().map(|r| Some(r.action))),
        text(n, it().map(|r| Some(r.subject.as_str()))),
        text(n, it().map(|r| r.detail.as_deref())),
        text(n, it().map(|r| r.actor_tenant.as_deref())),
        text(n, it().map(|r| r.request_id.as_deref())),
        text(n, it().map(|r| r.outcome.as_deref())),
        int32(n, it().map(|_| Some(partition))),
        int64(n, it().map(|r| Some(r.offset))),
    ];
    RecordBatch::try_new(Table::Audit.file_schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiq_topics::{
        ErrorClass, Failure, RunId, RunStatus, StepId, StepStatus, TenantId, TriggerSource,
        WorkflowId,
    };
    use arrow_array::{Array, Int64Array, StringArray};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    fn run_event() -> RunEvent {
        RunEvent {
            tenant: TenantId::new("acme").unwrap(),
            run: RunId::random(),
            workflow: WorkflowId::new("wf").unwrap(),
            version: 3,
            status: RunStatus::Failed,
            at: at(1_000),
            input: Some(serde_json::json!({"a": [1, 2]})),
            output: None,
            error: Some(Failure {
                class: ErrorClass::CircuitOpen,
                message: "open".into(),
                step: Some(StepId::new("fetch").unwrap()),
            }),
            started_at: Some(at(990)),
            source: Some(TriggerSource::SubWorkflow),
            scheduled_at: None,
        }
    }

    #[test]
    fn a_run_event_becomes_its_row() {
        let e = run_event();
        let r = run_row(7, &e);
        assert_eq!(r.run_id, e.run.as_uuid().hyphenated().to_string());
        assert_eq!(r.duration_ms, Some(10_000));
        assert_eq!(r.source.as_deref(), Some("sub_workflow"));
        assert_eq!(r.error_class, Some("circuit_open"));
        assert_eq!(r.error_step.as_deref(), Some("fetch"));
        assert_eq!(r.input_bytes, Some(r#"{"a":[1,2]}"#.len() as i64));
        assert_eq!(r.output_bytes, None);
        assert_eq!(r.status, "failed");
    }

    #[test]
    fn rows_stay_in_offset_order_with_one_row_per_offset() {
        let e = run_event();
        let mut rows = Rows::new(Table::Runs);
        for o in [5, 1, 9, 5, 3] {
            rows.insert(Row::from_run(o, &e));
        }
        let b = rows.to_batch(2).unwrap();
        assert_eq!(b.num_rows(), 4);
        let offsets = b
            .column_by_name("kafka_offset")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(offsets.values().to_vec(), vec![1, 3, 5, 9]);
        let source = b
            .column_by_name("source")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(source.value(0), "sub_workflow");
        assert_eq!(b.schema(), Table::Runs.file_schema());
        assert_eq!(b.column_by_name("scheduled_at").unwrap().null_count(), 4);
    }

    fn step_event(run: RunId, step: &str, message: Option<&str>) -> StepEvent {
        StepEvent {
            tenant: TenantId::new("acme").unwrap(),
            run,
            step: StepId::new(step).unwrap(),
            attempt: 1,
            status: StepStatus::Failed,
            at: at(1_000),
            kind: "task".into(),
            connector: None,
            error: message.map(|m| Failure {
                class: ErrorClass::Retryable,
                message: m.into(),
                step: None,
            }),
            iteration: None,
            duration_ms: Some(5),
            output_bytes: None,
        }
    }

    fn messages(rows: &Rows) -> Vec<Option<String>> {
        match rows {
            Rows::Runs(v) => v.iter().map(|r| r.error_message.clone()).collect(),
            Rows::Steps(v) => v.iter().map(|r| r.error_message.clone()).collect(),
            Rows::Audit(_) => Vec::new(),
        }
    }

    #[test]
    fn clearing_a_run_takes_only_its_messages_and_counts_the_rows_that_had_one() {
        let a = run_event();
        let b = RunEvent {
            run: RunId::random(),
            ..run_event()
        };
        let mut runs = Rows::new(Table::Runs);
        runs.insert(Row::from_run(1, &a));
        runs.insert(Row::from_run(2, &b));
        runs.insert(Row::from_run(
            3,
            &RunEvent {
                error: None,
                ..a.clone()
            },
        ));
        let before = runs.clone();
        assert_eq!(runs.clear_run_messages(&a.run.to_string()), 1);
        assert_eq!(messages(&runs), vec![None, Some("open".into()), None]);
        // Nothing but the message changed.
        let (Rows::Runs(now), Rows::Runs(was)) = (&runs, &before) else {
            panic!("runs rows");
        };
        assert_eq!(
            now[0],
            RunRow {
                error_message: None,
                ..was[0].clone()
            }
        );
        assert_eq!(now[0].error_class, Some("circuit_open"));
        assert_eq!(now[1..], was[1..]);
        // Idempotent.
        assert_eq!(runs.clear_run_messages(&a.run.to_string()), 0);

        let mut steps = Rows::new(Table::Steps);
        steps.insert(Row::from_step(1, &step_event(a.run, "s1", Some("x"))));
        steps.insert(Row::from_step(2, &step_event(b.run, "s1", Some("y"))));
        steps.insert(Row::from_step(3, &step_event(a.run, "s2", Some("z"))));
        steps.insert(Row::from_step(4, &step_event(a.run, "s3", None)));
        assert_eq!(steps.clear_run_messages(&a.run.to_string()), 2);
        assert_eq!(messages(&steps), vec![None, Some("y".into()), None, None]);
        assert_eq!(
            steps
                .to_batch(0)
                .unwrap()
                .column_by_name("error_message")
                .unwrap()
                .null_count(),
            3
        );
        assert_eq!(
            Rows::new(Table::Audit).clear_run_messages(&a.run.to_string()),
            0
        );
    }
}
