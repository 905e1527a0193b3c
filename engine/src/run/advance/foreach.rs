//! The foreach step: its body once per item, in child frames, at most `concurrency` at a
//! time; the output is the list of the iterations' outputs, in item order.

use std::collections::{BTreeMap, BTreeSet};

use aiq_topics::{Failure, StepStatus};
use serde_json::Value;

use super::{Fatal, Flow, Joined, MAX_FOREACH_ITEMS, Machine};
use crate::definition::ForeachStep;
use crate::run::state::{FrameId, Parent, Pending};
use crate::workflow::BlockId;

impl Machine<'_> {
    /// Evaluates the items and starts the first iterations; no items completes the step
    /// at once.
    pub(super) fn run_foreach(&mut self, fid: FrameId, f: &ForeachStep) -> Result<Flow, Fatal> {
        self.emit_step(fid, StepStatus::Started, 1, None);
        let items = match self.wf.exprs.eval(&f.items, &self.scope(fid))? {
            Value::Array(items) => items,
            other => {
                return Err(Fatal(format!(
                    "`items: {}` gave {other}, not a list",
                    f.items
                )));
            }
        };
        if items.len() > MAX_FOREACH_ITEMS {
            return Err(Fatal(format!(
                "{} items; a foreach takes at most {MAX_FOREACH_ITEMS}",
                items.len()
            )));
        }
        if items.is_empty() {
            self.complete_step(fid, Value::Array(Vec::new()));
            return Ok(Flow::Next);
        }
        self.set_pending(
            fid,
            Pending::Foreach {
                items,
                started: 0,
                concurrency: f.concurrency,
                open: BTreeSet::new(),
                done: BTreeMap::new(),
            },
        );
        self.fill_foreach(fid);
        Ok(Flow::Stop)
    }

    /// Starts foreach iterations up to the concurrency limit, and completes the step
    /// once every iteration has finished.
    pub(super) fn fill_foreach(&mut self, fid: FrameId) {
        if !self.filling.insert(fid) {
            return;
        }
        let at = self.st.frames[&fid].at.clone();
        let body = BlockId::Body { step: at };
        let first = self.wf.first_of(&body).cloned();
        while let Some(first) = &first {
            let Some(Pending::Foreach {
                items,
                started,
                concurrency,
                open,
                ..
            }) = self.st.frames.get_mut(&fid).map(|f| &mut f.pending)
            else {
                break;
            };
            if *started as usize >= items.len() || open.len() >= *concurrency as usize {
                break;
            }
            let slot = *started;
            let item = items[slot as usize].clone();
            *started += 1;
            open.insert(slot);
            let child = self.new_frame(
                Some(Parent { frame: fid, slot }),
                body.clone(),
                first.clone(),
                Some(item),
                Some(slot),
            );
            self.run_frame(child);
        }
        self.filling.remove(&fid);
        let finished = match self.st.frames.get_mut(&fid).map(|f| &mut f.pending) {
            Some(Pending::Foreach {
                items,
                started,
                open,
                done,
                ..
            }) if open.is_empty() && *started as usize >= items.len() => {
                Some(Value::Array(std::mem::take(done).into_values().collect()))
            }
            _ => None,
        };
        if let Some(v) = finished {
            self.complete_step(fid, v);
            self.run_frame(fid);
        }
    }
}

/// The iteration in `slot` ended with `result`: what the foreach step does now. The
/// first failure fails the step, and the iterations still open are added to `cancel`.
pub(super) fn iteration_ended(
    open: &mut BTreeSet<u64>,
    done: &mut BTreeMap<u64, Value>,
    slot: u64,
    result: Result<Value, Failure>,
    cancel: &mut Vec<u64>,
) -> Joined {
    open.remove(&slot);
    match result {
        Ok(v) => {
            done.insert(slot, v);
            Joined::Fill
        }
        Err(f) => {
            cancel.extend(open.iter().copied());
            open.clear();
            Joined::Fail(f)
        }
    }
}
