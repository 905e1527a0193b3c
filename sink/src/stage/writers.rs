//! The Parquet writers of the two topics whose records become history files: the events
//! topic (tables `runs` and `steps`) and the audit topic (table `audit`). One writer per
//! topic, because a writer's offset windows are those of one topic's partitions; both
//! use the same window size, so a partition of either resumes at the same window start.
//!
//! Run erasures (`RunErased` on the events topic) are applied in two parts: at once to
//! the rows in memory, and at the next flush to the files already written. The stage
//! commits an offset only after a flush succeeds, so a marker's offset is committed only
//! once its files are scrubbed; if the process dies first, the replay reads it again.

use std::collections::VecDeque;

use aiq_topics::{AuditEvent, Event, RunErased};
use prometheus::IntCounter;

use super::progress::Source;
use crate::parquet::{ParquetError, ParquetSettings, ParquetWriter, scrub_run};

pub struct Writers {
    settings: ParquetSettings,
    events: ParquetWriter,
    audit: ParquetWriter,
    /// Erasures whose files are not scrubbed yet, in arrival order, with the events
    /// partition each came from.
    erasures: VecDeque<(i32, RunErased)>,
    /// Counts the erasures scrubbed.
    erased_runs: IntCounter,
}

impl Writers {
    /// `erased_runs` counts the run erasures applied to the files.
    pub fn new(
        settings: &ParquetSettings,
        erased_runs: IntCounter,
    ) -> Result<Writers, ParquetError> {
        Ok(Writers {
            settings: settings.clone(),
            events: ParquetWriter::new(settings)?,
            audit: ParquetWriter::new(settings)?,
            erasures: VecDeque::new(),
            erased_runs,
        })
    }

    /// Whether `source`'s records are written to Parquet (and its partitions must be
    /// read again from their window's start).
    pub fn writes(source: Source) -> bool {
        matches!(source, Source::Events | Source::Audit)
    }

    /// See [`ParquetWriter::resume_offset`].
    pub fn resume_offset(&self, committed: i64) -> i64 {
        self.events.resume_offset(committed)
    }

    /// Adds an event of the events topic; a `RunErased` marker is
    /// [`erase_run`](Self::erase_run), so that no caller can skip its files.
    pub fn add_event(&mut self, partition: i32, offset: i64, event: &Event) {
        match event {
            Event::RunErased(e) => self.erase_run(partition, e),
            Event::Run(_) | Event::Step(_) => self.events.add(partition, offset, event),
        }
    }

    pub fn add_audit(&mut self, partition: i32, offset: i64, event: &AuditEvent) {
        self.audit.add_audit(partition, offset, event);
    }

    /// Erases a run read from `partition` of the events topic: clears its messages from
    /// the rows in memory now, and from the files at the next [`flush`](Self::flush).
    pub fn erase_run(&mut self, partition: i32, e: &RunErased) {
        let rows = self.events.erase_run(e);
        tracing::debug!(run = %e.run, rows, "parquet: run messages cleared from memory");
        self.erasures.push_back((partition, e.clone()));
    }

    /// Flushes both, then scrubs the files of every erasure received since the last
    /// flush. After `Ok` every added record is durable and every erasure applied; after
    /// an error the erasures not applied yet stay queued for the next flush.
    pub fn flush(&mut self) -> Result<(), ParquetError> {
        self.events.flush()?;
        self.audit.flush()?;
        // One per marker received: the queue is bounded by the records read between two
        // flushes.
        while let Some((_, e)) = self.erasures.front() {
            let r = scrub_run(&self.settings, e)?;
            self.erased_runs.inc();
            tracing::info!(
                run = %e.run,
                files_rewritten = r.files_rewritten,
                rows_cleared = r.rows_cleared,
                "run payloads cleared from the Parquet history"
            );
            self.erasures.pop_front();
        }
        Ok(())
    }

    /// Forgets a partition this consumer no longer owns, with its unapplied erasures:
    /// their offsets were not committed, so the new owner reads them again.
    pub fn revoke(&mut self, source: Source, partition: i32) {
        match source {
            Source::Events => {
                self.events.revoke(partition);
                self.erasures.retain(|(p, _)| *p != partition);
            }
            Source::Audit => self.audit.revoke(partition),
            Source::DeadLetters => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiq_history_store::{HistoryRoot, ObjectPath};
    use aiq_sql::layout::{FileName, Table, Tier, day_key};
    use aiq_topics::{ErrorClass, Failure, RunId, StepEvent, StepId, StepStatus, TenantId};
    use bytes::Bytes;
    use chrono::{DateTime, NaiveDate, Utc};

    fn at() -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(2026, 3, 4)
            .unwrap()
            .and_hms_opt(9, 0, 0)
            .unwrap()
            .and_utc()
    }

    fn step(run: RunId) -> Event {
        Event::Step(StepEvent {
            tenant: TenantId::new("acme").unwrap(),
            run,
            step: StepId::new("s").unwrap(),
            attempt: 1,
            status: StepStatus::Failed,
            at: at(),
            kind: "task".into(),
            connector: None,
            error: Some(Failure {
                class: ErrorClass::Retryable,
                message: "sealed".into(),
                step: None,
            }),
            iteration: None,
            duration_ms: None,
            output_bytes: None,
        })
    }

    fn erased(run: RunId) -> RunErased {
        RunErased {
            tenant: TenantId::new("acme").unwrap(),
            run,
            at: at(),
            from: at().date_naive(),
            to: at().date_naive(),
        }
    }

    fn setup() -> (tempfile::TempDir, ParquetSettings, Writers, IntCounter) {
        let dir = tempfile::tempdir().unwrap();
        let settings = ParquetSettings {
            root: HistoryRoot::from(dir.path()),
            window_offsets: 10,
            ..Default::default()
        };
        let counter = IntCounter::new("erased_runs", "test").unwrap();
        let writers = Writers::new(&settings, counter.clone()).unwrap();
        (dir, settings, writers, counter)
    }

    #[test]
    fn a_failed_scrub_stays_queued_until_a_flush_applies_it() {
        let (_dir, settings, mut w, counter) = setup();
        let files = settings.files().unwrap();
        let a = RunId::random();
        w.add_event(0, 0, &step(a));
        w.flush().unwrap();
        // A file the scrub cannot read, in a folder the run's day holds.
        let day = ObjectPath::from(day_key(Tier::Warm, Table::Steps, "acme", at().date_naive()));
        let name = FileName {
            partition: 9,
            first: 0,
            end: 10,
        };
        let broken = day.clone().join(name.to_string());
        files
            .put(&broken, Bytes::from_static(b"not parquet"), None)
            .unwrap();

        // Through `add_event`: the marker is an erasure whichever way it comes.
        w.add_event(0, 1, &Event::RunErased(erased(a)));
        assert_eq!(w.erasures.len(), 1);
        assert!(w.flush().is_err());
        assert_eq!(w.erasures.len(), 1);
        assert_eq!(counter.get(), 0);

        files.delete(&broken).unwrap();
        w.flush().unwrap();
        assert!(w.erasures.is_empty());
        assert_eq!(counter.get(), 1);
        // Nothing left to do: the next flush scrubs nothing and counts nothing.
        w.flush().unwrap();
        assert_eq!(counter.get(), 1);
    }

    #[test]
    fn a_revoked_partition_drops_its_pending_erasures_only() {
        let (_dir, _settings, mut w, _counter) = setup();
        let (a, b) = (RunId::random(), RunId::random());
        w.erase_run(0, &erased(a));
        w.erase_run(1, &erased(b));
        w.revoke(Source::Audit, 0);
        assert_eq!(w.erasures.len(), 2);
        w.revoke(Source::Events, 0);
        let left: Vec<_> = w.erasures.iter().map(|(p, e)| (*p, e.run)).collect();
        assert_eq!(left, vec![(1, b)]);
    }
}
