//! The Parquet side of the sink: run and step events into the warm tier of the history
//! layout (`aiq_sql::layout`), then compaction, archiving and deletion by age.

mod compact;
mod covered;
mod error;
mod files;
mod rows;
mod settings;
mod writer;

pub use compact::{CompactReport, compact};
pub use error::ParquetError;
pub use settings::ParquetSettings;
pub use writer::ParquetWriter;
