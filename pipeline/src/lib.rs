//! The stream stages that advance workflow runs.
//!
//! - [`orchestrator`]: stateful, exactly-once; owns the tenants of its partitions.
//! - [`worker`]: stateless, at-least-once; runs the connectors.

pub mod lag;
pub mod orchestrator;
pub mod worker;
