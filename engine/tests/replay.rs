//! Replaying a recorded input log gives the same commands, byte for byte, every time —
//! and the ones checked in (`snapshots/replay__order_sync_replay.snap`).

use aiq_engine::run::Input;
use aiq_engine::{advance, validate_source};
use chrono::{DateTime, Utc};
use serde::Deserialize;

#[derive(Deserialize)]
struct Entry {
    at: DateTime<Utc>,
    input: Input,
}

fn replay() -> String {
    let text = include_str!("../../examples/workflows/order-sync.yaml");
    let wf = validate_source("order-sync.yaml", text)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .with_version(3);
    let log = include_str!("fixtures/order-sync.replay.jsonl");
    let mut state = None;
    let mut out = String::new();
    for (n, line) in log.lines().enumerate() {
        let entry: Entry =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("log line {}: {e}", n + 1));
        let t = advance(&wf, state, entry.input, entry.at);
        out.push_str(&format!("# input {}\n", n + 1));
        for c in &t.commands {
            out.push_str(&serde_json::to_string(c).unwrap_or_default());
            out.push('\n');
        }
        state = t.state;
    }
    out
}

#[test]
fn order_sync_replay() {
    let first = replay();
    for _ in 0..3 {
        assert_eq!(replay(), first, "a replay differed");
    }
    insta::assert_snapshot!(first);
}
