//! The one frame every stage is built in.
//!
//! A stage (the ingest HTTP API, the orchestrator, the worker, the sink, the followers
//! of the definitions and secrets topics) is started from its settings by a `spawn`
//! function that returns a [`StageHandle`]: a cheap, cloneable handle with
//! [`stop`](StageHandle::stop) (ask it to end, at once) and
//! [`finished`](StageHandle::finished) (wait until it has ended, with how it ended).
//! The same shape as Restate's services and Vector's components: whoever runs stages
//! (`aiq serve`, a test, a benchmark) treats them all alike — waits for the first one to
//! end, then stops the rest.
//!
//! The stage's body gets a [`StopSignal`] and runs either as a tokio task
//! ([`spawn_task`]) or on a thread of its own ([`spawn_thread`], for the orchestrator's
//! blocking transactional loop). A panic in the body is reported as a failure, not lost.
//! When the last handle is dropped the stage is asked to stop, so a forgotten stage does
//! not outlive its owner.

mod handle;
mod health;
mod runtime;
mod set;

pub use handle::{StageFailure, StageHandle, StopSignal, spawn_task, spawn_thread};
pub use health::Health;
pub use runtime::BackgroundRuntime;
pub use set::Stages;
