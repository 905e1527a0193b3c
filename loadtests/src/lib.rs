//! Load generation and measurement. Every performance figure in BENCHMARKS.md comes from
//! here, with the command that produced it.

pub mod backlog;
pub mod chaos;
pub mod drain;
pub mod open_loop;
pub mod restore_scale;
pub mod state_memory;
pub mod worker_throughput;
