use std::collections::BTreeMap;

use aiq_history_store::{HistoryFiles, HistoryRoot};
use serde::{Deserialize, Serialize};

use super::ParquetError;

/// Where the history files go and how long each tier keeps them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParquetSettings {
    /// Where the `warm` and `archive` tiers live: a folder (the default), `file://…`,
    /// `az://container/prefix` (Azure Blob Storage / ADLS Gen2) or `s3://bucket/prefix`.
    pub root: HistoryRoot,
    /// Options of the object store (`object_store` configuration keys such as
    /// `azure_storage_account_name`, `azure_storage_sas_key`, `aws_endpoint`); they win
    /// over the `AZURE_*` / `AWS_*` environment variables the store also reads.
    pub store_options: BTreeMap<String, String>,
    /// The access tier (Azure: `Cool`, `Cold`, `Archive`) or storage class (S3, such as
    /// `STANDARD_IA`, `GLACIER_IR`) of files written to the archive tier. Unset: `Cool`
    /// on Azure, the bucket's default on S3. Ignored on local disk.
    pub archive_storage_class: Option<String>,
    /// Offsets per window (and so per file) of one events-topic partition. It also bounds
    /// the writer's memory: one open window per assigned partition.
    pub window_offsets: i64,
    /// Age in days after which a day's files move to the archive tier.
    pub warm_days: u32,
    /// Age in days after which a day's files are deleted.
    pub archive_days: u32,
    /// The same for the `audit` table, never less than `archive_days`: the audit trail
    /// is kept seven years by default whatever the run history's retention.
    pub audit_archive_days: u32,
    /// Age in days after which a day's folder is compacted to one file per partition.
    pub compact_after_days: u32,
    /// Zstandard level of archived files (warm files use snappy, which reads faster).
    pub archive_zstd_level: i32,
}

impl Default for ParquetSettings {
    fn default() -> Self {
        ParquetSettings {
            root: HistoryRoot::default(),
            store_options: BTreeMap::new(),
            archive_storage_class: None,
            window_offsets: 50_000,
            warm_days: 365,
            archive_days: 2555,
            audit_archive_days: default_audit_archive_days(),
            compact_after_days: 1,
            archive_zstd_level: 9,
        }
    }
}

fn default_audit_archive_days() -> u32 {
    2555
}

impl ParquetSettings {
    /// How many days a table's files are kept.
    pub fn keep_days(&self, table: aiq_sql::layout::Table) -> u32 {
        match table {
            aiq_sql::layout::Table::Audit => self.audit_archive_days.max(self.archive_days),
            _ => self.archive_days,
        }
    }

    /// Checks the settings, naming the first bad field and why.
    pub fn validate(&self) -> Result<(), ParquetError> {
        let bad = |field, reason: String| Err(ParquetError::Setting { field, reason });
        if self.root.as_str().trim().is_empty() {
            return bad("root", "must not be empty".into());
        }
        if self.window_offsets <= 0 {
            return bad(
                "window_offsets",
                format!("must be positive, got {}", self.window_offsets),
            );
        }
        // Day 0 is the day the writer is still filling: compacting it would hide rows
        // that arrive later behind the merged file's wider range.
        if self.compact_after_days == 0 {
            return bad("compact_after_days", "must be at least 1".into());
        }
        if self.warm_days < self.compact_after_days {
            return bad(
                "warm_days",
                format!(
                    "must be at least compact_after_days ({}), got {}",
                    self.compact_after_days, self.warm_days
                ),
            );
        }
        if self.archive_days < self.warm_days {
            return bad(
                "archive_days",
                format!(
                    "must be at least warm_days ({}), got {}",
                    self.warm_days, self.archive_days
                ),
            );
        }
        if !(1..=22).contains(&self.archive_zstd_level) {
            return bad(
                "archive_zstd_level",
                format!("must be within 1..=22, got {}", self.archive_zstd_level),
            );
        }
        Ok(())
    }

    /// The store this writes to. Checks the root; contacts nothing.
    pub fn files(&self) -> Result<HistoryFiles, ParquetError> {
        Ok(HistoryFiles::new(self.root.parse(&self.store_options)?))
    }

    /// The storage class of archived files on the store at hand.
    pub(super) fn archive_class(&self, files: &HistoryFiles) -> Option<String> {
        use aiq_history_store::StoreKind;
        match (files.location().kind(), &self.archive_storage_class) {
            (StoreKind::Local, _) => None,
            (_, Some(c)) => Some(c.clone()),
            (StoreKind::Azure, None) => Some("Cool".to_owned()),
            (StoreKind::S3, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        ParquetSettings::default().validate().unwrap();
        let cases = [
            (
                ParquetSettings {
                    window_offsets: 0,
                    ..Default::default()
                },
                "window_offsets",
            ),
            (
                ParquetSettings {
                    archive_days: 10,
                    ..Default::default()
                },
                "archive_days",
            ),
            (
                ParquetSettings {
                    archive_zstd_level: 23,
                    ..Default::default()
                },
                "archive_zstd_level",
            ),
            (
                ParquetSettings {
                    compact_after_days: 0,
                    ..Default::default()
                },
                "compact_after_days",
            ),
            (
                ParquetSettings {
                    root: HistoryRoot::new(""),
                    ..Default::default()
                },
                "root",
            ),
        ];
        for (s, field) in cases {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn settings_deserialise_with_defaults_and_reject_unknown_fields() {
        let s: ParquetSettings = serde_json::from_str(r#"{"window_offsets": 10}"#).unwrap();
        assert_eq!(s.window_offsets, 10);
        assert_eq!(s.warm_days, 365);
        assert!(serde_json::from_str::<ParquetSettings>(r#"{"windows": 10}"#).is_err());
    }
}
