//! Events into warm-tier files, one file per (table, tenant, day) and offset window.

use std::collections::{BTreeMap, HashMap};

use aiq_history_store::{HistoryFiles, ObjectPath};
use aiq_sql::layout::{FileName, Table, Tier, day_key};
use aiq_topics::{AuditEvent, Event, RunErased};
use chrono::{NaiveDate, Utc};

use super::covered::add_missing;
use super::files::{data_files, warm_properties, write_batch};
use super::rows::{Row, Rows};
use super::{ParquetError, ParquetSettings};

/// Writes run and step events as Parquet files whose names follow from the records alone.
///
/// Each events-topic partition's offsets are cut into fixed windows `[k*W, (k+1)*W)`; the
/// rows of a partition's open window stay in memory until a later window begins, and
/// every `flush` rewrites the open window's files whole. A replay from
/// [`resume_offset`](Self::resume_offset) therefore rewrites the same files with the same
/// bytes instead of adding copies. A window that compaction already merged into a wider
/// file is not written again; rows that file lacks are added to it instead.
///
/// Memory: at most `window_offsets` rows per assigned partition (one open window each),
/// so roughly `partitions × window_offsets × row size`; a step row is about 200 bytes
/// plus its strings, which makes the default 50 000-offset window some 10–20 MB per
/// partition. A window that `add` closes is written at once and dropped; only when that
/// write fails is it kept (until `flush` succeeds or the partition is revoked).
///
/// Not thread-safe by design: one writer per consumer, driven from one thread.
pub struct ParquetWriter {
    files: HistoryFiles,
    window: i64,
    open: HashMap<i32, Window>,
    /// Windows that `add` closed but could not write; `flush` retries them first.
    sealed: Vec<(i32, Window)>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    table: Table,
    tenant: String,
    date: NaiveDate,
}

struct Group {
    rows: Rows,
    /// Holds rows not yet in the group's file.
    dirty: bool,
    /// The window's own file is known to be the one to write: the group's day is not
    /// archived and no compacted file covers the window. Only set for a day compaction
    /// cannot touch yet (see [`uncompactable`]), so that later flushes of the window
    /// list nothing: object-store listings are slow and billed.
    own_file: bool,
}

struct Window {
    index: i64,
    groups: BTreeMap<GroupKey, Group>,
}

impl Window {
    fn new(index: i64) -> Window {
        Window {
            index,
            groups: BTreeMap::new(),
        }
    }
}

impl ParquetWriter {
    pub fn new(settings: &ParquetSettings) -> Result<ParquetWriter, ParquetError> {
        settings.validate()?;
        Ok(ParquetWriter {
            files: settings.files()?,
            window: settings.window_offsets,
            open: HashMap::new(),
            sealed: Vec::new(),
        })
    }

    /// Where to resume consuming a partition whose committed offset is `committed`: the
    /// start of its window, so that the window's files are rebuilt whole.
    pub fn resume_offset(&self, committed: i64) -> i64 {
        committed.div_euclid(self.window) * self.window
    }

    /// Adds the event at `offset` of `partition`. An offset in another window than the
    /// partition's open one first writes the open window's files (its last state). A
    /// replay must restart at a window start ([`resume_offset`](Self::resume_offset)):
    /// the rows of a window are exactly the ones added since it opened.
    ///
    /// A [`RunErased`] marker becomes no row: it is [`erase_run`](Self::erase_run)
    /// (the files already written are [`scrub_run`](super::scrub_run)'s).
    pub fn add(&mut self, partition: i32, offset: i64, event: &Event) {
        let (row, at) = match event {
            Event::Run(e) => (Row::from_run(offset, e), e.at),
            Event::Step(e) => (Row::from_step(offset, e), e.at),
            Event::RunErased(e) => {
                self.erase_run(e);
                return;
            }
        };
        self.add_row(partition, offset, row, event.tenant().as_str(), at);
    }

    /// Clears the error messages of the run `e.run` from the rows still in memory (open
    /// windows and closed ones waiting for a retried write), so that no later flush
    /// writes them back; the groups that changed are rewritten by the next flush.
    /// Returns how many rows changed. The files already written are
    /// [`scrub_run`](super::scrub_run)'s.
    pub fn erase_run(&mut self, e: &RunErased) -> usize {
        let run_id = e.run.to_string();
        let tenant = e.tenant.as_str();
        let windows = self
            .open
            .values_mut()
            .chain(self.sealed.iter_mut().map(|(_, w)| w));
        let mut cleared = 0;
        for window in windows {
            for (_, group) in window.groups.iter_mut().filter(|(k, _)| {
                k.tenant == tenant && matches!(k.table, Table::Runs | Table::Steps)
            }) {
                let n = group.rows.clear_run_messages(&run_id);
                if n > 0 {
                    group.dirty = true;
                    cleared += n;
                }
            }
        }
        cleared
    }

    /// Adds the audit event at `offset` of `partition` (of the audit topic: a writer
    /// takes the records of one topic).
    pub fn add_audit(&mut self, partition: i32, offset: i64, event: &AuditEvent) {
        let row = Row::from_audit(offset, event);
        self.add_row(partition, offset, row, event.tenant.as_str(), event.at);
    }

    fn add_row(
        &mut self,
        partition: i32,
        offset: i64,
        row: Row,
        tenant: &str,
        at: chrono::DateTime<Utc>,
    ) {
        if offset < 0 {
            tracing::warn!(
                partition,
                offset,
                "parquet: ignored an event with a negative offset"
            );
            return;
        }
        let index = offset.div_euclid(self.window);
        let window = self
            .open
            .entry(partition)
            .or_insert_with(|| Window::new(index));
        if window.index != index {
            let closed = std::mem::replace(window, Window::new(index));
            self.close(partition, closed);
        }
        let table = row.table();
        let key = GroupKey {
            table,
            tenant: tenant.to_owned(),
            date: at.date_naive(),
        };
        let Some(window) = self.open.get_mut(&partition) else {
            return;
        };
        let group = window.groups.entry(key).or_insert_with(|| Group {
            rows: Rows::new(table),
            dirty: true,
            own_file: false,
        });
        group.rows.insert(row);
        group.dirty = true;
    }

    /// Writes every file that changed since the last flush: windows closed by `add`
    /// whose write failed, then each partition's open window. After it returns `Ok`,
    /// every added event is durable on disk.
    pub fn flush(&mut self) -> Result<(), ParquetError> {
        while let Some((partition, window)) = self.sealed.first_mut() {
            write_window(&self.files, self.window, *partition, window)?;
            self.sealed.remove(0);
        }
        let mut partitions: Vec<i32> = self.open.keys().copied().collect();
        partitions.sort_unstable();
        for p in partitions {
            if let Some(window) = self.open.get_mut(&p) {
                write_window(&self.files, self.window, p, window)?;
            }
        }
        Ok(())
    }

    /// Forgets a partition this consumer no longer owns, unwritten rows included: its
    /// new owner replays them from the committed offset's window.
    pub fn revoke(&mut self, partition: i32) {
        self.open.remove(&partition);
        self.sealed.retain(|(p, _)| *p != partition);
    }

    fn close(&mut self, partition: i32, mut window: Window) {
        if let Err(e) = write_window(&self.files, self.window, partition, &mut window) {
            tracing::warn!(partition, error = %e, "parquet: a closed window's files were not written; flush retries");
            self.sealed.push((partition, window));
        }
    }
}

fn write_window(
    files: &HistoryFiles,
    size: i64,
    partition: i32,
    window: &mut Window,
) -> Result<(), ParquetError> {
    let name = FileName {
        partition,
        first: window.index.saturating_mul(size),
        end: window.index.saturating_add(1).saturating_mul(size),
    };
    for (key, group) in window.groups.iter_mut().filter(|(_, g)| g.dirty) {
        group.own_file = write_group(files, name, key, &group.rows, group.own_file)?;
        group.dirty = false;
    }
    Ok(())
}

/// Whether compaction (which takes days at least a day old) cannot reach `date` yet,
/// with an hour to spare for clocks that disagree around midnight.
fn uncompactable(date: NaiveDate) -> bool {
    let now = Utc::now();
    (now - chrono::Duration::hours(1)).date_naive() == date && now.date_naive() == date
}

/// Writes a group's rows; returns whether the window's own file can be written again
/// without looking (see `Group::own_file`).
fn write_group(
    files: &HistoryFiles,
    name: FileName,
    key: &GroupKey,
    rows: &Rows,
    own_file: bool,
) -> Result<bool, ParquetError> {
    let warm = ObjectPath::from(day_key(Tier::Warm, key.table, &key.tenant, key.date));
    if !own_file {
        let archive = ObjectPath::from(day_key(Tier::Archive, key.table, &key.tenant, key.date));
        let covers = |f: &FileName| f.covers(name.partition, name.first, name.end);
        // An archived day is past any replay Kafka still holds: its files are final.
        if data_files(files, &archive)?.iter().any(|(f, _)| covers(f)) {
            return Ok(false);
        }
        // A compacted file holds this window: writing the window's own file would make
        // copies of its rows.
        if let Some((_, path)) = data_files(files, &warm)?
            .into_iter()
            .find(|(f, _)| *f != name && covers(f))
        {
            add_missing(files, &path, key.table, name, rows)?;
            return Ok(false);
        }
    }
    let path = warm.join(name.to_string());
    let batch = rows
        .to_batch(name.partition)
        .map_err(ParquetError::arrow(&path))?;
    write_batch(files, &path, &batch, warm_properties())?;
    Ok(uncompactable(key.date))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::files::open_reader;
    use aiq_history_store::HistoryRoot;
    use aiq_topics::{
        ErrorClass, Failure, RunEvent, RunId, RunStatus, StepEvent, StepId, StepStatus, TenantId,
        WorkflowId,
    };
    use arrow_array::{Array, StringArray};
    use chrono::{DateTime, NaiveDate};

    fn at() -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(2026, 3, 4)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
    }

    fn failure(message: &str) -> Option<Failure> {
        Some(Failure {
            class: ErrorClass::Retryable,
            message: message.into(),
            step: None,
        })
    }

    fn run(tenant: &str, run: RunId, message: &str) -> Event {
        Event::Run(RunEvent {
            tenant: TenantId::new(tenant).unwrap(),
            run,
            workflow: WorkflowId::new("wf").unwrap(),
            version: 1,
            status: RunStatus::Failed,
            at: at(),
            input: None,
            output: None,
            error: failure(message),
            started_at: None,
            source: None,
            scheduled_at: None,
        })
    }

    fn step(tenant: &str, run: RunId, message: &str) -> Event {
        Event::Step(StepEvent {
            tenant: TenantId::new(tenant).unwrap(),
            run,
            step: StepId::new("s").unwrap(),
            attempt: 1,
            status: StepStatus::Failed,
            at: at(),
            kind: "task".into(),
            connector: None,
            error: failure(message),
            iteration: None,
            duration_ms: None,
            output_bytes: None,
        })
    }

    fn erased(tenant: &str, run: RunId) -> RunErased {
        RunErased {
            tenant: TenantId::new(tenant).unwrap(),
            run,
            at: at(),
            from: at().date_naive(),
            to: at().date_naive(),
        }
    }

    fn writer(dir: &tempfile::TempDir, window: i64) -> ParquetWriter {
        ParquetWriter::new(&ParquetSettings {
            root: HistoryRoot::from(dir.path()),
            window_offsets: window,
            ..Default::default()
        })
        .unwrap()
    }

    /// Every group's (table, tenant, messages), open windows then sealed ones.
    fn messages(w: &ParquetWriter) -> Vec<(Table, String, Vec<Option<String>>)> {
        let mut partitions: Vec<_> = w.open.iter().collect();
        partitions.sort_by_key(|(p, _)| **p);
        let windows = partitions
            .into_iter()
            .map(|(_, w)| w)
            .chain(w.sealed.iter().map(|(_, w)| w));
        let mut out = Vec::new();
        for window in windows {
            for (k, g) in &window.groups {
                let batch = g.rows.to_batch(0).unwrap();
                let m = batch
                    .column_by_name("error_message")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
                    .iter()
                    .map(|m| m.map(str::to_owned))
                    .collect();
                out.push((k.table, k.tenant.clone(), m));
            }
        }
        out
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn erasing_a_run_clears_its_rows_in_open_and_sealed_windows_of_its_tenant_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir, 10);
        let (a, b) = (RunId::random(), RunId::random());
        // Partition 1's window goes to `sealed`, as after a failed write.
        w.add(1, 0, &step("acme", a, "sealed a"));
        w.add(1, 1, &step("acme", b, "sealed b"));
        let window = w.open.remove(&1).unwrap();
        w.sealed.push((1, window));
        w.add(0, 0, &run("acme", a, "run a"));
        w.add(0, 1, &step("acme", a, "step a"));
        w.add(0, 2, &run("acme", b, "run b"));
        // Another tenant with the same run id (ids are unique; the tenant must still
        // bound the erasure).
        w.add(0, 3, &run("globex", a, "run a of globex"));
        for g in w.open.values_mut().flat_map(|w| w.groups.values_mut()) {
            g.dirty = false;
        }
        for (_, window) in &mut w.sealed {
            for g in window.groups.values_mut() {
                g.dirty = false;
            }
        }

        assert_eq!(w.erase_run(&erased("acme", a)), 3);
        assert_eq!(
            messages(&w),
            vec![
                (Table::Runs, "acme".into(), vec![None, some("run b")]),
                (Table::Runs, "globex".into(), vec![some("run a of globex")]),
                (Table::Steps, "acme".into(), vec![None]),
                (Table::Steps, "acme".into(), vec![None, some("sealed b")]),
            ]
        );
        let dirty = |w: &Window| -> Vec<bool> { w.groups.values().map(|g| g.dirty).collect() };
        assert_eq!(dirty(&w.open[&0]), vec![true, false, true]);
        assert_eq!(dirty(&w.sealed[0].1), vec![true]);
        // Nothing is left to clear: no group becomes dirty again.
        assert_eq!(w.erase_run(&erased("acme", a)), 0);
    }

    #[test]
    fn an_erasure_marker_added_as_an_event_becomes_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir, 10);
        let a = RunId::random();
        w.add(0, 0, &step("acme", a, "boom"));
        // In another window: had it counted as a row, it would close the open one.
        w.add(0, 25, &Event::RunErased(erased("acme", a)));
        assert_eq!(w.open[&0].index, 0);
        assert!(w.sealed.is_empty());
        assert_eq!(
            messages(&w),
            vec![(Table::Steps, "acme".into(), vec![None])]
        );
    }

    #[test]
    fn the_flush_after_an_erasure_writes_the_rows_without_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir, 10);
        let (a, b) = (RunId::random(), RunId::random());
        w.add(0, 0, &step("acme", a, "step a"));
        w.add(0, 1, &step("acme", b, "step b"));
        w.add(0, 2, &run("acme", a, "run a"));
        w.flush().unwrap();
        assert_eq!(w.erase_run(&erased("acme", a)), 2);
        w.flush().unwrap();

        let files = w.files.clone();
        let day = at().date_naive();
        let read = |table: Table| -> Vec<(String, Option<String>)> {
            let dir = ObjectPath::from(day_key(Tier::Warm, table, "acme", day));
            let found = data_files(&files, &dir).unwrap();
            assert_eq!(found.len(), 1);
            let mut out = Vec::new();
            for batch in open_reader(&files, &found[0].1).unwrap() {
                let batch = batch.unwrap();
                let col = |n: &str| {
                    batch
                        .column_by_name(n)
                        .unwrap()
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .unwrap()
                        .clone()
                };
                let (ids, m) = (col("run_id"), col("error_message"));
                for i in 0..batch.num_rows() {
                    let message = m.is_valid(i).then(|| m.value(i).to_owned());
                    out.push((ids.value(i).to_owned(), message));
                }
            }
            out
        };
        assert_eq!(
            read(Table::Steps),
            vec![(a.to_string(), None), (b.to_string(), some("step b"))]
        );
        assert_eq!(read(Table::Runs), vec![(a.to_string(), None)]);
    }
}
