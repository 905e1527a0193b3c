//! The four workflows of the chaos mix. None of them can fail on its own: the noops
//! cannot fail, the signal is always sent, and the flaky call fails once (503, retryable)
//! and then succeeds, well within its retry policy.

use serde_json::{Value, json};

/// A workflow of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// One noop task.
    Noop1,
    /// Ten noop tasks in a row.
    Noop10,
    /// A noop, a `wait_for_event` on signal `go` (sent by the driver right after the
    /// 202), a noop.
    Signal,
    /// An `http` GET of the driver's flaky peer: 503 the first time per run, then 200.
    Flaky,
}

/// The signal the `Signal` workflow waits for.
pub const SIGNAL: &str = "go";

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Noop1, Kind::Noop10, Kind::Signal, Kind::Flaky];

    pub fn id(self) -> &'static str {
        match self {
            Kind::Noop1 => "chaos-noop-1",
            Kind::Noop10 => "chaos-noop-10",
            Kind::Signal => "chaos-signal",
            Kind::Flaky => "chaos-flaky",
        }
    }

    /// The name used in `--mix`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Noop1 => "noop1",
            Kind::Noop10 => "noop10",
            Kind::Signal => "signal",
            Kind::Flaky => "flaky",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The workflow document; `flaky_port` is where the driver's flaky peer listens.
    pub fn document(self, flaky_port: u16) -> Value {
        let noop = |id: &str, n: usize| json!({"id": id, "task": {"connector": "noop", "args": {"output": n}}});
        match self {
            Kind::Noop1 => json!({"id": self.id(), "steps": [noop("s0", 0)]}),
            Kind::Noop10 => {
                let steps: Vec<Value> = (0..10).map(|i| noop(&format!("s{i}"), i)).collect();
                json!({"id": self.id(), "steps": steps})
            }
            Kind::Signal => json!({"id": self.id(), "steps": [
                noop("before", 0),
                {"id": "wait", "wait_for_event": {"signal": SIGNAL}},
                noop("after", 1),
            ]}),
            Kind::Flaky => json!({"id": self.id(), "steps": [{
                "id": "call",
                "task": {
                    "connector": "http",
                    "args": {"method": "GET", "url": format!("http://127.0.0.1:{flaky_port}/flaky/${{ run.id }}")},
                    "timeout": "10s",
                    "retry": {
                        "max_attempts": 30,
                        "initial_backoff": "200ms",
                        "max_backoff": "2s",
                        "retry_on": ["retryable", "timeout", "circuit_open"]
                    }
                }
            }]}),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_document_is_a_valid_workflow() {
        for k in Kind::ALL {
            let doc = k.document(4321).to_string();
            aiq_engine::validate_source("chaos.json", &doc).unwrap();
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
        let flaky = Kind::Flaky.document(4321).to_string();
        assert!(
            flaky.contains("http://127.0.0.1:4321/flaky/${ run.id }"),
            "{flaky}"
        );
    }
}
