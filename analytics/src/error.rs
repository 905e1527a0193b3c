//! Why a query gave no result, sorted by who has to act: the caller (refused, invalid,
//! too big) or the operator (internal).

use datafusion::error::DataFusionError;

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// The statement is not allowed at all (DDL, DML, settings, several statements).
    #[error("refused: {reason}")]
    Refused { reason: String },
    /// The query does not parse or plan, e.g. an unknown table or column.
    #[error("invalid query: {message}")]
    Invalid { message: String },
    #[error("the query ran longer than {ms} ms")]
    Timeout { ms: u64 },
    /// The query needed more memory than one query may hold.
    #[error("the query needs more resources than allowed: {message}")]
    ResourcesExhausted { message: String },
    #[error("no report named {0:?}")]
    UnknownReport(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<DataFusionError> for AnalyticsError {
    fn from(e: DataFusionError) -> Self {
        let message = e.to_string();
        match e.find_root() {
            DataFusionError::ResourcesExhausted(_) => {
                AnalyticsError::ResourcesExhausted { message }
            }
            // The planner's read-only check (a second line behind `guard`).
            DataFusionError::Plan(m)
                if m.starts_with("DDL not supported")
                    || m.starts_with("DML not supported")
                    || m.starts_with("Statement not supported") =>
            {
                AnalyticsError::Refused { reason: message }
            }
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Execution(_)
            | DataFusionError::ArrowError(..) => AnalyticsError::Invalid { message },
            _ => AnalyticsError::Internal(message),
        }
    }
}
