use aiq_history_store::StoreError;

/// What can go wrong writing, compacting or archiving Parquet files. Every variant that
/// touches a file names it.
#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    #[error("invalid parquet setting `{field}`: {reason}")]
    Setting { field: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("parquet file {path}: {source}")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("arrow data for {path}: {source}")]
    Arrow {
        path: String,
        #[source]
        source: arrow_schema::ArrowError,
    },
}

impl ParquetError {
    pub(super) fn parquet(
        path: &impl std::fmt::Display,
    ) -> impl FnOnce(parquet::errors::ParquetError) -> Self {
        let path = path.to_string();
        move |source| ParquetError::Parquet { path, source }
    }

    pub(super) fn arrow(
        path: &impl std::fmt::Display,
    ) -> impl FnOnce(arrow_schema::ArrowError) -> Self {
        let path = path.to_string();
        move |source| ParquetError::Arrow { path, source }
    }
}
