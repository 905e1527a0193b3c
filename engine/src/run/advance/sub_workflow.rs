//! The sub_workflow step: starts a run of another workflow and waits for it to end.

use aiq_topics::{RunId, StepId, StepStatus};
use uuid::Uuid;

use super::{Fatal, Flow, Machine};
use crate::definition::SubWorkflowStep;
use crate::run::io::Command;
use crate::run::state::{FrameId, Pending};

impl Machine<'_> {
    pub(super) fn run_sub_workflow(
        &mut self,
        fid: FrameId,
        at: &StepId,
        s: &SubWorkflowStep,
    ) -> Result<Flow, Fatal> {
        let input = self.wf.exprs.render(&s.input, &self.scope(fid))?;
        let seq = self.next_dispatch(at);
        // Derived from the run and the dispatch, so a replay starts the same child run.
        let child_run = RunId::from_uuid(Uuid::new_v5(
            &self.st.run.as_uuid(),
            format!("{at}/{seq}").as_bytes(),
        ));
        self.emit_step(fid, StepStatus::Waiting, seq, None);
        self.set_pending(fid, Pending::Child { run: child_run });
        self.out.push(Command::StartSubWorkflow {
            child_run,
            workflow: s.workflow.clone(),
            version: s.version,
            input,
        });
        Ok(Flow::Stop)
    }
}
