//! Running a workflow: the state of a run and the transition function.

mod advance;
mod io;
mod retry;
mod state;

pub use advance::{
    DEFAULT_SCHEDULE_TO_START, DEFAULT_TASK_TIMEOUT, MAX_FOREACH_ITEMS, TASK_TIMEOUT_GRACE, advance,
};
pub use io::{Command, Input, Transition};
pub use retry::backoff;
pub use state::{
    DecodeError, Frame, FrameId, Pending, Resume, RunState, STATE_FORMAT, Timer, TimerPurpose,
};
