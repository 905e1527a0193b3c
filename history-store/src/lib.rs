//! Where the Parquet run history lives, and blocking access to its objects.
//!
//! The history root is a folder on this machine (the single-machine default), Azure
//! Blob Storage / ADLS Gen2 (`az://container/prefix`) or S3 and S3-compatible stores
//! (`s3://bucket/prefix`), all through the `object_store` crate that DataFusion reads
//! with. The sink writes and compacts through [`HistoryFiles`]; analytics registers
//! [`HistoryLocation::whole_store`] with DataFusion and lists [`HistoryLocation::folder_url`]s.
//! The file layout below the root is the same everywhere (`aiq_sql::layout`).

mod error;
mod files;
mod location;

pub use error::StoreError;
pub use files::{HistoryFiles, Listing};
pub use location::{HistoryLocation, HistoryRoot, StoreKind};
pub use object_store::path::Path as ObjectPath;
