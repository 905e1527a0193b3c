//! The worker stage: stateless, at-least-once. Consumes tasks (key = tenant/run, so a
//! busy tenant spreads over every worker), runs them concurrently up to a bound, reports
//! each result to the results topic keyed by tenant, and commits a task's offset only
//! after its result is acknowledged. When every slot is busy it stops polling: the
//! backlog stays in Kafka, never in memory.
//!
//! What a task calls lives in `aiq-connectors` (HTTP, SOAP, SQL, email, file, Kafka,
//! noop), with its secrets, outbound guard and circuit breakers.

mod metrics;
mod offsets;
mod runner;

pub use runner::{Worker, WorkerError, WorkerSettings};
