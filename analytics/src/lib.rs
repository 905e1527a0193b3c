//! Tenant-scoped SQL over the run history's Parquet tables (`runs` and `steps`, laid out
//! by [`aiq_sql::layout`]), and the ready reports in `sql/reports/`.
//!
//! A query sees exactly two tables, `runs` and `steps`, with the file columns of
//! [`aiq_sql::layout::Table::file_schema`] plus `tenant` (Utf8) and `date` (Date32, the
//! UTC day of the row's `at`, from the hive folder). Compare `date` with ISO strings
//! (`date >= '2026-11-01'`); a filter on it prunes whole day folders.
//!
//! Only the warm tier is queried; archived days are not visible.

mod convert;
mod engine;
mod error;
mod guard;
mod reports;
mod result;
mod settings;
mod tables;

pub use engine::{Analytics, Scope};
pub use error::AnalyticsError;
pub use reports::{REPORTS, Report};
pub use result::{ColumnInfo, QueryResult};
pub use settings::AnalyticsSettings;
