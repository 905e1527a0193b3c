//! The parallel step: one child frame per branch, joined by `join` (all, or the first
//! to finish) and `fail_fast`.

use std::collections::{BTreeMap, BTreeSet};

use aiq_topics::{Failure, StepId, StepStatus};
use serde_json::Value;

use super::{Flow, Joined, Machine};
use crate::definition::{Join, ParallelStep};
use crate::run::state::{FrameId, Parent, Pending};
use crate::workflow::BlockId;

impl Machine<'_> {
    /// Starts every branch; the step waits for them.
    pub(super) fn run_parallel(&mut self, fid: FrameId, at: &StepId, p: &ParallelStep) -> Flow {
        self.emit_step(fid, StepStatus::Started, 1, None);
        let open: BTreeSet<u64> = (0..p.branches.len() as u64).collect();
        self.set_pending(
            fid,
            Pending::Branches {
                join: p.join,
                fail_fast: p.fail_fast,
                open: open.clone(),
                done: BTreeMap::new(),
                failure: None,
            },
        );
        let mut children = Vec::new();
        for slot in open {
            let block = BlockId::Branch {
                step: at.clone(),
                index: slot as usize,
            };
            if let Some(first) = self.wf.first_of(&block).cloned() {
                children.push(self.new_frame(
                    Some(Parent { frame: fid, slot }),
                    block,
                    first,
                    None,
                    None,
                ));
            }
        }
        for c in children {
            self.run_frame(c);
        }
        Flow::Stop
    }
}

/// A parallel step's branches, as its frame waits for them (`Pending::Branches`).
pub(super) struct Branches<'p> {
    pub join: Join,
    pub fail_fast: bool,
    pub open: &'p mut BTreeSet<u64>,
    pub done: &'p mut BTreeMap<u64, Value>,
    pub first_failure: &'p mut Option<Failure>,
}

/// The branch in `slot` ended with `result`: what the parallel step does now. Branches
/// that must stop are added to `cancel`.
pub(super) fn branch_ended(
    b: Branches<'_>,
    slot: u64,
    result: Result<Value, Failure>,
    cancel: &mut Vec<u64>,
) -> Joined {
    b.open.remove(&slot);
    match result {
        Ok(v) if b.join == Join::First => {
            cancel.extend(b.open.iter().copied());
            b.open.clear();
            Joined::Complete(v)
        }
        Ok(v) => {
            b.done.insert(slot, v);
            if b.open.is_empty() {
                match b.first_failure.take() {
                    Some(f) => Joined::Fail(f),
                    None => Joined::Complete(Value::Array(
                        std::mem::take(b.done).into_values().collect(),
                    )),
                }
            } else {
                Joined::Wait
            }
        }
        Err(f) if b.fail_fast => {
            cancel.extend(b.open.iter().copied());
            b.open.clear();
            Joined::Fail(f)
        }
        Err(f) => {
            b.first_failure.get_or_insert(f);
            if b.open.is_empty() {
                b.first_failure.take().map_or(Joined::Wait, Joined::Fail)
            } else {
                Joined::Wait
            }
        }
    }
}
