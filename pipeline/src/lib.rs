//! The stream stages that advance workflow runs.
//!
//! - [`orchestrator`]: stateful, exactly-once; owns the tenants of its partitions.

pub mod orchestrator;
