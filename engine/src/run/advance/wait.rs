//! The wait step: pauses for a duration or until a time; a time already past (or no
//! time at all) completes it at once.

use aiq_topics::{StepId, StepStatus};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Fatal, Flow, Machine};
use crate::definition::WaitStep;
use crate::run::state::{FrameId, Pending, TimerPurpose};

impl Machine<'_> {
    pub(super) fn run_wait(
        &mut self,
        fid: FrameId,
        at: &StepId,
        w: &WaitStep,
    ) -> Result<Flow, Fatal> {
        let due = match (w.duration, &w.until) {
            (Some(d), _) => self.now + d.as_chrono(),
            (None, Some(until)) => match self.wf.exprs.eval(until, &self.scope(fid))? {
                Value::String(s) => match DateTime::parse_from_rfc3339(&s) {
                    Ok(t) => t.with_timezone(&Utc),
                    Err(e) => {
                        return Err(Fatal(format!(
                            "`until` gave {s:?}, not an RFC 3339 time: {e}"
                        )));
                    }
                },
                other => return Err(Fatal(format!("`until` gave {other}, not a time"))),
            },
            (None, None) => self.now,
        };
        if due <= self.now {
            self.emit_step(fid, StepStatus::Started, 1, None);
            self.complete_step(fid, Value::Null);
            return Ok(Flow::Next);
        }
        self.emit_step(fid, StepStatus::Waiting, 1, None);
        self.set_pending(fid, Pending::Timer);
        self.start_timer(
            format!("wait/{fid}/{at}"),
            due,
            TimerPurpose::Wait { frame: fid },
        );
        Ok(Flow::Stop)
    }
}
