//! Tenant-scoped SQL over the run history's Parquet tables (`runs` and `steps`, laid out
//! by [`aiq_sql::layout`]), and the ready reports in `sql/reports/`.
//!
//! A query sees exactly two tables, `runs` and `steps`, with the file columns of
//! [`aiq_sql::layout::Table::file_schema`] plus `tenant` (Utf8) and `date` (Date32, the
//! UTC day of the row's `at`, from the hive folder). Compare `date` with ISO strings
//! (`date >= '2026-11-01'`); a filter on it prunes whole day folders.
//!
//! Only the warm tier is queried; archived days are not visible.
//!
//! Queries cannot starve the process they run in: they run on a tokio runtime of their
//! own ([`THREAD_NAME`] threads), draw from one memory pool per process, and at most
//! `max_queries_per_tenant` per tenant and `max_queries` in all run at once; one more
//! is refused with [`AnalyticsError::Busy`].

mod convert;
mod engine;
mod error;
mod gate;
mod guard;
mod pinned;
mod pool;
mod reports;
mod result;
mod runtime;
mod settings;
mod tables;

pub use engine::{Analytics, Limits, Scope};
pub use error::{AnalyticsError, QueryLimit};
pub use gate::PLATFORM_LABEL;
pub use reports::{REPORTS, Report};
pub use result::{ColumnInfo, QueryResult};
pub use runtime::THREAD_NAME;
pub use settings::AnalyticsSettings;

/// Seconds a caller refused with [`AnalyticsError::Busy`] or
/// [`AnalyticsError::HistoryChanged`] should wait before trying again (HTTP
/// `Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 1;
