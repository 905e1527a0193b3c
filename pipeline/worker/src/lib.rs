//! The worker stage: stateless, at least once. It consumes tasks (key = tenant/run, so a
//! busy tenant spreads over every worker), runs them concurrently up to a bound through
//! the connectors of `aiq-connectors` (HTTP, SOAP, SQL, email, file, Kafka, noop, with
//! their secrets, outbound guard and circuit breakers), reports each result to the
//! results topic keyed by tenant, and commits a task's offset only after its result is
//! acknowledged. When every slot is busy it stops polling: the backlog stays in Kafka,
//! never in memory. A task record that does not decode goes to the dead letters.
//!
//! [`spawn`] builds the consumer and the producer and runs the consume loop
//! (`worker_loop.rs`) as a task in the stage frame of `aiq-stage`; the handle's stage is
//! named "worker". Stopping it stops taking tasks, lets the running ones finish (for at
//! most a minute), commits what finished and leaves the consumer group.
//!
//! The rooms: `task.rs` runs one task and writes its result (or sets an undecodable
//! record aside), `shared.rs` is what every running task shares (the producer and its
//! retrying send), `commits.rs` keeps the committed offsets to the partitions this
//! worker owns, on the bookkeeping of `offsets.rs`. `notifier.rs` delivers the
//! notifications of runs that ended (signed webhooks, emails) beside the task loop, in
//! the same stage, with the same connectors.

mod commits;
mod error;
mod metrics;
pub mod notifier;
mod offsets;
mod settings;
mod shared;
mod spawn;
mod task;
mod worker_loop;

// `metrics.rs` reaches the shared lag gauge as `crate::lag`, as it did when the gauge
// lived in this crate.
use aiq_kafka::lag;

pub use error::WorkerError;
pub use settings::WorkerSettings;
pub use spawn::spawn;
