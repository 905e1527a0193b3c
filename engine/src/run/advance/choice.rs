//! The choice step: goes to the first case whose `when` is true, else to `default`.

use aiq_topics::StepStatus;
use serde_json::Value;

use super::{Fatal, Flow, Machine};
use crate::definition::ChoiceStep;
use crate::run::state::FrameId;

impl Machine<'_> {
    pub(super) fn run_choice(&mut self, fid: FrameId, c: &ChoiceStep) -> Result<Flow, Fatal> {
        self.emit_step(fid, StepStatus::Started, 1, None);
        let mut target = None;
        for case in &c.cases {
            match self.wf.exprs.eval(&case.when, &self.scope(fid))? {
                Value::Bool(true) => {
                    target = Some(case.next.clone());
                    break;
                }
                Value::Bool(false) => {}
                other => {
                    return Err(Fatal(format!(
                        "`when: {}` gave {other}, not true or false",
                        case.when
                    )));
                }
            }
        }
        match target.or_else(|| c.default.clone()) {
            Some(next) => {
                self.emit_step(fid, StepStatus::Succeeded, 1, None);
                self.goto(fid, next);
                Ok(Flow::Next)
            }
            None => Err(Fatal(
                "no case matched and the choice has no default".to_owned(),
            )),
        }
    }
}
