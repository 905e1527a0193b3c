//! The commands a transition produces for the orchestrator: run and step events, and
//! timers started and cancelled (the state keeps the timers it waits for).

use aiq_topics::{Failure, RunEvent, RunStatus, StepEvent, StepStatus};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::Machine;
use crate::definition::StepKind;
use crate::run::io::Command;
use crate::run::state::{FrameId, Timer, TimerPurpose};

impl Machine<'_> {
    pub(super) fn emit_run(
        &mut self,
        status: RunStatus,
        input: Option<Value>,
        output: Option<Value>,
        error: Option<Failure>,
    ) {
        self.out.push(Command::EmitRun(RunEvent {
            tenant: self.st.tenant.clone(),
            run: self.st.run,
            workflow: self.st.workflow.clone(),
            version: self.st.version,
            status,
            at: self.now,
            input,
            output,
            error,
            // A redriven run's `running` names its first start, which keeps its keys in
            // the history.
            started_at: (status.is_terminal() || self.st.redrives > 0)
                .then_some(self.st.started_at),
            source: None,
            scheduled_at: None,
        }));
    }

    pub(super) fn emit_step(
        &mut self,
        fid: FrameId,
        status: StepStatus,
        attempt: u32,
        error: Option<Failure>,
    ) {
        let Some(frame) = self.st.frames.get(&fid) else {
            return;
        };
        let Some(info) = self.wf.step(&frame.at) else {
            return;
        };
        let connector = match &info.step.kind {
            StepKind::Task(t) => Some(t.connector.as_str().to_owned()),
            _ => None,
        };
        let duration_ms = match status {
            StepStatus::Succeeded
            | StepStatus::Failed
            | StepStatus::TimedOut
            | StepStatus::Retrying => self.result_duration_ms.take(),
            _ => None,
        };
        self.out.push(Command::EmitStep(StepEvent {
            tenant: self.st.tenant.clone(),
            run: self.st.run,
            step: frame.at.clone(),
            attempt,
            status,
            at: self.now,
            kind: info.step.kind.name().to_owned(),
            connector,
            error,
            iteration: frame.index,
            duration_ms,
            output_bytes: if status == StepStatus::Succeeded {
                self.result_output_bytes.take()
            } else {
                None
            },
        }));
    }

    pub(super) fn start_timer(&mut self, id: String, due: DateTime<Utc>, purpose: TimerPurpose) {
        self.st.timers.insert(id.clone(), Timer { due, purpose });
        self.out.push(Command::StartTimer { id, due });
    }

    pub(super) fn cancel_timer(&mut self, id: &str) {
        if let Some((id, _)) = self.st.timers.remove_entry(id) {
            self.out.push(Command::CancelTimer { id });
        }
    }

    /// Cancels every timer that belongs to a frame.
    pub(super) fn cancel_frame_timers(&mut self, fid: FrameId) {
        let ids: Vec<String> = self
            .st
            .timers
            .iter()
            .filter(|(_, t)| match t.purpose {
                TimerPurpose::Retry { frame }
                | TimerPurpose::TaskTimeout { frame, .. }
                | TimerPurpose::Wait { frame }
                | TimerPurpose::SignalTimeout { frame } => frame == fid,
                TimerPurpose::RunTimeout => false,
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.cancel_timer(&id);
        }
    }
}
