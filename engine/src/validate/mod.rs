//! Validation a user can act on: every error names the file, the JSON pointer of the
//! field and the reason, and all errors are reported at once.
//!
//! Also where a [`Workflow`] comes from: [`Workflow::compile`] runs the checks and
//! builds the workflow from what they collected, so nothing unvalidated can run.

pub(crate) mod graph;
pub mod notify;
pub(crate) mod rules;

pub use rules::{MAX_DEPTH, MAX_FOREACH_CONCURRENCY, MAX_STEPS};

pub use crate::validation_error::ValidationError;

use crate::definition::Definition;
use crate::parse;
use crate::workflow::Workflow;

/// Parses and validates a definition document; on success the workflow is ready to run.
pub fn validate_source(file: &str, text: &str) -> Result<Workflow, Vec<ValidationError>> {
    let def = parse::parse(file, text).map_err(|e| vec![e])?;
    Workflow::compile(file, def)
}

impl Workflow {
    /// Validates a parsed definition and compiles it.
    pub fn compile(file: &str, def: Definition) -> Result<Self, Vec<ValidationError>> {
        let mut walk = rules::Walk::new(file);
        walk.workflow(&def);
        graph::check(&mut walk);
        if !walk.errors.is_empty() {
            return Err(walk.errors);
        }
        Ok(Workflow::from_checked(
            def,
            walk.exprs,
            walk.steps,
            walk.blocks,
        ))
    }
}
