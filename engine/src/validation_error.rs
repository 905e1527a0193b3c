//! [`ValidationError`]: what reading, checking and compiling a definition document
//! reports, one per problem. Kept apart from `validate`, so that the parser, the rules
//! and the workflow index can all name it without importing one another.

use std::fmt;

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
