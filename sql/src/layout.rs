//! The Parquet side of the run history: which tables exist, their columns, and where
//! their files live. The sink writes this layout and the analytics engine reads it, so
//! both take it from here.
//!
//! ```text
//! {root}/{tier}/{table}/tenant={tenant}/date={YYYY-MM-DD}/p{partition}-o{first}-{end}.parquet
//! ```
//!
//! `tier` is `warm` or `archive`; `tenant` and `date` are hive-style folders (they are not
//! columns inside the files). A file holds the events of one events-topic partition
//! whose offsets lie in `[first, end)`, so its name follows from the records alone and a
//! replay rewrites the same file instead of adding a copy.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::NaiveDate;

/// The tables of the run history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// One row per run event: a `running` row when a run starts and one row when it
    /// ends (which carries `started_at` and `duration_ms`).
    Runs,
    /// One row per step event: `started`, `waiting`, then the attempt's outcome.
    Steps,
    /// One row per audit event (from the audit topic): kept in the archive for
    /// `sink.parquet.audit_archive_days` (seven years), whatever the runs' retention.
    Audit,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Runs, Table::Steps, Table::Audit];

    pub fn name(self) -> &'static str {
        match self {
            Table::Runs => "runs",
            Table::Steps => "steps",
            Table::Audit => "audit",
        }
    }

    /// The columns stored in the files (without the `tenant` and `date` folders).
    pub fn file_schema(self) -> SchemaRef {
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let text = DataType::Utf8;
        let fields = match self {
            Table::Runs => vec![
                Field::new("run_id", text.clone(), false),
                Field::new("workflow", text.clone(), false),
                Field::new("version", DataType::Int32, false),
                Field::new("status", text.clone(), false),
                Field::new("at", ts(), false),
                Field::new("started_at", ts(), true),
                Field::new("duration_ms", DataType::Int64, true),
                Field::new("source", text.clone(), true),
                Field::new("scheduled_at", ts(), true),
                Field::new("error_class", text.clone(), true),
                Field::new("error_step", text.clone(), true),
                Field::new("error_message", text.clone(), true),
                Field::new("input_bytes", DataType::Int64, true),
                Field::new("output_bytes", DataType::Int64, true),
                Field::new("kafka_partition", DataType::Int32, false),
                Field::new("kafka_offset", DataType::Int64, false),
            ],
            Table::Steps => vec![
                Field::new("run_id", text.clone(), false),
                Field::new("step", text.clone(), false),
                Field::new("attempt", DataType::Int32, false),
                Field::new("iteration", DataType::Int64, true),
                Field::new("status", text.clone(), false),
                Field::new("at", ts(), false),
                Field::new("kind", text.clone(), false),
                Field::new("connector", text.clone(), true),
                Field::new("duration_ms", DataType::Int64, true),
                Field::new("output_bytes", DataType::Int64, true),
                Field::new("error_class", text.clone(), true),
                Field::new("error_message", text.clone(), true),
                Field::new("kafka_partition", DataType::Int32, false),
                Field::new("kafka_offset", DataType::Int64, false),
            ],
            Table::Audit => vec![
                Field::new("event_id", text.clone(), false),
                Field::new("at", ts(), false),
                Field::new("actor", text.clone(), false),
                Field::new("action", text.clone(), false),
                Field::new("subject", text.clone(), false),
                Field::new("detail", text.clone(), true),
                Field::new("actor_tenant", text.clone(), true),
                Field::new("request_id", text.clone(), true),
                Field::new("outcome", text.clone(), true),
                Field::new("kafka_partition", DataType::Int32, false),
                Field::new("kafka_offset", DataType::Int64, false),
            ],
        };
        Arc::new(Schema::new(fields))
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Warm files are read by queries; archived ones are kept, recompressed, for the long
/// retention and are not queried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Warm,
    Archive,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Warm => "warm",
            Tier::Archive => "archive",
        }
    }
}

/// The folder that holds every file of one table in one tier, relative to the root
/// (`warm/steps`); the same below a local folder and an object-store prefix.
pub fn table_key(tier: Tier, table: Table) -> String {
    format!("{}/{}", tier.name(), table.name())
}

/// The folder of one tenant's files of one table (a tenant-scoped query reads only this).
pub fn tenant_key(tier: Tier, table: Table, tenant: &str) -> String {
    format!("{}/tenant={tenant}", table_key(tier, table))
}

/// The folder of one tenant's files of one day.
pub fn day_key(tier: Tier, table: Table, tenant: &str, date: NaiveDate) -> String {
    format!(
        "{}/date={}",
        tenant_key(tier, table, tenant),
        date.format("%Y-%m-%d")
    )
}

/// [`table_key`] below a local folder.
pub fn table_dir(root: &Path, tier: Tier, table: Table) -> PathBuf {
    root.join(table_key(tier, table))
}

/// [`tenant_key`] below a local folder.
pub fn tenant_dir(root: &Path, tier: Tier, table: Table, tenant: &str) -> PathBuf {
    root.join(tenant_key(tier, table, tenant))
}

/// [`day_key`] below a local folder.
pub fn day_dir(root: &Path, tier: Tier, table: Table, tenant: &str, date: NaiveDate) -> PathBuf {
    root.join(day_key(tier, table, tenant, date))
}

/// Parses a `date=YYYY-MM-DD` folder name.
pub fn parse_day_dir(name: &str) -> Option<NaiveDate> {
    let d = name.strip_prefix("date=")?;
    NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()
}

/// The name of a file: the events-topic partition and the offset range `[first, end)`
/// its rows came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName {
    pub partition: i32,
    pub first: i64,
    pub end: i64,
}

impl FileName {
    /// Whether this file's range holds all of `[first, end)`.
    pub fn covers(&self, partition: i32, first: i64, end: i64) -> bool {
        self.partition == partition && self.first <= first && end <= self.end
    }

    pub fn parse(name: &str) -> Option<FileName> {
        let rest = name.strip_suffix(".parquet")?.strip_prefix('p')?;
        let (partition, rest) = rest.split_once("-o")?;
        let (first, end) = rest.split_once('-')?;
        let f = FileName {
            partition: partition.parse().ok()?,
            first: first.parse().ok()?,
            end: end.parse().ok()?,
        };
        // Only the canonical spelling, so that one range has exactly one name.
        (f.partition >= 0 && f.first >= 0 && f.first < f.end && f.to_string() == name).then_some(f)
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p{:04}-o{:020}-{:020}.parquet",
            self.partition, self.first, self.end
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_are_hive_style_by_tenant_and_date() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 29).unwrap();
        let p = day_dir(Path::new("/h"), Tier::Warm, Table::Steps, "acme", d);
        assert_eq!(p, Path::new("/h/warm/steps/tenant=acme/date=2026-11-29"));
        assert_eq!(parse_day_dir("date=2026-11-29"), Some(d));
        assert_eq!(parse_day_dir("date=2026-13-01"), None);
        let f = FileName {
            partition: 3,
            first: 10_000,
            end: 20_000,
        };
        assert_eq!(
            f.to_string(),
            "p0003-o00000000000000010000-00000000000000020000.parquet"
        );
    }

    #[test]
    fn only_canonical_names_parse() {
        assert_eq!(FileName::parse("p3-o10-20.parquet"), None);
        assert_eq!(FileName::parse("notes.txt"), None);
        let f = FileName {
            partition: 1,
            first: 5,
            end: 5,
        };
        assert_eq!(FileName::parse(&f.to_string()), None, "an empty range");
    }

    #[test]
    fn the_tables_do_not_store_their_folder_columns() {
        for t in Table::ALL {
            let s = t.file_schema();
            assert!(s.field_with_name("tenant").is_err());
            assert!(s.field_with_name("date").is_err());
            assert!(s.field_with_name("kafka_offset").is_ok());
        }
    }

    proptest! {
        #[test]
        fn names_round_trip(p in 0i32..100_000, first in 0i64..i64::MAX / 2, len in 1i64..1_000_000) {
            let f = FileName { partition: p, first, end: first + len };
            prop_assert_eq!(FileName::parse(&f.to_string()), Some(f));
            prop_assert!(f.covers(p, first, first + len));
            prop_assert!(!f.covers(p, first, first + len + 1));
        }
    }
}
