//! What keeps a process from being ready, as its stages report it: a stage that cannot
//! do its work (the sink cannot reach the history store, say) says so here, and the
//! process's `/readyz` answers 503 with the reasons until the stage clears them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The process's open problems, by what they concern (`sink.history_store`). A clone
/// shares them.
#[derive(Clone, Default, Debug)]
pub struct Health {
    problems: Arc<Mutex<BTreeMap<&'static str, String>>>,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// Records that `what` is failing, and why (the newest reason wins).
    pub fn fail(&self, what: &'static str, why: impl Into<String>) {
        self.lock().insert(what, why.into());
    }

    /// Records that `what` works again.
    pub fn clear(&self, what: &'static str) {
        self.lock().remove(what);
    }

    /// The open problems; empty when the stages that report here are well.
    pub fn problems(&self) -> BTreeMap<String, String> {
        self.lock()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        self.problems.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_shared_and_cleared() {
        let h = Health::new();
        let seen = h.clone();
        h.fail("sink.history_store", "unreachable");
        h.fail("sink.history_store", "still unreachable");
        assert_eq!(
            seen.problems()
                .get("sink.history_store")
                .map(String::as_str),
            Some("still unreachable")
        );
        h.clear("sink.history_store");
        assert!(seen.problems().is_empty());
    }
}
