//! The engine core: what a workflow is, how a document is validated, and how a run
//! advances. Pure — no Kafka, no clock, no I/O: time and inputs come in as values, so
//! the stream stages can replay it and tests can drive it exhaustively.
//!
//! - [`validate_source`] reads a JSON or YAML document into a [`Workflow`], or returns
//!   every problem as a [`ValidationError`] naming file, JSON pointer and reason.
//! - [`advance`] applies one [`Input`] to a [`RunState`] and returns the [`Command`]s
//!   for the orchestrator to carry out.

pub mod catalog;
pub mod cron;
pub mod definition;
pub mod duration;
pub mod expr;
pub mod locate;
pub mod parse;
pub mod run;
pub mod schema;
pub mod validate;
mod validation_error;
pub mod workflow;

pub use catalog::{Catalog, Version};
pub use definition::Definition;
pub use run::{Command, Input, RunState, Transition, advance};
pub use validate::{ValidationError, validate_source};
pub use workflow::{BlockId, Workflow};
