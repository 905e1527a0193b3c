//! The Parquet side of the sink: run and step events into the warm tier of the history
//! layout (`aiq_sql::layout`), then compaction, archiving and deletion by age, and the
//! erasure of one run's payloads from both tiers.

mod compact;
mod covered;
mod error;
mod files;
mod rows;
mod scrub;
mod settings;
mod writer;

pub use compact::{CompactReport, compact};
pub use error::ParquetError;
pub use scrub::{MAX_SCRUB_DAYS, ScrubReport, scrub_run};
pub use settings::ParquetSettings;
pub use writer::ParquetWriter;
