use std::path::{Path, PathBuf};

/// What can go wrong writing, compacting or archiving Parquet files. Every variant that
/// touches the disk names the path.
#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    #[error("invalid parquet setting `{field}`: {reason}")]
    Setting { field: &'static str, reason: String },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parquet file {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("arrow data for {path}: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },
}

impl ParquetError {
    pub(super) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| ParquetError::Io { op, path, source }
    }

    pub(super) fn parquet(path: &Path) -> impl FnOnce(parquet::errors::ParquetError) -> Self {
        let path = path.to_path_buf();
        move |source| ParquetError::Parquet { path, source }
    }

    pub(super) fn arrow(path: &Path) -> impl FnOnce(arrow_schema::ArrowError) -> Self {
        let path = path.to_path_buf();
        move |source| ParquetError::Arrow { path, source }
    }
}
