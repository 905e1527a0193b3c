//! Validation a user can act on: every error names the file, the JSON pointer of the
//! field and the reason, and all errors are reported at once.

pub(crate) mod graph;
pub(crate) mod rules;

use std::fmt;

pub use rules::{MAX_DEPTH, MAX_FOREACH_CONCURRENCY, MAX_STEPS};

use crate::parse;
use crate::workflow::Workflow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub file: String,
    /// JSON pointer into the document, e.g. `/steps/4/retry/max_attempts`.
    pub pointer: String,
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "{}:{}: {}", self.file, pointer, self.message)
    }
}

/// Parses and validates a definition document; on success the workflow is ready to run.
pub fn validate_source(file: &str, text: &str) -> Result<Workflow, Vec<ValidationError>> {
    let def = parse::parse(file, text).map_err(|e| vec![e])?;
    Workflow::compile(file, def)
}
