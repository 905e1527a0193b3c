//! Where a run's time goes: the per-hop breakdown of end-to-end latency.
//!
//! Every record of a run carries the run in its `traceparent` header (the trace id is the
//! run id) and the time its producer handed it over (Kafka's `CreateTime`). A
//! read-committed consumer of the triggers, tasks, results and events topics notes for
//! each run when each record was produced and when it became visible to a reader:
//!
//! due → trigger produced (ingest accepted it) → trigger visible → first task produced
//! (the orchestrator handled the trigger) → task visible (its transaction committed) →
//! result produced (the worker is done) → result visible → terminal event produced
//! (the orchestrator handled the result, and the remaining steps for several) →
//! terminal event visible (that transaction committed).
//!
//! Producer timestamps have millisecond resolution and the tap fetches independently of
//! the stages, so a single hop of one run can read a millisecond off (or even below
//! zero, clamped); the percentiles over thousands of runs are what the table is for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aiq_topics::{Event, RunId, TRACEPARENT, TraceParent, TriggerEvent, TriggerSource};
use hdrhistogram::Histogram;
use rdkafka::TopicPartitionList;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

use crate::loadgen::LoadError;
use crate::loadgen::events::add_at_end;
use crate::loadgen::report::Percentiles;
use aiq_loadtests::open_loop::histogram;

/// The points of a run's life the tap sees, in wall-clock microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Points {
    trigger: Option<Seen>,
    task: Option<Seen>,
    result: Option<Seen>,
    terminal: Option<Seen>,
    /// Every result record of the run (each task attempt's).
    results: u32,
}

/// When a record was produced and when the tap read it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    produced_us: i64,
    visible_us: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Trigger,
    Task,
    Result,
    Event,
}

/// The hops of the breakdown, in order: (label, what ends it).
pub const HOPS: [&str; 8] = [
    "due → trigger produced (API, ingest)",
    "trigger produced → visible",
    "trigger visible → first task produced (orchestrator)",
    "task produced → visible (orchestrator commit)",
    "task visible → result produced (worker)",
    "result produced → visible",
    "result visible → terminal event produced (orchestrator, later steps)",
    "terminal event produced → visible (orchestrator commit)",
];

/// Per-hop latency percentiles over the runs whose every point was seen.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Breakdown {
    pub runs: u64,
    /// Task results of those runs: tasks per run is `tasks / runs`.
    pub tasks: u64,
    pub hops: Vec<(String, Percentiles)>,
    /// Due → terminal event visible, over the same runs.
    pub total: Percentiles,
    /// Cron ticks due after the tap started, and their due → trigger visible (the
    /// orchestrator fired the tick and its transaction committed).
    pub cron: Option<(u64, Percentiles)>,
}

pub struct HopWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(HashMap<RunId, Points>, Histogram<u64>)>,
    due: Arc<Mutex<HashMap<RunId, i64>>>,
}

/// Microseconds since the epoch now.
pub fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl HopWatch {
    /// Assigns every partition of the four topics at their current ends, then reads on
    /// a thread of its own.
    pub fn start(brokers: &str, prefix: &str, group: &str) -> Result<Self, LoadError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            // What a stage downstream sees: committed records only.
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .create()
            .map_err(LoadError::kafka("hops consumer"))?;
        let topics: Vec<(String, Hop)> = [
            ("triggers", Hop::Trigger),
            ("tasks", Hop::Task),
            ("results", Hop::Result),
            ("events", Hop::Event),
        ]
        .into_iter()
        .map(|(t, h)| (format!("{prefix}{t}"), h))
        .collect();
        let mut tpl = TopicPartitionList::new();
        for (topic, _) in &topics {
            add_at_end(&consumer, topic, &mut tpl)?;
        }
        consumer
            .assign(&tpl)
            .map_err(LoadError::kafka("assigning the hop topics"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let started_us = wall_us();
        let thread = std::thread::spawn(move || {
            let mut seen: HashMap<RunId, Points> = HashMap::new();
            let mut cron = histogram();
            while !flag.load(Ordering::Relaxed) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let visible_us = wall_us();
                let Some(hop) = topics.iter().find(|(t, _)| t == m.topic()).map(|(_, h)| *h) else {
                    continue;
                };
                if hop == Hop::Trigger
                    && let Some(due_us) = cron_due_us(&m).filter(|d| *d >= started_us)
                {
                    let _ = cron.record((visible_us - due_us).max(1) as u64);
                }
                let Some(run) = run_of(&m) else { continue };
                let Some(produced_ms) = m.timestamp().to_millis() else {
                    continue;
                };
                if hop == Hop::Event
                    && !matches!(m.payload().map(Event::decode), Some(Ok(Event::Run(e))) if e.status.is_terminal())
                {
                    continue;
                }
                let s = Seen {
                    produced_us: produced_ms * 1000,
                    visible_us,
                };
                let p = seen.entry(run).or_default();
                if hop == Hop::Result {
                    p.results += 1;
                }
                let slot = match hop {
                    Hop::Trigger => &mut p.trigger,
                    Hop::Task => &mut p.task,
                    Hop::Result => &mut p.result,
                    Hop::Event => &mut p.terminal,
                };
                // The first of each: the first task and result of a run, a redelivery
                // not counted twice.
                slot.get_or_insert(s);
            }
            (seen, cron)
        });
        Ok(Self {
            stop,
            thread,
            due: Arc::default(),
        })
    }

    /// Where accepted runs' due times are noted (wall-clock microseconds).
    pub fn due_times(&self) -> Arc<Mutex<HashMap<RunId, i64>>> {
        Arc::clone(&self.due)
    }

    /// Stops reading; the breakdown over the runs noted in `due_times`.
    pub fn stop(self) -> Breakdown {
        self.stop.store(true, Ordering::Relaxed);
        let (seen, cron) = self
            .thread
            .join()
            .unwrap_or_else(|_| (HashMap::new(), histogram()));
        let due = self
            .due
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Breakdown {
            cron: (!cron.is_empty()).then(|| (cron.len(), Percentiles::of(&cron))),
            ..breakdown(&due, &seen)
        }
    }
}

/// A cron trigger's tick, in wall-clock microseconds (`occurred_at` is the tick).
fn cron_due_us(m: &rdkafka::message::BorrowedMessage<'_>) -> Option<i64> {
    let t = TriggerEvent::decode(m.key(), m.payload()?).ok()?;
    (t.source == TriggerSource::Cron)
        .then_some(t.occurred_at?)
        .map(|at| at.timestamp_micros())
}

fn run_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Option<RunId> {
    let headers = m.headers()?;
    let value = headers
        .iter()
        .find(|h| h.key == TRACEPARENT)
        .and_then(|h| h.value)?;
    TraceParent::parse_bytes(value)
        .ok()
        .map(|t| t.trace_id.run())
}

fn breakdown(due: &HashMap<RunId, i64>, seen: &HashMap<RunId, Points>) -> Breakdown {
    let mut hops: Vec<Histogram<u64>> = (0..HOPS.len()).map(|_| histogram()).collect();
    let mut total = histogram();
    let (mut runs, mut tasks) = (0, 0);
    for (run, due_us) in due {
        let Some(Points {
            trigger: Some(tr),
            task: Some(ta),
            result: Some(re),
            terminal: Some(te),
            results,
        }) = seen.get(run).copied()
        else {
            continue;
        };
        let points = [
            *due_us,
            tr.produced_us,
            tr.visible_us,
            ta.produced_us,
            ta.visible_us,
            re.produced_us,
            re.visible_us,
            te.produced_us,
            te.visible_us,
        ];
        for (h, w) in hops.iter_mut().zip(points.windows(2)) {
            // Clamped: a histogram holds no negatives, and one off by the producer
            // timestamp's millisecond says nothing.
            let _ = h.record((w[1] - w[0]).max(1) as u64);
        }
        let _ = total.record((te.visible_us - due_us).max(1) as u64);
        runs += 1;
        tasks += u64::from(results);
    }
    Breakdown {
        runs,
        tasks,
        hops: HOPS
            .iter()
            .zip(&hops)
            .map(|(l, h)| ((*l).to_owned(), Percentiles::of(h)))
            .collect(),
        total: Percentiles::of(&total),
        cron: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_run_seen_at_every_point_counts_in_every_hop_and_others_in_none() {
        let (full, partial, foreign) = (RunId::random(), RunId::random(), RunId::random());
        let at = |produced_us, visible_us| {
            Some(Seen {
                produced_us,
                visible_us,
            })
        };
        let mut seen = HashMap::new();
        seen.insert(
            full,
            Points {
                trigger: at(1_000, 3_000),
                task: at(4_000, 10_000),
                result: at(11_000, 12_000),
                terminal: at(13_000, 20_000),
                results: 2,
            },
        );
        seen.insert(
            partial,
            Points {
                trigger: at(1_000, 3_000),
                ..Points::default()
            },
        );
        seen.insert(foreign, seen[&full]);
        let due = HashMap::from([(full, 0), (partial, 0)]);
        let b = breakdown(&due, &seen);
        assert_eq!((b.runs, b.tasks), (1, 2));
        // HDR histograms keep three significant digits.
        let p50: Vec<f64> = b
            .hops
            .iter()
            .map(|(_, p)| (p.p50 * 10.0).round() / 10.0)
            .collect();
        assert_eq!(p50, vec![1.0, 2.0, 1.0, 6.0, 1.0, 1.0, 1.0, 7.0]);
        assert!((b.total.p50 - 20.0).abs() < 0.05, "{}", b.total.p50);
        assert_eq!(b.hops[3].0, HOPS[3]);
    }
}
