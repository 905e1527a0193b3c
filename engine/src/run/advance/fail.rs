//! The fail step: ends its block with a failure of its class and message. Catch rules
//! do not apply; the block itself fails.

use aiq_topics::{StepId, StepStatus};
use serde_json::Value;

use super::{Flow, Machine, failure};
use crate::definition::FailStep;
use crate::run::state::FrameId;

impl Machine<'_> {
    pub(super) fn run_fail(&mut self, fid: FrameId, at: &StepId, f: &FailStep) -> Flow {
        self.emit_step(fid, StepStatus::Started, 1, None);
        // A message that does not render still fails the step, saying why.
        let message = match self
            .wf
            .exprs
            .render(&Value::String(f.message.clone()), &self.scope(fid))
        {
            Ok(Value::String(s)) => s,
            Ok(other) => other.to_string(),
            Err(e) => e.to_string(),
        };
        let err = failure(f.class, message, Some(at));
        self.emit_step(fid, StepStatus::Failed, 1, Some(err.clone()));
        self.finish_frame(fid, Err(err));
        Flow::Stop
    }
}
