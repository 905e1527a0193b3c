//! The set step: assigns run variables; its output is the object of what it assigned.

use aiq_topics::StepStatus;
use serde_json::Value;

use super::{Fatal, Flow, Machine};
use crate::definition::SetStep;
use crate::run::state::FrameId;

impl Machine<'_> {
    pub(super) fn run_set(&mut self, fid: FrameId, s: &SetStep) -> Result<Flow, Fatal> {
        self.emit_step(fid, StepStatus::Started, 1, None);
        let mut assigned = serde_json::Map::new();
        for (name, template) in &s.vars {
            let v = self.wf.exprs.render(template, &self.scope(fid))?;
            assigned.insert(name.clone(), v.clone());
            self.st.vars.insert(name.clone(), v);
        }
        self.complete_step(fid, Value::Object(assigned));
        Ok(Flow::Next)
    }
}
