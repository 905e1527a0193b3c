//! The wait_for_event step: waits for a named signal (with a matching correlation key,
//! if the step has one), or uses one that arrived early; the payload is its output.

use aiq_topics::{StepId, StepStatus};
use serde_json::Value;

use super::{Fatal, Flow, Machine};
use crate::definition::WaitForEventStep;
use crate::run::state::{FrameId, Pending, TimerPurpose};

impl Machine<'_> {
    pub(super) fn run_wait_for_event(
        &mut self,
        fid: FrameId,
        at: &StepId,
        w: &WaitForEventStep,
    ) -> Result<Flow, Fatal> {
        let correlation = match &w.correlation {
            None => None,
            Some(expr) => match self.wf.exprs.eval(expr, &self.scope(fid))? {
                Value::String(s) => Some(s),
                other => Some(other.to_string()),
            },
        };
        let pending = Pending::Signal {
            name: w.signal.clone(),
            correlation: correlation.clone(),
        };
        self.emit_step(fid, StepStatus::Waiting, 1, None);
        // A signal that came early is used now.
        if let Some(i) = self
            .st
            .signals
            .iter()
            .position(|s| signal_matches(&pending, &s.name, s.correlation.as_deref()))
        {
            let s = self.st.signals.remove(i);
            self.complete_step(fid, s.payload);
            return Ok(Flow::Next);
        }
        self.set_pending(fid, pending);
        if let Some(t) = w.timeout {
            self.start_timer(
                format!("signal-timeout/{fid}/{at}"),
                self.now + t.as_chrono(),
                TimerPurpose::SignalTimeout { frame: fid },
            );
        }
        Ok(Flow::Stop)
    }

    /// A signal the frame waits for arrived: its payload is the step's output.
    pub(super) fn deliver_signal(&mut self, fid: FrameId, payload: Value) {
        let at = self.st.frames[&fid].at.clone();
        self.cancel_timer(&format!("signal-timeout/{fid}/{at}"));
        self.complete_step(fid, payload);
        self.run_frame(fid);
    }
}

/// Whether a frame waiting on `pending` takes the signal `name` with `correlation`: a
/// step without a correlation key takes any.
pub(super) fn signal_matches(pending: &Pending, name: &str, correlation: Option<&str>) -> bool {
    match pending {
        Pending::Signal {
            name: n,
            correlation: c,
        } => n == name && (c.is_none() || c.as_deref() == correlation),
        _ => false,
    }
}
