//! Checks over each block's step graph: targets exist and stay in their block, every
//! step is reachable, and every loop passes a step that waits.

use std::collections::{BTreeMap, BTreeSet};

use aiq_topics::StepId;

use crate::definition::StepKind;
use crate::validate::rules::Walk;
use crate::workflow::{BlockId, StepInfo, successors};

fn check_target(walk: &mut Walk<'_>, pointer: String, from: &StepInfo, target: &StepId) {
    match walk.steps.get(target) {
        None => walk.error(pointer, format!("there is no step {:?}", target.as_str())),
        Some(t) if t.block != from.block => {
            let msg = format!(
                "step {:?} is in another block ({}); a jump stays within its block",
                target.as_str(),
                t.block
            );
            walk.error(pointer, msg);
        }
        Some(_) => {}
    }
}

pub(crate) fn check(walk: &mut Walk<'_>) {
    let errors_before = walk.errors.len();
    let infos: Vec<StepInfo> = walk.steps.values().cloned().collect();
    for info in &infos {
        let p = &info.pointer;
        let step = &info.step;
        if let Some(n) = &step.next {
            check_target(walk, format!("{p}/next"), info, n);
        }
        if let StepKind::Choice(c) = &step.kind {
            for (i, case) in c.cases.iter().enumerate() {
                check_target(walk, format!("{p}/choice/cases/{i}/next"), info, &case.next);
            }
            if let Some(d) = &c.default {
                check_target(walk, format!("{p}/choice/default"), info, d);
            }
        }
        for (i, rule) in step.catch.iter().enumerate() {
            check_target(walk, format!("{p}/catch/{i}/next"), info, &rule.next);
        }
    }
    if walk.errors.len() > errors_before {
        // Reachability over broken targets would only repeat the same errors.
        return;
    }
    let blocks: Vec<(BlockId, Vec<StepId>)> = walk.blocks.clone().into_iter().collect();
    for (_, ids) in blocks {
        let edges: BTreeMap<&StepId, Vec<StepId>> = ids
            .iter()
            .map(|id| (id, successors(&walk.steps, &walk.blocks, id)))
            .collect();
        reachability(walk, &ids, &edges);
        loops(walk, &ids, &edges);
    }
}

fn reachability(walk: &mut Walk<'_>, ids: &[StepId], edges: &BTreeMap<&StepId, Vec<StepId>>) {
    let Some(first) = ids.first() else { return };
    let mut seen: BTreeSet<&StepId> = BTreeSet::new();
    let mut stack = vec![first];
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            for next in edges.get(id).into_iter().flatten() {
                stack.push(next);
            }
        }
    }
    for id in ids {
        if !seen.contains(id) {
            let p = walk.steps[id].pointer.clone();
            walk.error(
                p,
                format!(
                    "step {:?} is never reached: no step before it goes there",
                    id.as_str()
                ),
            );
        }
    }
}

/// Tarjan's strongly connected components; a component with a cycle must hold a wait.
fn loops(walk: &mut Walk<'_>, ids: &[StepId], edges: &BTreeMap<&StepId, Vec<StepId>>) {
    struct Tarjan<'e> {
        edges: &'e BTreeMap<&'e StepId, Vec<StepId>>,
        index: BTreeMap<StepId, usize>,
        low: BTreeMap<StepId, usize>,
        on_stack: BTreeSet<StepId>,
        stack: Vec<StepId>,
        next: usize,
        components: Vec<Vec<StepId>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: &StepId) {
            self.index.insert(v.clone(), self.next);
            self.low.insert(v.clone(), self.next);
            self.next += 1;
            self.stack.push(v.clone());
            self.on_stack.insert(v.clone());
            let succ = self.edges.get(v).cloned().unwrap_or_default();
            for w in &succ {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).map_or(0, |l| {
                        *l = (*l).min(lw);
                        *l
                    });
                    let _ = lv;
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    if let Some(l) = self.low.get_mut(v) {
                        *l = (*l).min(iw);
                    }
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(&w);
                    let done = &w == v;
                    comp.push(w);
                    if done {
                        break;
                    }
                }
                self.components.push(comp);
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        on_stack: BTreeSet::new(),
        stack: Vec::new(),
        next: 0,
        components: Vec::new(),
    };
    for id in ids {
        if !t.index.contains_key(id) {
            t.visit(id);
        }
    }
    for mut comp in t.components {
        let cyclic = comp.len() > 1 || edges.get(&comp[0]).is_some_and(|e| e.contains(&comp[0]));
        if !cyclic || comp.iter().any(|id| walk.steps[id].step.kind.waits()) {
            continue;
        }
        comp.sort_by_key(|id| walk.steps[id].position);
        let names: Vec<&str> = comp.iter().map(StepId::as_str).collect();
        let p = walk.steps[&comp[0]].pointer.clone();
        walk.error(
            p,
            format!(
                "steps {} form a loop that never waits; put a wait or wait_for_event step in it",
                names.join(" → ")
            ),
        );
    }
}
