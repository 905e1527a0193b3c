//! Properties over random workflows and random input sequences:
//! never a panic; terminal states stay terminal; no attempt is dispatched twice;
//! retries stay within the policy; the engine's timers are the ones it asked for; a
//! duplicated result changes nothing; and every run ends once its timers fire.

// Test support: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use aiq_engine::run::{Command, Input, RunState};
use aiq_engine::{Workflow, advance, validate_source};
use aiq_topics::{ErrorClass, RunId, StepId, TaskMessage, TaskOutcome, TaskResult, TenantId};
use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
enum G {
    Task {
        max_attempts: Option<u32>,
        catch: bool,
    },
    Set,
    Wait {
        secs: u32,
    },
    Event {
        timeout_secs: u32,
    },
    Choice,
    Fail,
    Parallel {
        branches: Vec<Vec<G>>,
        first: bool,
        fail_fast: bool,
    },
    Foreach {
        concurrency: u32,
        body: Vec<G>,
    },
}

fn leaf() -> impl Strategy<Value = G> {
    prop_oneof![
        4 => (proptest::option::of(1u32..4), any::<bool>()).prop_map(|(max_attempts, catch)| G::Task { max_attempts, catch }),
        2 => Just(G::Set),
        1 => (1u32..600).prop_map(|secs| G::Wait { secs }),
        1 => (1u32..600).prop_map(|timeout_secs| G::Event { timeout_secs }),
        2 => Just(G::Choice),
        1 => Just(G::Fail),
    ]
}

fn block() -> impl Strategy<Value = Vec<G>> {
    let node = leaf().prop_recursive(2, 24, 3, |inner| {
        prop_oneof![
            (
                prop::collection::vec(prop::collection::vec(inner.clone(), 1..3), 1..3),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(branches, first, fail_fast)| G::Parallel {
                    branches,
                    first,
                    fail_fast
                }),
            (1u32..3, prop::collection::vec(inner, 1..3))
                .prop_map(|(concurrency, body)| G::Foreach { concurrency, body }),
        ]
    });
    prop::collection::vec(node, 1..6)
}

/// Renders a block; returns the steps and, per task step id, (max attempts, foreach depth).
fn render(
    block: &[G],
    next_id: &mut u32,
    depth: u32,
    limits: &mut BTreeMap<String, (u32, u32)>,
) -> Vec<Value> {
    let ids: Vec<String> = block
        .iter()
        .map(|_| {
            *next_id += 1;
            format!("s{next_id}")
        })
        .collect();
    let n = block.len();
    let mut out = Vec::new();
    for (i, g) in block.iter().enumerate() {
        let id = ids[i].clone();
        let after = ids.get(i + 1).cloned();
        let step = match g {
            G::Task {
                max_attempts,
                catch,
            } => {
                limits.insert(id.clone(), (max_attempts.unwrap_or(1), depth));
                let mut task = json!({ "connector": "http", "args": { "n": "${ size(input.xs) }" }, "timeout": "5s" });
                if let Some(m) = max_attempts {
                    task["retry"] = json!({ "max_attempts": m, "initial_backoff": "1s", "jitter": 0.5, "retry_on": ["retryable", "timeout"] });
                }
                let mut s = json!({ "id": id, "task": task });
                if *catch && let Some(a) = &after {
                    s["catch"] = json!([{ "errors": ["fatal"], "next": a }]);
                }
                s
            }
            G::Choice if after.is_some() => {
                let target = ids.get(i + 2).or(after.as_ref()).cloned();
                json!({ "id": id, "choice": { "cases": [{ "when": "size(input.xs) > 1", "next": target }], "default": after } })
            }
            G::Fail if i + 1 == n => {
                json!({ "id": id, "fail": { "message": "generated failure" } })
            }
            G::Choice | G::Fail | G::Set => {
                json!({ "id": id, "set": { "vars": { "v": "${ size(input.xs) }" } } })
            }
            G::Wait { secs } => json!({ "id": id, "wait": { "duration": format!("{secs}s") } }),
            G::Event { timeout_secs } => {
                json!({ "id": id, "wait_for_event": { "signal": "go", "timeout": format!("{timeout_secs}s") } })
            }
            G::Parallel {
                branches,
                first,
                fail_fast,
            } => {
                let rendered: Vec<Value> = branches
                    .iter()
                    .map(|b| json!({ "steps": render(b, next_id, depth, limits) }))
                    .collect();
                json!({ "id": id, "parallel": { "branches": rendered, "join": if *first { "first" } else { "all" }, "fail_fast": fail_fast } })
            }
            G::Foreach { concurrency, body } => {
                let steps = render(body, next_id, depth + 1, limits);
                json!({ "id": id, "foreach": { "items": "input.xs", "concurrency": concurrency, "steps": steps } })
            }
        };
        out.push(step);
    }
    out
}

struct Driver {
    wf: Workflow,
    state: Option<RunState>,
    now: DateTime<Utc>,
    timers: BTreeMap<String, DateTime<Utc>>,
    open: Vec<TaskMessage>,
    delivered: Vec<Input>,
    dispatched: BTreeSet<(StepId, u32)>,
    per_step: BTreeMap<String, u32>,
}

impl Driver {
    fn apply(&mut self, input: Input) {
        let before = self.state.clone();
        let was_terminal = before.as_ref().is_some_and(RunState::is_terminal);
        let t = advance(&self.wf, self.state.take(), input.clone(), self.now);
        // Deterministic byte for byte: the same state, input and time again.
        let again = advance(&self.wf, before.clone(), input.clone(), self.now);
        assert_eq!(
            serde_json::to_vec(&again.commands).unwrap(),
            serde_json::to_vec(&t.commands).unwrap(),
            "the same input gave different commands"
        );
        assert_eq!(
            again.state.map(|s| s.encode()),
            t.state.as_ref().map(RunState::encode),
            "the same input gave a different state"
        );
        // What the orchestrator stores reads back as the same state.
        if let Some(st) = &t.state {
            let bytes = st.encode();
            let back = RunState::decode(&bytes).expect("a state decodes");
            assert_eq!(
                back.encode(),
                bytes,
                "a state changed through encode and decode"
            );
        }
        if was_terminal {
            assert!(
                t.commands.is_empty(),
                "a finished run produced {:?}",
                t.commands
            );
            assert_eq!(t.state, before, "a finished run changed");
        }
        for c in &t.commands {
            match c {
                Command::StartTimer { id, due } => {
                    assert!(
                        self.timers.insert(id.clone(), *due).is_none(),
                        "timer {id} started twice"
                    );
                }
                Command::CancelTimer { id } => {
                    assert!(
                        self.timers.remove(id).is_some(),
                        "cancelled unknown timer {id}"
                    );
                }
                Command::DispatchTask(m) => {
                    assert!(
                        self.dispatched.insert((m.step.clone(), m.attempt)),
                        "attempt {}/{} dispatched twice",
                        m.step,
                        m.attempt
                    );
                    *self.per_step.entry(m.step.to_string()).or_default() += 1;
                    self.open.push(m.clone());
                }
                _ => {}
            }
        }
        self.state = t.state;
        let state_timers: BTreeSet<&String> = self
            .state
            .as_ref()
            .map(|s| s.timers.keys().collect())
            .unwrap_or_default();
        let ours: BTreeSet<&String> = self.timers.keys().collect();
        assert_eq!(
            state_timers, ours,
            "the engine's timers and the commands disagree"
        );
        if let Input::StepResult(_) = input {
            self.delivered.push(input);
            // Every recent result, delivered again now, must change nothing.
            let recent: Vec<Input> = self.delivered.iter().rev().take(16).cloned().collect();
            for old in recent {
                let t = advance(&self.wf, self.state.clone(), old, self.now);
                assert!(
                    t.commands.is_empty(),
                    "a redelivered result produced {:?}",
                    t.commands
                );
                assert_eq!(
                    t.state, self.state,
                    "a redelivered result changed the state"
                );
            }
        }
    }

    fn answer(&mut self, index: usize, code: u8) {
        if self.open.is_empty() {
            return;
        }
        let task = self.open.remove(index % self.open.len());
        let outcome = match code % 6 {
            0 | 1 => TaskOutcome::Ok {
                output: json!({"ok": true}),
            },
            2 => TaskOutcome::Error {
                class: ErrorClass::Retryable,
                message: "flaky".into(),
            },
            3 => TaskOutcome::Error {
                class: ErrorClass::Fatal,
                message: "bad".into(),
            },
            4 => TaskOutcome::Error {
                class: ErrorClass::Timeout,
                message: "slow".into(),
            },
            _ => TaskOutcome::Error {
                class: ErrorClass::CircuitOpen,
                message: "open".into(),
            },
        };
        self.apply(Input::StepResult(TaskResult {
            tenant: task.tenant,
            run: task.run,
            step: task.step,
            attempt: task.attempt,
            outcome,
            started_at: self.now,
            finished_at: self.now,
        }));
    }

    fn duplicate(&mut self, index: usize) {
        if self.delivered.is_empty() {
            return;
        }
        let input = self.delivered[index % self.delivered.len()].clone();
        let before = self.state.clone();
        let t = advance(&self.wf, self.state.clone(), input, self.now);
        assert!(
            t.commands.is_empty(),
            "a duplicated result produced {:?}",
            t.commands
        );
        assert_eq!(t.state, before, "a duplicated result changed the state");
    }

    /// Fires the earliest timer, as the orchestrator does: it forgets the timer and
    /// hands the engine the input.
    fn fire_timer(&mut self) -> bool {
        let Some((id, due)) = self
            .timers
            .iter()
            .min_by_key(|(id, due)| (**due, (*id).clone()))
            .map(|(i, d)| (i.clone(), *d))
        else {
            return false;
        };
        self.now = self.now.max(due);
        self.timers.remove(&id);
        self.apply(Input::TimerFired { id });
        true
    }
}

fn terminal(d: &Driver) -> bool {
    d.state.as_ref().is_some_and(RunState::is_terminal)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, .. ProptestConfig::default() })]

    #[test]
    fn random_workflows_under_random_inputs_keep_every_invariant(
        block in block(),
        xs in prop::collection::vec(0i64..5, 0..4),
        tape in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut next_id = 0;
        let mut limits = BTreeMap::new();
        let steps = render(&block, &mut next_id, 0, &mut limits);
        let doc = json!({ "id": "generated", "timeout": "30d", "steps": steps });
        let wf = match validate_source("generated.json", &doc.to_string()) {
            Ok(w) => w,
            Err(e) => panic!("generated workflow is invalid:\n{}\n{doc:#}", e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")),
        };
        let mut d = Driver {
            wf,
            state: None,
            now: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            timers: BTreeMap::new(),
            open: Vec::new(),
            delivered: Vec::new(),
            dispatched: BTreeSet::new(),
            per_step: BTreeMap::new(),
        };
        d.apply(Input::Trigger { run: RunId::from_uuid(uuid::Uuid::from_u128(1)), tenant: TenantId::new("t").unwrap(), input: json!({ "xs": xs }) });

        let mut it = tape.chunks(2);
        for chunk in &mut it {
            let (a, b) = (chunk[0], *chunk.get(1).unwrap_or(&0));
            match a % 12 {
                0..=5 => d.answer(b as usize, a / 12),
                6 => d.duplicate(b as usize),
                7 | 8 => { d.fire_timer(); }
                9 | 10 => d.apply(Input::Signal { name: "go".into(), correlation: None, payload: json!(b) }),
                _ => { d.now += Duration::seconds(i64::from(b)); }
            }
        }
        if tape.first().is_some_and(|b| *b == 255) {
            d.apply(Input::Cancel { reason: "random".into() });
        }
        // Drain: answer everything successfully and let time pass; the run must end.
        for _ in 0..100_000 {
            if terminal(&d) { break; }
            if !d.open.is_empty() {
                d.answer(0, 0);
            } else if !d.fire_timer() {
                // Nothing to answer and no timer: only a signal can be awaited.
                d.apply(Input::Signal { name: "go".into(), correlation: None, payload: json!(null) });
            }
        }
        prop_assert!(terminal(&d), "the run did not end: {:?}", d.state.as_ref().map(|s| &s.frames));
        prop_assert!(d.timers.is_empty(), "timers left after the end: {:?}", d.timers);

        // Retries stay within policy: per step, attempts <= max_attempts * items^depth.
        for (step, count) in &d.per_step {
            let (max, depth) = limits[step];
            let factor = (xs.len().max(1) as u32).pow(depth);
            prop_assert!(*count <= max * factor, "{step}: {count} dispatches, limit {max} x {factor}");
        }
        // Terminal stays terminal, whatever comes.
        let end = d.state.clone();
        d.apply(Input::Signal { name: "go".into(), correlation: None, payload: json!(1) });
        d.apply(Input::Cancel { reason: "late".into() });
        prop_assert_eq!(d.state, end);
    }
}
