//! The verdict of a chaos run: every accepted trigger (a 202) set against what the four
//! witnesses hold — the committed events topic, the store's `runs` table and the Parquet
//! history. Pure: the readers in `observe` fill [`Observations`], this module only counts.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// A trigger answered 202: the run it named, and what it was meant to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedRun {
    /// The trigger's index in the plan (its `Idempotency-Key` is derived from it).
    pub i: u64,
    /// The run id, lower-case hyphenated UUID.
    pub run: String,
    pub tenant: String,
    pub workflow: String,
    /// The 202 said `idempotent-replayed`: an earlier attempt had been accepted by Kafka
    /// but its answer never reached the driver.
    #[serde(default)]
    pub replayed: bool,
}

/// One run record of one witness: a terminal event, a store row, a Parquet row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub run: String,
    pub tenant: String,
    /// `running`, `succeeded`, `failed`, `cancelled`, `timed_out`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Record {
    pub fn new(run: &str, tenant: &str, status: &str, error: Option<&str>) -> Self {
        Record {
            run: run.to_ascii_lowercase(),
            tenant: tenant.to_owned(),
            status: status.to_owned(),
            error: error.map(str::to_owned),
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.status != "running"
    }
}

/// What the witnesses hold, read after the drain.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Run ids with a `running` event on the committed events topic, with their tenant.
    pub started: HashMap<String, String>,
    /// Terminal run events on the committed events topic: one entry per record.
    pub events: Vec<Record>,
    /// Rows of the store's `runs` table (at most one per run; any status).
    pub store: Vec<Record>,
    /// Terminal rows of the Parquet `runs` table: one entry per row.
    pub history: Vec<Record>,
}

/// A run behind a count, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Example {
    pub run: String,
    pub tenant: String,
    pub workflow: String,
    pub detail: String,
}

/// The counts of RELIABILITY.md. Every count but `accepted` and the `terminal_*` ones
/// should be zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    /// Distinct run ids answered 202.
    pub accepted: u64,
    /// Accepted runs with at least one terminal event / terminal store row / terminal
    /// Parquet row.
    pub terminal_events: u64,
    pub terminal_store: u64,
    pub terminal_history: u64,
    /// Accepted, and no trace of the run anywhere: no event, no store row, no Parquet row.
    pub lost: u64,
    /// Accepted and started (or seen in the store), but no terminal event.
    pub stuck: u64,
    /// More than one terminal event on the events topic, or more than one terminal
    /// Parquet row, for one run.
    pub doubled: u64,
    /// Runs of the driver's tenants on the events topic that no 202 named: a trigger
    /// started twice under one `Idempotency-Key`.
    pub unrequested: u64,
    /// A terminal event, but no terminal store row (missing or still `running`).
    pub missing_in_store: u64,
    /// A terminal event, but no terminal Parquet row.
    pub missing_in_history: u64,
    /// The witnesses name different terminal statuses for one run.
    pub disagreeing: u64,
    /// Ended anything but `succeeded` (by the events topic), though no workflow of the
    /// mix can fail on its own.
    pub failed: u64,
    /// Terminal statuses by the events topic (the first terminal event of each run).
    pub by_status: BTreeMap<String, u64>,
    /// The first few runs behind each non-zero count.
    pub examples: BTreeMap<String, Vec<Example>>,
}

/// Examples kept per count.
pub const EXAMPLES: usize = 5;

impl Verdict {
    /// The counts that should be zero, by name.
    pub fn problems(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("lost", self.lost),
            ("stuck", self.stuck),
            ("doubled", self.doubled),
            ("unrequested", self.unrequested),
            ("missing_in_store", self.missing_in_store),
            ("missing_in_history", self.missing_in_history),
            ("disagreeing", self.disagreeing),
            ("failed", self.failed),
        ]
    }

    /// Every problem count is zero.
    pub fn clean(&self) -> bool {
        self.problems().iter().all(|(_, n)| *n == 0)
    }

    /// Accepted runs not yet seen to end everywhere: what a drain waits for.
    pub fn unsettled(&self) -> u64 {
        self.lost + self.stuck + self.missing_in_store + self.missing_in_history
    }

    fn note(&mut self, count: &str, run: &AcceptedRun, detail: String) {
        let list = self.examples.entry(count.to_owned()).or_default();
        if list.len() < EXAMPLES {
            list.push(Example {
                run: run.run.clone(),
                tenant: run.tenant.clone(),
                workflow: run.workflow.clone(),
                detail,
            });
        }
    }

    /// A few lines for a terminal.
    pub fn text(&self) -> String {
        let mut out = format!(
            "accepted {} | ended on the events topic {} | in the store {} | in the Parquet history {}\n",
            self.accepted, self.terminal_events, self.terminal_store, self.terminal_history
        );
        let counts: Vec<String> = self
            .problems()
            .iter()
            .map(|(n, c)| format!("{n} {c}"))
            .collect();
        out.push_str(&counts.join(" | "));
        out.push('\n');
        let statuses: Vec<String> = self
            .by_status
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        out.push_str(&format!("terminal statuses: {}\n", statuses.join(", ")));
        for (count, list) in &self.examples {
            out.push_str(&format!("first {count}:\n"));
            for e in list {
                out.push_str(&format!(
                    "  {} {} {}: {}\n",
                    e.tenant, e.workflow, e.run, e.detail
                ));
            }
        }
        out
    }
}

fn index(records: &[Record]) -> HashMap<&str, Vec<&Record>> {
    let mut m: HashMap<&str, Vec<&Record>> = HashMap::new();
    for r in records {
        m.entry(r.run.as_str()).or_default().push(r);
    }
    m
}

/// Sets every accepted run against the witnesses. `tenants` are the driver's: a run of
/// theirs that no 202 named counts as `unrequested`.
pub fn compare(accepted: &[AcceptedRun], obs: &Observations, tenants: &HashSet<String>) -> Verdict {
    let mut v = Verdict::default();
    let events = index(&obs.events);
    let store = index(&obs.store);
    let history: Vec<Record> = obs
        .history
        .iter()
        .filter(|r| r.is_terminal())
        .cloned()
        .collect();
    let history = index(&history);
    let started: HashMap<String, &str> = obs
        .started
        .iter()
        .map(|(r, t)| (r.to_ascii_lowercase(), t.as_str()))
        .collect();
    let accepted: Vec<AcceptedRun> = accepted
        .iter()
        .map(|a| AcceptedRun {
            run: a.run.to_ascii_lowercase(),
            ..a.clone()
        })
        .collect();
    let mut seen = HashSet::new();
    for a in &accepted {
        if !seen.insert(a.run.as_str()) {
            continue;
        }
        v.accepted += 1;
        let ev = events.get(a.run.as_str()).map_or(&[][..], Vec::as_slice);
        let st = store
            .get(a.run.as_str())
            .and_then(|rows| rows.last().copied());
        let hi = history.get(a.run.as_str()).map_or(&[][..], Vec::as_slice);
        if !ev.is_empty() {
            v.terminal_events += 1;
        }
        if st.is_some_and(Record::is_terminal) {
            v.terminal_store += 1;
        }
        if !hi.is_empty() {
            v.terminal_history += 1;
        }
        let Some(first) = ev.first() else {
            let traces = started.contains_key(&a.run) || st.is_some() || !hi.is_empty();
            if traces {
                v.stuck += 1;
                let detail = match st {
                    Some(r) => format!("no terminal event; store row says {}", r.status),
                    None => "started, no terminal event".to_owned(),
                };
                v.note("stuck", a, detail);
            } else {
                v.lost += 1;
                v.note("lost", a, "accepted (202), never seen again".to_owned());
            }
            continue;
        };
        *v.by_status.entry(first.status.clone()).or_default() += 1;
        if first.status != "succeeded" {
            v.failed += 1;
            let detail = format!(
                "{}: {}",
                first.status,
                first.error.as_deref().unwrap_or("(no error message)")
            );
            v.note("failed", a, detail);
        }
        if ev.len() > 1 || hi.len() > 1 {
            v.doubled += 1;
            let statuses: Vec<&str> = ev.iter().map(|r| r.status.as_str()).collect();
            v.note(
                "doubled",
                a,
                format!(
                    "{} terminal events ({}), {} terminal Parquet rows",
                    ev.len(),
                    statuses.join(", "),
                    hi.len()
                ),
            );
        }
        match st {
            Some(r) if r.is_terminal() => {
                if r.status != first.status {
                    v.disagreeing += 1;
                    v.note(
                        "disagreeing",
                        a,
                        format!("events say {}, the store {}", first.status, r.status),
                    );
                }
            }
            Some(r) => {
                v.missing_in_store += 1;
                v.note(
                    "missing_in_store",
                    a,
                    format!(
                        "ended {}, the store row still says {}",
                        first.status, r.status
                    ),
                );
            }
            None => {
                v.missing_in_store += 1;
                v.note(
                    "missing_in_store",
                    a,
                    format!("ended {}, no store row", first.status),
                );
            }
        }
        match hi.first() {
            Some(h) if h.status != first.status => {
                v.disagreeing += 1;
                v.note(
                    "disagreeing",
                    a,
                    format!(
                        "events say {}, the Parquet history {}",
                        first.status, h.status
                    ),
                );
            }
            Some(_) => {}
            None => {
                v.missing_in_history += 1;
                v.note(
                    "missing_in_history",
                    a,
                    format!("ended {}, no terminal Parquet row", first.status),
                );
            }
        }
    }
    let mut strangers: Vec<(&str, &str)> = started
        .iter()
        .map(|(r, t)| (r.as_str(), *t))
        .chain(
            obs.events
                .iter()
                .map(|r| (r.run.as_str(), r.tenant.as_str())),
        )
        .filter(|(r, t)| tenants.contains(*t) && !seen.contains(r))
        .collect();
    strangers.sort_unstable();
    strangers.dedup_by_key(|(r, _)| *r);
    v.unrequested = strangers.len() as u64;
    for (run, tenant) in strangers.into_iter().take(EXAMPLES) {
        v.examples
            .entry("unrequested".to_owned())
            .or_default()
            .push(Example {
                run: run.to_owned(),
                tenant: tenant.to_owned(),
                workflow: String::new(),
                detail: "on the events topic, named by no 202".to_owned(),
            });
    }
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn acc(i: u64, run: &str) -> AcceptedRun {
        AcceptedRun {
            i,
            run: run.to_owned(),
            tenant: "t0".to_owned(),
            workflow: "chaos-noop-1".to_owned(),
            replayed: false,
        }
    }

    fn ok(run: &str) -> Record {
        Record::new(run, "t0", "succeeded", None)
    }

    /// A run that ended well everywhere.
    fn settled(obs: &mut Observations, run: &str) {
        obs.started.insert(run.to_owned(), "t0".to_owned());
        obs.events.push(ok(run));
        obs.store.push(ok(run));
        obs.history.push(ok(run));
        obs.history.push(Record::new(run, "t0", "running", None));
    }

    fn tenants() -> HashSet<String> {
        ["t0".to_owned()].into_iter().collect()
    }

    #[test]
    fn runs_that_ended_well_everywhere_are_clean() {
        let mut obs = Observations::default();
        settled(&mut obs, "a");
        settled(&mut obs, "b");
        // A stranger of another tenant is none of our business.
        obs.events
            .push(Record::new("z", "other", "failed", Some("x")));
        let v = compare(&[acc(0, "a"), acc(1, "b")], &obs, &tenants());
        assert!(v.clean(), "{v:?}");
        assert_eq!(
            (
                v.accepted,
                v.terminal_events,
                v.terminal_store,
                v.terminal_history
            ),
            (2, 2, 2, 2)
        );
        assert_eq!(v.by_status.get("succeeded"), Some(&2));
        assert_eq!(v.unsettled(), 0);
    }

    #[test]
    fn each_fault_lands_in_its_own_count() {
        let mut obs = Observations::default();
        settled(&mut obs, "good");
        // lost: accepted, nowhere.
        // stuck: started, never ended; the store still says running.
        obs.started.insert("stuck".into(), "t0".into());
        obs.store.push(Record::new("stuck", "t0", "running", None));
        // doubled: two terminal events.
        settled(&mut obs, "twice");
        obs.events.push(ok("twice"));
        // doubled by the history alone.
        settled(&mut obs, "twice-parquet");
        obs.history.push(ok("twice-parquet"));
        // failed by a crash, with its message.
        obs.started.insert("crashed".into(), "t0".into());
        let failed = Record::new("crashed", "t0", "failed", Some("worker lost the task"));
        obs.events.push(failed.clone());
        obs.store.push(failed.clone());
        obs.history.push(failed);
        // missing in the store and in the history.
        obs.started.insert("unsunk".into(), "t0".into());
        obs.events.push(ok("unsunk"));
        obs.store.push(Record::new("unsunk", "t0", "running", None));
        // disagreeing: the store says failed.
        settled(&mut obs, "odd");
        obs.store.retain(|r| r.run != "odd");
        obs.store.push(Record::new("odd", "t0", "failed", None));
        // unrequested: a run of ours no 202 named.
        obs.started.insert("ghost".into(), "t0".into());
        obs.events.push(ok("ghost"));
        let accepted: Vec<AcceptedRun> = [
            "good",
            "lost",
            "stuck",
            "twice",
            "twice-parquet",
            "crashed",
            "unsunk",
            "odd",
        ]
        .iter()
        .enumerate()
        .map(|(i, r)| acc(i as u64, r))
        .collect();
        // A repeated acceptance of one run counts once.
        let mut accepted = accepted;
        accepted.push(acc(99, "good"));
        let v = compare(&accepted, &obs, &tenants());
        assert_eq!(v.accepted, 8);
        assert_eq!(v.lost, 1, "{v:?}");
        assert_eq!(v.stuck, 1);
        assert_eq!(v.doubled, 2);
        assert_eq!(v.failed, 1);
        assert_eq!(v.missing_in_store, 1);
        assert_eq!(v.missing_in_history, 1);
        assert_eq!(v.disagreeing, 1);
        assert_eq!(v.unrequested, 1);
        assert_eq!(v.unsettled(), 4);
        assert!(!v.clean());
        assert_eq!(v.by_status.get("failed"), Some(&1));
        assert_eq!(v.by_status.get("succeeded"), Some(&5));
        assert_eq!(
            v.examples["failed"][0].detail,
            "failed: worker lost the task"
        );
        assert_eq!(v.examples["lost"][0].run, "lost");
        assert_eq!(v.examples["unrequested"][0].run, "ghost");
        let text = v.text();
        assert!(text.contains("lost 1 | stuck 1 | doubled 2"), "{text}");
        assert!(text.contains("worker lost the task"), "{text}");
    }

    #[test]
    fn timed_out_counts_as_failed_and_examples_are_bounded() {
        let mut obs = Observations::default();
        let mut accepted = Vec::new();
        for i in 0..20 {
            let run = format!("r{i}");
            obs.started.insert(run.clone(), "t0".into());
            let r = Record::new(&run, "t0", "timed_out", Some("step s3 timed out"));
            obs.events.push(r.clone());
            obs.store.push(r.clone());
            obs.history.push(r);
            accepted.push(acc(i, &run));
        }
        let v = compare(&accepted, &obs, &tenants());
        assert_eq!(v.failed, 20);
        assert_eq!(v.examples["failed"].len(), EXAMPLES);
        assert_eq!(v.by_status.get("timed_out"), Some(&20));
        assert_eq!(v.unsettled(), 0);
    }

    #[test]
    fn run_ids_are_compared_without_regard_to_case() {
        let mut obs = Observations::default();
        settled(&mut obs, "ABC");
        let v = compare(&[acc(0, "abc")], &obs, &tenants());
        assert!(v.clean(), "{v:?}");
    }
}
