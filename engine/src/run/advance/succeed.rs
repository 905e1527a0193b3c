//! The succeed step: ends its block successfully, with its `output` or else the output
//! of the step before it.

use aiq_topics::StepStatus;

use super::{Fatal, Flow, Machine};
use crate::definition::SucceedStep;
use crate::run::state::FrameId;

impl Machine<'_> {
    pub(super) fn run_succeed(&mut self, fid: FrameId, s: &SucceedStep) -> Result<Flow, Fatal> {
        self.emit_step(fid, StepStatus::Started, 1, None);
        let output = match &s.output {
            None => self.st.frames[&fid].last.clone(),
            Some(t) => self.wf.exprs.render(t, &self.scope(fid))?,
        };
        self.emit_step(fid, StepStatus::Succeeded, 1, None);
        self.finish_frame(fid, Ok(output));
        Ok(Flow::Stop)
    }
}
