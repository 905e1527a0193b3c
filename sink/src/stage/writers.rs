//! The Parquet writers of the two topics whose records become history files: the events
//! topic (tables `runs` and `steps`) and the audit topic (table `audit`). One writer per
//! topic, because a writer's offset windows are those of one topic's partitions; both
//! use the same window size, so a partition of either resumes at the same window start.

use aiq_topics::{AuditEvent, Event};

use super::progress::Source;
use crate::parquet::{ParquetError, ParquetSettings, ParquetWriter};

pub struct Writers {
    events: ParquetWriter,
    audit: ParquetWriter,
}

impl Writers {
    pub fn new(settings: &ParquetSettings) -> Result<Writers, ParquetError> {
        Ok(Writers {
            events: ParquetWriter::new(settings)?,
            audit: ParquetWriter::new(settings)?,
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

    pub fn add_event(&mut self, partition: i32, offset: i64, event: &Event) {
        self.events.add(partition, offset, event);
    }

    pub fn add_audit(&mut self, partition: i32, offset: i64, event: &AuditEvent) {
        self.audit.add_audit(partition, offset, event);
    }

    /// Flushes both; after `Ok` every added record is durable.
    pub fn flush(&mut self) -> Result<(), ParquetError> {
        self.events.flush()?;
        self.audit.flush()
    }

    pub fn revoke(&mut self, source: Source, partition: i32) {
        match source {
            Source::Events => self.events.revoke(partition),
            Source::Audit => self.audit.revoke(partition),
            Source::DeadLetters => {}
        }
    }
}
