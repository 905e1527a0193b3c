//! Ageing of the history: one file per partition per day, then the archive tier, then
//! deletion.

use std::collections::BTreeMap;

use aiq_history_store::{HistoryFiles, ObjectPath};
use aiq_sql::layout::{FileName, Table, Tier, day_key, parse_day_dir, table_key};
use chrono::{Days, NaiveDate};

use super::files::{archive_properties, data_files, rewrite, warm_properties};
use super::{ParquetError, ParquetSettings};

/// What one [`compact`] run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Warm files replaced by a merged file (and so deleted).
    pub merged_files: usize,
    /// Files written: merged warm files plus files rewritten into the archive tier.
    pub written_files: usize,
    /// Day folders moved from the warm to the archive tier.
    pub archived_days: usize,
    /// Day folders deleted for being older than `archive_days` (in either tier).
    pub deleted_days: usize,
}

/// Compacts, archives and deletes day folders by their age on `today`.
///
/// - a warm day at least `compact_after_days` old gets one file per partition, named
///   with the union of the merged ranges (the writer then skips the windows it covers);
/// - a warm day older than `warm_days` is rewritten with zstd under the archive tier;
/// - a day older than `archive_days` is deleted;
/// - files a killed local write left in those folders are deleted.
///
/// Every step leaves a state the next run finishes, so a second run changes nothing.
/// Run it from the thread that drives the [`ParquetWriter`](super::ParquetWriter) (between
/// flushes): a flush that rewrites a window while it is being merged could lose its rows.
pub fn compact(
    settings: &ParquetSettings,
    today: NaiveDate,
) -> Result<CompactReport, ParquetError> {
    settings.validate()?;
    let files = settings.files()?;
    let mut report = CompactReport::default();
    for table in Table::ALL {
        let limits = Limits {
            compact_until: days_before(today, settings.compact_after_days),
            warm_from: days_before(today, settings.warm_days),
            keep_from: days_before(today, settings.keep_days(table)),
        };
        for (tenant, date, dir) in days(&files, Tier::Warm, table)? {
            if date > limits.compact_until {
                continue;
            }
            if date < limits.keep_from {
                files.delete_folder(&dir)?;
                report.deleted_days += 1;
                continue;
            }
            files.remove_leftovers(&dir)?;
            merge_day(&files, &dir, table, &mut report)?;
            if date < limits.warm_from {
                archive_day(settings, &files, table, &tenant, date, &dir, &mut report)?;
            }
        }
        for (_, date, dir) in days(&files, Tier::Archive, table)? {
            if date < limits.keep_from {
                files.delete_folder(&dir)?;
                report.deleted_days += 1;
            } else {
                files.remove_leftovers(&dir)?;
            }
        }
    }
    Ok(report)
}

struct Limits {
    /// The last day old enough to compact.
    compact_until: NaiveDate,
    /// Days before this one leave the warm tier.
    warm_from: NaiveDate,
    /// Days before this one are deleted.
    keep_from: NaiveDate,
}

fn days_before(today: NaiveDate, n: u32) -> NaiveDate {
    today
        .checked_sub_days(Days::new(u64::from(n)))
        .unwrap_or(NaiveDate::MIN)
}

/// Every `tenant=…/date=…` folder of one table in one tier: one listing for the
/// tenants, one per tenant for its days.
fn days(
    files: &HistoryFiles,
    tier: Tier,
    table: Table,
) -> Result<Vec<(String, NaiveDate, ObjectPath)>, ParquetError> {
    let mut out = Vec::new();
    let table_dir = ObjectPath::from(table_key(tier, table));
    for name in files.list(&table_dir)?.folders {
        let Some(tenant) = name.strip_prefix("tenant=") else {
            continue;
        };
        let tenant_dir = table_dir.clone().join(name.as_str());
        for day in files.list(&tenant_dir)?.folders {
            if let Some(date) = parse_day_dir(&day) {
                out.push((tenant.to_owned(), date, tenant_dir.clone().join(day)));
            }
        }
    }
    Ok(out)
}

/// Leaves one file per partition in a warm day folder.
fn merge_day(
    files: &HistoryFiles,
    dir: &ObjectPath,
    table: Table,
    report: &mut CompactReport,
) -> Result<(), ParquetError> {
    let mut by_partition: BTreeMap<i32, Vec<(FileName, ObjectPath)>> = BTreeMap::new();
    for (f, path) in data_files(files, dir)? {
        by_partition.entry(f.partition).or_default().push((f, path));
    }
    for (partition, group) in by_partition {
        if group.len() < 2 {
            continue;
        }
        // A file inside another one's range is a copy of rows the wider file holds: a
        // crash between writing a merged file and deleting its sources leaves these.
        let (covered, kept): (Vec<_>, Vec<_>) = group.iter().partition(|(f, _)| {
            group
                .iter()
                .any(|(g, _)| g != f && g.covers(partition, f.first, f.end))
        });
        for (_, path) in &covered {
            files.delete(path)?;
            report.merged_files += 1;
        }
        if kept.len() < 2 {
            continue;
        }
        let merged = FileName {
            partition,
            first: kept.iter().map(|(f, _)| f.first).min().unwrap_or(0),
            end: kept.iter().map(|(f, _)| f.end).max().unwrap_or(0),
        };
        let sources: Vec<ObjectPath> = kept.iter().map(|(_, p)| p.clone()).collect();
        rewrite(
            files,
            &sources,
            &dir.clone().join(merged.to_string()),
            table.file_schema(),
            warm_properties(),
            None,
        )?;
        report.written_files += 1;
        for path in &sources {
            files.delete(path)?;
            report.merged_files += 1;
        }
    }
    Ok(())
}

/// Moves a warm day folder to the archive tier, recompressed with zstd.
fn archive_day(
    settings: &ParquetSettings,
    files: &HistoryFiles,
    table: Table,
    tenant: &str,
    date: NaiveDate,
    warm: &ObjectPath,
    report: &mut CompactReport,
) -> Result<(), ParquetError> {
    let archive = ObjectPath::from(day_key(Tier::Archive, table, tenant, date));
    let class = settings.archive_class(files);
    for (f, src) in data_files(files, warm)? {
        let dst = archive.clone().join(f.to_string());
        let props = archive_properties(settings.archive_zstd_level)?;
        rewrite(
            files,
            std::slice::from_ref(&src),
            &dst,
            table.file_schema(),
            props,
            class.as_deref(),
        )?;
        report.written_files += 1;
    }
    files.delete_folder(warm)?;
    report.archived_days += 1;
    Ok(())
}
