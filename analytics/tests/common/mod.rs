//! A realistic run history written through the sink's real Parquet writer, and the
//! report figures computed from the same events in plain Rust.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aiq_analytics::{Analytics, AnalyticsSettings, QueryResult};
use aiq_history_store::HistoryRoot;
use aiq_sink::parquet::{ParquetSettings, ParquetWriter};
use aiq_topics::{
    ErrorClass, Event, RunId, StepId, TenantId, TriggerSource, WorkflowId,
    events::{Failure, RunEvent, RunStatus, StepEvent, StepStatus},
};
use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};
use serde_json::{Value, json};

pub const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const WORKFLOWS: [&str; 3] = ["orders", "billing", "sync"];
const CONNECTORS: [&str; 3] = ["http", "sql", "email"];

/// A deterministic generator (xorshift), so that every run builds the same history.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn start_of_history() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 20, 0, 0)
        .single()
        .unwrap()
}

/// The events of `runs` runs of `tenant`: cron and API runs, task and choice steps,
/// retries, failures by connector and class, timeouts, some runs still running.
pub fn tenant_events(tenant: &str, runs: usize, rng: &mut Rng) -> Vec<Event> {
    let t = TenantId::new(tenant).unwrap();
    let mut out = Vec::new();
    for i in 0..runs {
        let workflow =
            WorkflowId::new(WORKFLOWS[rng.below(WORKFLOWS.len() as u64) as usize]).unwrap();
        let run = RunId::from_idempotency_key(&t, &workflow, &format!("run-{i}"));
        // Whole milliseconds, so that lags and durations are exact in both computations.
        let tick = start_of_history() + Duration::minutes(rng.below(30 * 60) as i64);
        let cron = rng.below(3) == 0;
        let started = if cron {
            tick + Duration::milliseconds(rng.below(5_000) as i64)
        } else {
            tick + Duration::milliseconds(rng.below(60_000) as i64)
        };
        out.push(Event::Run(RunEvent {
            tenant: t.clone(),
            run,
            workflow: workflow.clone(),
            version: 1 + rng.below(3) as u32,
            status: RunStatus::Running,
            at: started,
            input: Some(json!({"n": i})),
            output: None,
            error: None,
            started_at: None,
            source: Some(if cron {
                TriggerSource::Cron
            } else {
                TriggerSource::Api
            }),
            scheduled_at: cron.then_some(tick),
        }));
        let mut now = started;
        let mut outcome = RunStatus::Succeeded;
        let mut failure = None;
        let steps = 1 + rng.below(3);
        for s in 0..steps {
            let step = StepId::new(format!("step{s}")).unwrap();
            let step_event = |status, at, attempt, kind: &str, connector: Option<&str>| StepEvent {
                tenant: t.clone(),
                run,
                step: step.clone(),
                attempt,
                status,
                at,
                kind: kind.to_owned(),
                connector: connector.map(str::to_owned),
                error: None,
                iteration: None,
                duration_ms: None,
                output_bytes: None,
            };
            if rng.below(4) == 0 {
                now += Duration::milliseconds(1 + rng.below(20) as i64);
                out.push(Event::Step(step_event(
                    StepStatus::Started,
                    now,
                    1,
                    "choice",
                    None,
                )));
                out.push(Event::Step(step_event(
                    StepStatus::Succeeded,
                    now,
                    1,
                    "choice",
                    None,
                )));
                continue;
            }
            let connector = CONNECTORS[rng.below(CONNECTORS.len() as u64) as usize];
            let mut attempt = 1;
            let step_outcome = loop {
                now += Duration::milliseconds(1 + rng.below(50) as i64);
                out.push(Event::Step(step_event(
                    StepStatus::Started,
                    now,
                    attempt,
                    "task",
                    Some(connector),
                )));
                let took = 5 + rng.below(2_000);
                now += Duration::milliseconds(took as i64);
                let roll = rng.below(10);
                let mut e =
                    step_event(StepStatus::Succeeded, now, attempt, "task", Some(connector));
                e.duration_ms = Some(took);
                let class = match roll {
                    0..=5 => None,
                    6 | 7 if attempt < 3 => Some((
                        StepStatus::Retrying,
                        if roll == 6 {
                            ErrorClass::Retryable
                        } else {
                            ErrorClass::CircuitOpen
                        },
                    )),
                    6..=8 => Some((StepStatus::Failed, ErrorClass::Fatal)),
                    _ => Some((StepStatus::TimedOut, ErrorClass::Timeout)),
                };
                match class {
                    None => {
                        e.output_bytes = Some(10 + rng.below(5_000));
                        out.push(Event::Step(e));
                        break None;
                    }
                    Some((status, class)) => {
                        e.status = status;
                        e.error = Some(Failure {
                            class,
                            message: format!("{connector} said no"),
                            step: Some(step.clone()),
                        });
                        out.push(Event::Step(e));
                        match status {
                            StepStatus::Retrying => attempt += 1,
                            StepStatus::TimedOut => break Some((RunStatus::TimedOut, class)),
                            _ => break Some((RunStatus::Failed, class)),
                        }
                    }
                }
            };
            if let Some((status, class)) = step_outcome {
                outcome = status;
                failure = Some(Failure {
                    class,
                    message: "step failed".into(),
                    step: Some(step.clone()),
                });
                break;
            }
        }
        // Some runs are still running when the history is read; a few are cancelled.
        match rng.below(10) {
            0 => continue,
            1 => outcome = RunStatus::Cancelled,
            _ => {}
        }
        now += Duration::milliseconds(1 + rng.below(30) as i64);
        out.push(Event::Run(RunEvent {
            tenant: t.clone(),
            run,
            workflow,
            version: 1,
            status: outcome,
            at: now,
            input: None,
            output: (outcome == RunStatus::Succeeded).then(|| json!({"ok": true})),
            error: if outcome == RunStatus::Succeeded {
                None
            } else {
                failure.clone()
            },
            started_at: Some(started),
            source: None,
            scheduled_at: None,
        }));
    }
    out
}

/// Writes the events through the sink's writer, one events-topic partition per tenant.
pub fn write_history(root: &HistoryRoot, events: &[Event]) {
    let mut writer = ParquetWriter::new(&ParquetSettings {
        root: root.clone(),
        window_offsets: 2_000,
        ..Default::default()
    })
    .unwrap();
    let mut offsets: HashMap<String, (i32, i64)> = HashMap::new();
    for e in events {
        let n = offsets.len() as i32;
        let (partition, offset) = offsets
            .entry(e.tenant().as_str().to_owned())
            .or_insert((n, 0));
        writer.add(*partition, *offset, e);
        *offset += 1;
    }
    writer.flush().unwrap();
}

/// A written history of all [`TENANTS`] and the events it holds.
pub struct History {
    /// A temp folder: the history itself, unless it is in Azurite.
    pub dir: tempfile::TempDir,
    pub root: HistoryRoot,
    pub events: Vec<Event>,
}

impl History {
    /// A history in a temp folder.
    pub fn build(runs_per_tenant: usize) -> History {
        let dir = tempfile::tempdir().unwrap();
        let root = HistoryRoot::from(dir.path());
        History::build_at(dir, root, runs_per_tenant)
    }

    /// A history in a prefix of its own in Azurite; `None` when the test should skip.
    pub fn build_in_azurite(runs_per_tenant: usize) -> Option<History> {
        let root = HistoryRoot::new(aiq_testkit::azurite_root("analytics")?);
        Some(History::build_at(
            tempfile::tempdir().unwrap(),
            root,
            runs_per_tenant,
        ))
    }

    fn build_at(dir: tempfile::TempDir, root: HistoryRoot, runs_per_tenant: usize) -> History {
        let mut rng = Rng::new(0x5eed);
        let mut events = Vec::new();
        for t in TENANTS {
            events.extend(tenant_events(t, runs_per_tenant, &mut rng));
        }
        write_history(&root, &events);
        History { dir, root, events }
    }

    pub fn analytics(&self) -> Analytics {
        self.analytics_with(|_| {})
    }

    pub fn analytics_with(&self, change: impl FnOnce(&mut AnalyticsSettings)) -> Analytics {
        let mut s = AnalyticsSettings {
            root: self.root.clone(),
            ..Default::default()
        };
        change(&mut s);
        Analytics::new(s).unwrap()
    }

    pub fn runs(&self, tenant: Option<&str>) -> impl Iterator<Item = &RunEvent> {
        self.events.iter().filter_map(move |e| match e {
            Event::Run(r) if tenant.is_none_or(|t| r.tenant.as_str() == t) => Some(r),
            _ => None,
        })
    }

    pub fn steps(&self, tenant: Option<&str>) -> impl Iterator<Item = &StepEvent> {
        self.events.iter().filter_map(move |e| match e {
            Event::Step(s) if tenant.is_none_or(|t| s.tenant.as_str() == t) => Some(s),
            _ => None,
        })
    }
}

/// DataFusion's `percentile_cont`: rank `p·(n−1)` of the sorted values, linear
/// interpolation between the closest ranks with the weight cut to six decimals.
pub fn percentile_cont(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let index = p * (v.len() - 1) as f64;
    let (lo, hi) = (index.floor() as usize, index.ceil() as usize);
    let weight = ((index - lo as f64) * 1_000_000.0) as usize as f64 / 1_000_000.0;
    v[lo] + (v[hi] - v[lo]) * weight
}

/// One expected output row: key columns as text, figures as numbers.
pub type Expected = BTreeMap<Vec<String>, Vec<f64>>;

pub fn expected_workflow_success(h: &History, tenant: Option<&str>) -> Expected {
    let mut by: BTreeMap<Vec<String>, (f64, f64, Vec<f64>)> = BTreeMap::new();
    for r in h.runs(tenant).filter(|r| r.status != RunStatus::Running) {
        let e = by
            .entry(vec![r.tenant.as_str().into(), r.workflow.as_str().into()])
            .or_default();
        e.0 += 1.0;
        if r.status == RunStatus::Succeeded {
            e.1 += 1.0;
        }
        if let Some(s) = r.started_at {
            e.2.push((r.at - s).num_milliseconds() as f64);
        }
    }
    by.into_iter()
        .map(|(k, (n, ok, d))| {
            let p = |q| percentile_cont(&d, q);
            (k, vec![n, ok, ok / n, p(0.5), p(0.95), p(0.99)])
        })
        .collect()
}

pub fn expected_failing_steps(h: &History, tenant: Option<&str>) -> Expected {
    let mut by: BTreeMap<Vec<String>, (f64, BTreeSet<RunId>)> = BTreeMap::new();
    for s in h.steps(tenant).filter(|s| {
        matches!(
            s.status,
            StepStatus::Failed | StepStatus::TimedOut | StepStatus::Retrying
        )
    }) {
        let class = s.error.as_ref().map_or("", |f| f.class.as_str());
        let key = vec![
            s.tenant.as_str().into(),
            s.connector.clone().unwrap_or_default(),
            class.into(),
        ];
        let e = by.entry(key).or_default();
        e.0 += 1.0;
        e.1.insert(s.run);
    }
    by.into_iter()
        .map(|(k, (n, runs))| (k, vec![n, runs.len() as f64]))
        .collect()
}

pub fn expected_runs_per_hour(h: &History, tenant: Option<&str>) -> Expected {
    let mut by: Expected = BTreeMap::new();
    for r in h.runs(tenant).filter(|r| r.status == RunStatus::Running) {
        let hour =
            r.at.with_minute(0)
                .and_then(|t| t.with_second(0))
                .and_then(|t| t.with_nanosecond(0))
                .unwrap();
        let key = vec![
            r.tenant.as_str().into(),
            hour.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        ];
        by.entry(key).or_insert_with(|| vec![0.0])[0] += 1.0;
    }
    by
}

pub fn expected_cron_schedule_lag(h: &History, tenant: Option<&str>) -> Expected {
    let mut by: BTreeMap<Vec<String>, Vec<f64>> = BTreeMap::new();
    for r in h
        .runs(tenant)
        .filter(|r| r.status == RunStatus::Running && r.source == Some(TriggerSource::Cron))
    {
        let lag = (r.at - r.scheduled_at.unwrap()).num_microseconds().unwrap() as f64 / 1000.0;
        by.entry(vec![r.tenant.as_str().into(), r.workflow.as_str().into()])
            .or_default()
            .push(lag);
    }
    by.into_iter()
        .map(|(k, lags)| {
            let n = lags.len() as f64;
            let avg = lags.iter().sum::<f64>() / n;
            let max = lags.iter().copied().fold(f64::MIN, f64::max);
            (k, vec![n, avg, percentile_cont(&lags, 0.95), max])
        })
        .collect()
}

pub fn expected_cost_per_tenant(h: &History, tenant: Option<&str>) -> Expected {
    let mut by: Expected = BTreeMap::new();
    for s in h.steps(tenant) {
        let e = by
            .entry(vec![s.tenant.as_str().into()])
            .or_insert_with(|| vec![0.0, 0.0, 0.0]);
        e[0] += s.duration_ms.unwrap_or(0) as f64 / 1000.0;
        e[1] += s.output_bytes.unwrap_or(0) as f64;
        if s.kind == "task" && s.status == StepStatus::Started {
            e[2] += 1.0;
        }
    }
    by
}

/// The result as the same map: `keys` columns as text (null as ""), the rest numbers.
pub fn actual(result: &QueryResult, keys: usize) -> Expected {
    result
        .rows
        .iter()
        .map(|row| {
            let key = row[..keys]
                .iter()
                .map(|v| match v {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect();
            let figures = row[keys..]
                .iter()
                .map(|v| v.as_f64().unwrap_or_else(|| panic!("{v} is not a number")))
                .collect();
            (key, figures)
        })
        .collect()
}

/// Equal keys, and figures equal up to floating-point rounding of sums.
pub fn assert_figures(name: &str, actual: &Expected, expected: &Expected) {
    assert!(
        !expected.is_empty(),
        "{name}: the fixture must produce rows"
    );
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{name}: the groups differ"
    );
    for (k, want) in expected {
        let got = &actual[k];
        assert_eq!(got.len(), want.len(), "{name} {k:?}: column count");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let tolerance = 1e-9 * w.abs().max(1.0);
            assert!(
                (g - w).abs() <= tolerance,
                "{name} {k:?} column {i}: got {g}, expected {w}"
            );
        }
    }
}
