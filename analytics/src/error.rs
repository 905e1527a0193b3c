//! Why a query gave no result, sorted by who has to act: the caller (refused, invalid,
//! too big, busy or changed history: try later) or the operator (internal).

use std::fmt;

use datafusion::error::DataFusionError;

/// Which concurrency limit refused a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryLimit {
    /// `analytics.max_queries_per_tenant`: the caller's tenant runs that many already.
    Tenant,
    /// `analytics.max_queries`: the process runs that many already.
    Process,
}

impl QueryLimit {
    /// The setting that sets this limit.
    pub fn setting(self) -> &'static str {
        match self {
            QueryLimit::Tenant => "analytics.max_queries_per_tenant",
            QueryLimit::Process => "analytics.max_queries",
        }
    }

    /// The metric label and problem type: `tenant` or `process`.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryLimit::Tenant => "tenant",
            QueryLimit::Process => "process",
        }
    }
}

impl fmt::Display for QueryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// As many queries run as `limit` allows (`max` of them); nothing was started. Try
    /// again after [`crate::RETRY_AFTER_SECS`].
    #[error(
        "{} queries already run for {who}, the most {} allows; try again later",
        max,
        limit.setting()
    )]
    Busy {
        limit: QueryLimit,
        max: usize,
        /// `tenant acme`, `the platform scope` or `this process`.
        who: String,
    },
    /// Files the query listed were replaced (the sink rewrites an open window's file at
    /// each flush) before it read them, at each of its `attempts`; nothing wrong was
    /// read. Try again after [`crate::RETRY_AFTER_SECS`].
    #[error(
        "the history's files changed under each of {attempts} attempts at the query (the sink rewrites the newest files at each flush); try again"
    )]
    HistoryChanged { attempts: u32 },
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
