//! `aiq-load chaos --scale`: the orchestrator scaled 1 → 2 → 3 → 2 → 1 instances under
//! the chaos run's steady load, with a SIGKILL at each change.
//!
//! `aiq serve` runs ingest, worker and sink (never killed); the orchestrators run as
//! `aiq serve` processes of their own (`serve.roles = orchestrator`), each under a
//! supervisor, with the instance ids `chaos-o1` … `chaos-o3`, an operations listener
//! each, JSON logs at `info` for the orchestrator. The sending time is cut into five equal
//! phases; at the start of phases 2 to 5 the fleet changes:
//!
//! | change | what is done |
//! | --- | --- |
//! | 1 → 2 | start `o2`; `kill_delay` later SIGKILL `o1`, which its supervisor restarts |
//! | 2 → 3 | start `o3`; `kill_delay` later SIGKILL `o2`, which its supervisor restarts |
//! | 3 → 2 | SIGKILL `o3` for good |
//! | 2 → 1 | SIGKILL `o2` for good |
//!
//! After the drain, [`report`] measures each change's stall from the committed events
//! topic (the longest time in which no run or step event was produced, anywhere and on
//! one partition) and counts what each assignment kept and restored from the
//! orchestrators' logs ("partitions assigned").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::chaos::faults::{ServeCommand, Supervisor};

/// Instances at most.
pub const INSTANCES: usize = 3;

/// How the orchestrator instances are started and when the fleet changes.
#[derive(Debug, Clone)]
pub struct Scale {
    /// `aiq`, and the deployment's variables for every instance (on top of this
    /// process's environment; each instance's own are added).
    pub bin: PathBuf,
    pub env: Vec<(String, String)>,
    pub env_remove: Vec<String>,
    /// Instance n's operations listener is on the n-th of these ports.
    pub ops_ports: [u16; INSTANCES],
    /// Each of the five phases lasts this long.
    pub phase: Duration,
    /// From starting an instance to SIGKILLing another on a scale-up.
    pub kill_delay: Duration,
    /// `orchestrator-<n>.log` and `orchestrator-<n>.pid` go here.
    pub out: PathBuf,
}

impl Scale {
    fn command(&self, n: usize) -> ServeCommand {
        ServeCommand {
            bin: self.bin.clone(),
            env: self
                .env
                .iter()
                .cloned()
                .chain([
                    ("AIQ_SERVE_ROLES".into(), "orchestrator".into()),
                    ("AIQ_ORCHESTRATOR_INSTANCE_ID".into(), instance_id(n)),
                    (
                        "AIQ_SERVE_OPS_LISTEN".into(),
                        format!("127.0.0.1:{}", self.ops_ports[n - 1]),
                    ),
                    ("AIQ_LOG_FORMAT".into(), "json".into()),
                    ("AIQ_LOG_FILTER".into(), "warn,aiq_orchestrator=info".into()),
                ])
                .collect(),
            env_remove: self.env_remove.clone(),
            log: self.log(n),
            pid_file: Some(self.out.join(format!("orchestrator-{n}.pid"))),
        }
    }

    fn log(&self, n: usize) -> PathBuf {
        self.out.join(format!("orchestrator-{n}.log"))
    }
}

pub fn instance_id(n: usize) -> String {
    format!("chaos-o{n}")
}

/// What is done to one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Start(usize),
    /// SIGKILL; the supervisor starts it again (same instance id) 0.3 s later.
    KillRestart(usize),
    /// SIGKILL, not started again.
    KillForGood(usize),
}

/// The four changes: from, to, and what is done (a start is followed by `kill_delay`).
pub const CHANGES: [(usize, usize, &[Action]); 4] = [
    (1, 2, &[Action::Start(2), Action::KillRestart(1)]),
    (2, 3, &[Action::Start(3), Action::KillRestart(2)]),
    (3, 2, &[Action::KillForGood(3)]),
    (2, 1, &[Action::KillForGood(2)]),
];

/// The running instances, by number (1-based).
pub struct Fleet {
    scale: Scale,
    instances: Vec<Option<Supervisor>>,
    /// Restarts of instances stopped since.
    restarts_before: u64,
}

impl Fleet {
    /// Starts instance 1.
    pub fn start(scale: &Scale) -> std::io::Result<Fleet> {
        let mut f = Fleet {
            scale: scale.clone(),
            instances: (0..=INSTANCES).map(|_| None).collect(),
            restarts_before: 0,
        };
        f.act(Action::Start(1))?;
        Ok(f)
    }

    /// Does `a`; returns the pid it started or killed.
    pub fn act(&mut self, a: Action) -> std::io::Result<Option<u32>> {
        Ok(match a {
            Action::Start(n) => {
                let s = Supervisor::start(self.scale.command(n))?;
                // Its thread notes the pid as it begins to wait for the child.
                let mut pid = s.pid();
                for _ in 0..50 {
                    if pid.is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    pid = s.pid();
                }
                self.instances[n] = Some(s);
                pid
            }
            Action::KillRestart(n) => self.instances[n].as_ref().and_then(Supervisor::kill9),
            Action::KillForGood(n) => {
                let pid = self.instances[n]
                    .as_ref()
                    .and_then(Supervisor::kill9_for_good);
                // Reaped by its thread; stopping it only joins the thread.
                if let Some(s) = self.instances[n].take() {
                    self.restarts_before += s.restarts.load(std::sync::atomic::Ordering::Relaxed);
                    s.stop();
                }
                pid
            }
        })
    }

    /// Restarts of each instance by its supervisor (after the SIGKILLs).
    pub fn restarts(&self) -> u64 {
        self.restarts_before
            + self
                .instances
                .iter()
                .flatten()
                .map(|s| s.restarts.load(std::sync::atomic::Ordering::Relaxed))
                .sum::<u64>()
    }

    /// Stops every instance left (SIGTERM, then SIGKILL after 30 s).
    pub fn stop(self) {
        for s in self.instances.into_iter().flatten() {
            s.stop();
        }
    }
}

/// One change as it was done.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub from: usize,
    pub to: usize,
    /// When its first action was done: ms since the epoch, and s after the drive began.
    pub at_ms: i64,
    pub at_s: f64,
    /// What was done, with pids and times (s after the drive began).
    pub actions: Vec<String>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Changes the fleet at the start of phases 2 to 5 of the drive that began at `start`.
pub async fn step(
    start: Instant,
    phase: Duration,
    kill_delay: Duration,
    fleet: Arc<Mutex<Fleet>>,
) -> Vec<Change> {
    let mut done = Vec::new();
    for (k, (from, to, actions)) in CHANGES.iter().enumerate() {
        tokio::time::sleep_until((start + phase * (k as u32 + 1)).into()).await;
        let mut change = Change {
            from: *from,
            to: *to,
            at_ms: now_ms(),
            at_s: start.elapsed().as_secs_f64(),
            actions: Vec::new(),
        };
        for (i, a) in actions.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(kill_delay).await;
            }
            let r = fleet.lock().unwrap_or_else(|p| p.into_inner()).act(*a);
            let at = start.elapsed().as_secs_f64();
            change.actions.push(match r {
                Ok(Some(pid)) => format!("{a:?} at {at:.1} s (pid {pid})"),
                Ok(None) => format!("{a:?} at {at:.1} s: no such process"),
                Err(e) => format!("{a:?} at {at:.1} s failed: {e}"),
            });
        }
        eprintln!(
            "chaos: {:>4.0} s  scale {from} → {to}: {}",
            change.at_s,
            change.actions.join("; ")
        );
        done.push(change);
    }
    done
}

/// The longest gap between consecutive event timestamps that ends within `(from, to]`,
/// and where it began (ms). `sorted` is sorted. By its end: the silence a kill causes
/// begins a moment before the kill, with the last event before it.
fn longest_gap(sorted: &[i64], from: i64, to: i64) -> Option<(i64, i64)> {
    sorted
        .windows(2)
        .filter(|w| w[1] > from && w[1] <= to)
        .map(|w| (w[1] - w[0], w[0]))
        .max()
}

/// A stall: the longest time no run advanced within one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stall {
    /// No run or step event on any partition (s), and when it began (s after the
    /// window's start; negative: before it).
    pub everywhere_s: f64,
    pub everywhere_began_s: f64,
    /// The longest gap between two events of one partition of the events topic (the
    /// tenants of one orchestrator partition), which one, and when it began.
    pub one_partition_s: f64,
    pub partition: i32,
    pub one_partition_began_s: f64,
    /// Partitions with events whose longest gap in the window passed 2 s.
    pub partitions_over_2s: usize,
}

/// Stalls of the events in `stamps` (partition, ms) that end within `(from, to]`.
pub fn stall(stamps: &[(i32, i64)], from: i64, to: i64) -> Stall {
    let mut all: Vec<i64> = stamps.iter().map(|s| s.1).collect();
    all.sort_unstable();
    let mut by_part: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, t) in stamps {
        by_part.entry(*p).or_default().push(*t);
    }
    let secs = |ms: i64| ms as f64 / 1000.0;
    let mut s = Stall::default();
    if let Some((gap, began)) = longest_gap(&all, from, to) {
        s.everywhere_s = secs(gap);
        s.everywhere_began_s = secs(began - from);
    }
    for (p, mut ts) in by_part {
        ts.sort_unstable();
        if let Some((gap, began)) = longest_gap(&ts, from, to) {
            if gap > 2_000 {
                s.partitions_over_2s += 1;
            }
            if secs(gap) > s.one_partition_s {
                s.one_partition_s = secs(gap);
                s.partition = p;
                s.one_partition_began_s = secs(began - from);
            }
        }
    }
    s
}

/// What the orchestrators' logs say about assignments within a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rebalances {
    /// "partitions assigned" lines.
    pub assignments: u64,
    /// Partitions kept across a revocation (not restored).
    pub kept: u64,
    /// Partitions restored from the changelog.
    pub restored: u64,
    /// Changelog records read by those restores, and the longest restore (ms).
    pub restore_records: u64,
    pub restore_ms_max: u64,
    /// "partitions revoked" lines.
    pub revocations: u64,
}

/// One line of an orchestrator's JSON log that matters here.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    pub at_ms: i64,
    pub instance: usize,
    pub kind: LogKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LogKind {
    Assigned { kept: u64, restore: u64 },
    Restored { records: u64, ms: u64 },
    Revoked,
}

/// Parses one line of a JSON log (`tracing-subscriber`'s format).
pub fn parse_log_line(line: &str, instance: usize) -> Option<LogEvent> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let at_ms = chrono::DateTime::parse_from_rfc3339(v.get("timestamp")?.as_str()?)
        .ok()?
        .timestamp_millis();
    let f = v.get("fields")?;
    let n = |k: &str| f.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let kind = match f.get("message")?.as_str()? {
        "partitions assigned" => {
            // `restore = ?restore`: the debug form of a list of partitions, "[3, 4]".
            let list = f.get("restore").and_then(|r| r.as_str()).unwrap_or("");
            let restore = list
                .split(|c: char| !c.is_ascii_digit())
                .filter(|x| !x.is_empty())
                .count() as u64;
            LogKind::Assigned {
                kept: n("kept"),
                restore,
            }
        }
        "partitions assigned; state restored" => LogKind::Restored {
            records: n("records"),
            ms: n("ms"),
        },
        "partitions revoked" => LogKind::Revoked,
        _ => return None,
    };
    Some(LogEvent {
        at_ms,
        instance,
        kind,
    })
}

/// Every such line of the instances' logs under `out`.
pub fn read_logs(scale: &Scale) -> Vec<LogEvent> {
    let mut events = Vec::new();
    for n in 1..=INSTANCES {
        let Ok(text) = std::fs::read_to_string(scale.log(n)) else {
            continue;
        };
        events.extend(text.lines().filter_map(|l| parse_log_line(l, n)));
    }
    events.sort_by_key(|e| e.at_ms);
    events
}

/// Sums the log events within `[from, to)`.
pub fn rebalances(events: &[LogEvent], from: i64, to: i64) -> Rebalances {
    let mut r = Rebalances::default();
    for e in events.iter().filter(|e| e.at_ms >= from && e.at_ms < to) {
        match e.kind {
            LogKind::Assigned { kept, restore } => {
                r.assignments += 1;
                r.kept += kept;
                r.restored += restore;
            }
            LogKind::Restored { records, ms } => {
                r.restore_records += records;
                r.restore_ms_max = r.restore_ms_max.max(ms);
            }
            LogKind::Revoked => r.revocations += 1,
        }
    }
    r
}

/// One window of the report: the steady first phase, or a change up to the next one.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub name: String,
    pub from_s: f64,
    pub to_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    pub stall: Stall,
    pub rebalances: Rebalances,
}

/// What the scale run showed, beside the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub phase_s: f64,
    pub kill_delay_s: f64,
    pub windows: Vec<Window>,
    /// Restarts by the supervisors (the scale-up kills).
    pub orchestrator_restarts: u64,
    /// Runs with a doubled `running` event or a doubled step event, and the extra
    /// records of each (the first few).
    pub doubled_event_runs: u64,
    pub doubled_event_examples: Vec<(String, u64)>,
}

/// The report: the second half of the first phase (steady, the start of instance 1
/// behind it), then each change to the next one (the last to `end_ms`, when the last
/// trigger was sent); `start_ms` is the drive's start (ms since the epoch).
#[allow(clippy::too_many_arguments)]
pub fn report(
    scale: &Scale,
    start_ms: i64,
    end_ms: i64,
    changes: &[Change],
    stamps: &[(i32, i64)],
    logs: &[LogEvent],
    restarts: u64,
    doubled: &BTreeMap<String, u64>,
) -> Report {
    let warmup = scale.phase.as_millis() as i64 / 2;
    let mut bounds = vec![("steady, 1 instance".to_owned(), start_ms + warmup, None)];
    for c in changes {
        bounds.push((format!("{} → {}", c.from, c.to), c.at_ms, Some(c.clone())));
    }
    let s = |ms: i64| (ms - start_ms) as f64 / 1000.0;
    let windows = bounds
        .iter()
        .enumerate()
        .map(|(i, (name, from, change))| {
            let to = bounds.get(i + 1).map_or(end_ms, |b| b.1);
            Window {
                name: name.clone(),
                from_s: s(*from),
                to_s: s(to),
                change: change.clone(),
                stall: stall(stamps, *from, to),
                // The first window's assignments include the start of instance 1.
                rebalances: rebalances(logs, if i == 0 { 0 } else { *from }, to),
            }
        })
        .collect();
    Report {
        phase_s: scale.phase.as_secs_f64(),
        kill_delay_s: scale.kill_delay.as_secs_f64(),
        windows,
        orchestrator_restarts: restarts,
        doubled_event_runs: doubled.len() as u64,
        doubled_event_examples: doubled
            .iter()
            .take(5)
            .map(|(r, n)| (r.clone(), *n))
            .collect(),
    }
}

impl Report {
    /// A Markdown table, one row per window.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| window | from (s) | to (s) | no event anywhere (s) | longest on one partition (s) | partitions > 2 s | assignments | kept | restored | longest restore (ms) |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for w in &self.windows {
            let (st, r) = (&w.stall, &w.rebalances);
            out.push_str(&format!(
                "| {} | {:.1} | {:.1} | {:.2} | {:.2} (p{}) | {} | {} | {} | {} | {} |\n",
                w.name,
                w.from_s,
                w.to_s,
                st.everywhere_s,
                st.one_partition_s,
                st.partition,
                st.partitions_over_2s,
                r.assignments,
                r.kept,
                r.restored,
                r.restore_ms_max
            ));
        }
        out.push_str(&format!(
            "orchestrator restarts {}; runs with doubled run or step events {}\n",
            self.orchestrator_restarts, self.doubled_event_runs
        ));
        out
    }
}

/// Where the report goes beside summary.json: `scale.md`, and `event-times.csv` (the
/// partition and timestamp of every committed run and step event) to measure again.
pub fn write(out: &Path, r: &Report, stamps: &[(i32, i64)]) -> std::io::Result<()> {
    std::fs::write(out.join("scale.md"), r.table())?;
    let mut csv = String::with_capacity(stamps.len() * 20 + 20);
    csv.push_str("partition,timestamp_ms\n");
    for (p, t) in stamps {
        csv.push_str(&format!("{p},{t}\n"));
    }
    std::fs::write(out.join("event-times.csv"), csv)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_is_the_longest_gap_overlapping_the_window() {
        // Partition 0 every 100 ms; partition 1 silent from 1,000 to 4,000.
        let mut stamps: Vec<(i32, i64)> = (0..60).map(|i| (0, i * 100)).collect();
        stamps.extend([(1, 0), (1, 500), (1, 1_000), (1, 4_000), (1, 4_100)]);
        // Everything silent from 6,000 to 9,000.
        stamps.extend([(0, 9_000), (1, 9_050)]);
        let s = stall(&stamps, 2_000, 5_000);
        assert_eq!(s.everywhere_s, 0.1);
        assert_eq!((s.one_partition_s, s.partition), (3.0, 1));
        assert_eq!(s.one_partition_began_s, -1.0);
        assert_eq!(s.partitions_over_2s, 1);
        // A gap counts where it ends: partition 1's first one is not in a later window.
        let s = stall(&stamps, 4_000, 10_000);
        assert_eq!(s.everywhere_s, 3.1);
        assert_eq!(s.everywhere_began_s, 1.9);
        assert_eq!((s.one_partition_s, s.partition), (4.95, 1));
        assert_eq!(s.partitions_over_2s, 2);
        assert_eq!(stall(&stamps, 9_050, 20_000), Stall::default());
        assert_eq!(stall(&[], 0, 1), Stall::default());
    }

    #[test]
    fn log_lines_give_kept_and_restored() {
        let assigned = r#"{"timestamp":"2026-12-05T10:00:01.500Z","level":"INFO","fields":{"message":"partitions assigned","kept":4,"restore":"[0, 1, 11]"},"target":"aiq_orchestrator::runner::rebalance"}"#;
        let restored = r#"{"timestamp":"2026-12-05T10:00:02Z","level":"INFO","fields":{"message":"partitions assigned; state restored","partitions":"[0, 1, 11]","records":1200,"skipped":0,"ms":850},"target":"aiq_orchestrator::runner::rebalance"}"#;
        let revoked = r#"{"timestamp":"2026-12-05T10:00:01Z","level":"INFO","fields":{"message":"partitions revoked","parked":4},"target":"aiq_orchestrator::runner::rebalance"}"#;
        let none = r#"{"timestamp":"2026-12-05T10:00:01Z","level":"INFO","fields":{"message":"every stage is running"}}"#;
        let a = parse_log_line(assigned, 2).unwrap();
        assert_eq!(a.instance, 2);
        assert_eq!(
            a.kind,
            LogKind::Assigned {
                kept: 4,
                restore: 3
            }
        );
        let empty = assigned.replace("[0, 1, 11]", "[]");
        assert_eq!(
            parse_log_line(&empty, 2).unwrap().kind,
            LogKind::Assigned {
                kept: 4,
                restore: 0
            }
        );
        assert!(parse_log_line(none, 1).is_none());
        assert!(parse_log_line("not json", 1).is_none());
        let events: Vec<LogEvent> = [revoked, assigned, restored]
            .iter()
            .filter_map(|l| parse_log_line(l, 1))
            .collect();
        let t = events[0].at_ms;
        let r = rebalances(&events, t, t + 10_000);
        assert_eq!(
            r,
            Rebalances {
                assignments: 1,
                kept: 4,
                restored: 3,
                restore_records: 1200,
                restore_ms_max: 850,
                revocations: 1,
            }
        );
        assert_eq!(rebalances(&events, t + 600, t + 10_000).revocations, 0);
    }

    #[test]
    fn the_changes_go_one_two_three_two_one_with_a_kill_each() {
        let mut n = 1;
        for (from, to, actions) in CHANGES {
            assert_eq!(from, n);
            n = to;
            let kills = actions
                .iter()
                .filter(|a| matches!(a, Action::KillRestart(_) | Action::KillForGood(_)))
                .count();
            assert_eq!(kills, 1, "{from} → {to}");
        }
        assert_eq!(n, 1);
    }
}
