//! The worker stage: stateless, at-least-once. Consumes tasks (key = tenant/run, so a
//! busy tenant spreads over every worker), runs them concurrently up to a bound, reports
//! each result to the results topic keyed by tenant, and commits a task's offset only
//! after its result is acknowledged. When every slot is busy it stops polling: the
//! backlog stays in Kafka, never in memory.
//!
//! Connectors sit behind [`Connector`]; this build has `noop` and `file`. The others
//! (HTTP, SOAP, SQL, email, Kafka) come with issue #6 and are answered with a fatal error
//! that says so, never pretended.

mod connector;
mod file;
mod offsets;
mod runner;

pub use connector::{Connector, Connectors, NoopConnector};
pub use file::FileConnector;
pub use runner::{Worker, WorkerError, WorkerSettings};
