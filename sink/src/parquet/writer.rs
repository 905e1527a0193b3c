//! Events into warm-tier files, one file per (table, tenant, day) and offset window.

use std::collections::{BTreeMap, HashMap};

use aiq_history_store::{HistoryFiles, ObjectPath};
use aiq_sql::layout::{FileName, Table, Tier, day_key};
use aiq_topics::{AuditEvent, Event};
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
    pub fn add(&mut self, partition: i32, offset: i64, event: &Event) {
        let at = match event {
            Event::Run(e) => e.at,
            Event::Step(e) => e.at,
        };
        let row = Row::from_event(offset, event);
        self.add_row(partition, offset, row, event.tenant().as_str(), at);
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
