//! What a load run found, as numbers (summary.json) and as Markdown (report.md): the
//! rendering is pure so that its layout is tested without a server.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::baseline::{Baseline, Pipe};
use crate::loadgen::fairness::jain;
use crate::loadgen::hops::Breakdown;
use crate::loadgen::tally::{Completion, Tally};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TenantRow {
    pub name: String,
    pub sent: u64,
    pub accepted: u64,
    pub completed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// End-to-end latency of the runs due in one second of the schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Second {
    pub second: u64,
    pub completed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Setting name and value, in display order.
    pub settings: Vec<(String, String)>,
    pub planned: u64,
    pub sent: u64,
    pub accepted: u64,
    pub completed: u64,
    /// Accepted runs whose terminal event was not read within the drain timeout.
    pub not_completed: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub terminal: BTreeMap<String, u64>,
    pub send_seconds: f64,
    /// How far the sender fell behind its schedule at worst (client-side saturation).
    pub max_send_lag_ms: f64,
    pub warmup_seconds: f64,
    /// Completions per second between the warm-up and the end of sending.
    pub sustained_per_sec: f64,
    /// Completions over the time from the start to the last completion.
    pub overall_per_sec: f64,
    pub accept: Percentiles,
    pub e2e: Percentiles,
    /// Every tenant, most triggers first.
    pub tenants: Vec<TenantRow>,
    /// Over per-tenant completion ratios (completed / sent).
    pub jain: f64,
    pub baseline: Option<Baseline>,
    /// Where the time of the runs went, hop by hop (`--no-hops` leaves it out).
    pub hops: Option<Breakdown>,
    /// The transactional consume → produce pipe on the same broker.
    pub pipe: Option<Pipe>,
    pub timeline: Vec<Second>,
}

/// Completions whose terminal event was read between `from` and `to` seconds, per second.
pub fn sustained(completions: &[Completion], from: f64, to: f64) -> f64 {
    if to <= from {
        return 0.0;
    }
    let n = completions
        .iter()
        .filter(|c| (from..to).contains(&c.done.as_secs_f64()))
        .count();
    n as f64 / (to - from)
}

/// Per second of the schedule: how many of the runs due then completed, and their latency.
pub fn timeline(completions: &[Completion]) -> Vec<Second> {
    let mut by_second: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for c in completions {
        let us = c.done.saturating_sub(c.due).as_micros() as u64;
        by_second.entry(c.due.as_secs()).or_default().push(us);
    }
    by_second
        .into_iter()
        .map(|(second, mut v)| {
            v.sort_unstable();
            let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
            Second {
                second,
                completed: v.len() as u64,
                p50_ms: at(0.5),
                p99_ms: at(0.99),
                max_ms: at(1.0),
            }
        })
        .collect()
}

impl Outcome {
    /// Everything but the settings, the baseline and the send timing, from a tally.
    pub fn from_tally(t: &Tally, names: &[String], warmup: f64, send_seconds: f64) -> Self {
        let mut tenants: Vec<TenantRow> = t
            .tenants
            .iter()
            .zip(names)
            .map(|(x, name)| {
                let p = Percentiles::of(&x.e2e);
                TenantRow {
                    name: name.clone(),
                    sent: x.sent,
                    accepted: x.accepted,
                    completed: x.completed,
                    p50_ms: p.p50,
                    p99_ms: p.p99,
                }
            })
            .collect();
        tenants.sort_by(|a, b| b.sent.cmp(&a.sent).then_with(|| a.name.cmp(&b.name)));
        let ratios: Vec<f64> = tenants
            .iter()
            .filter(|r| r.sent > 0)
            .map(|r| r.completed as f64 / r.sent as f64)
            .collect();
        let last_done = t
            .completions
            .iter()
            .map(|c| c.done.as_secs_f64())
            .fold(0.0, f64::max);
        let sent = t.statuses.values().sum();
        Self {
            settings: Vec::new(),
            planned: sent,
            sent,
            accepted: t.statuses.get(&202).copied().unwrap_or(0),
            completed: t.completed(),
            not_completed: t.in_flight() as u64,
            statuses: t.statuses.clone(),
            terminal: t
                .terminal
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            send_seconds,
            max_send_lag_ms: 0.0,
            warmup_seconds: warmup,
            sustained_per_sec: sustained(&t.completions, warmup, send_seconds),
            overall_per_sec: if last_done > 0.0 {
                t.completed() as f64 / last_done
            } else {
                0.0
            },
            accept: Percentiles::of(&t.accept),
            e2e: Percentiles::of(&t.e2e),
            tenants,
            jain: jain(&ratios),
            baseline: None,
            hops: None,
            pipe: None,
            timeline: timeline(&t.completions),
        }
    }

    /// The engine's sustained runs/s as a share of the raw produce+consume rate.
    pub fn baseline_ratio(&self) -> Option<f64> {
        // A baseline that moved nothing has no rate to compare against.
        self.baseline
            .as_ref()
            .map(Baseline::round_trip_per_sec)
            .filter(|r| *r > 0.0)
            .map(|r| self.sustained_per_sec / r)
    }

    /// Tasks completed per second while sustained: runs/s × the tasks per run the hop
    /// tap counted.
    pub fn tasks_per_sec(&self) -> Option<f64> {
        let h = self.hops.as_ref().filter(|h| h.runs > 0)?;
        Some(self.sustained_per_sec * h.tasks as f64 / h.runs as f64)
    }

    /// Engine tasks/s as a share of the transactional pipe's records/s: each task is at
    /// least one such hop (the orchestrator's), so this is the fair yardstick.
    pub fn pipe_ratio(&self) -> Option<f64> {
        let pipe = self.pipe.as_ref().map(Pipe::records_per_sec)?;
        (pipe > 0.0).then_some(self.tasks_per_sec()? / pipe)
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "## aiq-load run\n\n| setting | value |\n| --- | --- |");
        for (k, v) in &self.settings {
            let _ = writeln!(w, "| {k} | {v} |");
        }
        let _ = writeln!(
            w,
            "\n### Throughput\n\n\
             | planned | sent | accepted (202) | completed | not completed after drain | sending s | warm-up s | sustained runs/s | overall runs/s | worst send lag ms |\n\
             | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n\
             | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            self.planned,
            self.sent,
            self.accepted,
            self.completed,
            self.not_completed,
            self.send_seconds,
            self.warmup_seconds,
            self.sustained_per_sec,
            self.overall_per_sec,
            self.max_send_lag_ms
        );
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(c, n)| match c {
                0 => format!("no answer: {n}"),
                c => format!("{c}: {n}"),
            })
            .collect();
        let terminal: Vec<String> = self
            .terminal
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        let _ = writeln!(
            w,
            "\nHTTP answers: {}. Runs ended: {}.",
            or_none(&statuses),
            or_none(&terminal)
        );
        let _ = writeln!(
            w,
            "\n### Latency, ms from the intended send time\n\n\
             | | count | p50 | p90 | p99 | p99.9 | max |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for (label, p) in [
            ("accept (trigger → 202)", &self.accept),
            ("end to end (trigger → terminal run event)", &self.e2e),
        ] {
            let _ = writeln!(
                w,
                "| {label} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                p.count, p.p50, p.p90, p.p99, p.p999, p.max
            );
        }
        if let Some(b) = &self.hops {
            let _ = writeln!(
                w,
                "\n### Where the time goes, ms ({} runs seen at every point)\n\n\
                 Producer timestamps (ms resolution) and when a read-committed tap saw each record.\n\n\
                 | hop | p50 | p90 | p99 | max |\n| --- | ---: | ---: | ---: | ---: |",
                b.runs
            );
            for (label, p) in b
                .hops
                .iter()
                .map(|(l, p)| (l.as_str(), p))
                .chain([("due → terminal event visible (these runs)", &b.total)])
            {
                let _ = writeln!(
                    w,
                    "| {label} | {:.1} | {:.1} | {:.1} | {:.1} |",
                    p.p50, p.p90, p.p99, p.max
                );
            }
            if let Some((ticks, p)) = &b.cron {
                let _ = writeln!(
                    w,
                    "\nCron ticks during the load: {ticks}, due → trigger visible (fired and \
                     committed) p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} ms.",
                    p.p50, p.p90, p.p99, p.max
                );
            }
        }
        let active = self.tenants.iter().filter(|t| t.sent > 0).count();
        let _ = writeln!(
            w,
            "\n### Tenants (top 10 of {active} that sent)\n\n\
             | tenant | sent | accepted | completed | e2e p50 ms | e2e p99 ms |\n| --- | ---: | ---: | ---: | ---: | ---: |"
        );
        for t in self.tenants.iter().take(10) {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {:.1} | {:.1} |",
                t.name, t.sent, t.accepted, t.completed, t.p50_ms, t.p99_ms
            );
        }
        let _ = writeln!(
            w,
            "\nJain's fairness index over per-tenant completion ratios: {:.3} \
             (1 = every tenant saw the same share of its runs complete; 1/n = one tenant did).",
            self.jain
        );
        match (&self.baseline, self.baseline_ratio()) {
            (Some(b), Some(r)) => {
                let _ = writeln!(
                    w,
                    "\n### Baseline: raw Kafka through the same broker\n\n{}\n\
                     engine = {:.2}% of raw Kafka produce+consume ({:.1} runs/s against {:.0} msg/s).",
                    b.markdown(),
                    r * 100.0,
                    self.sustained_per_sec,
                    b.round_trip_per_sec()
                );
            }
            _ => {
                let _ = writeln!(w, "\n(no baseline: --no-baseline or --baseline-messages 0)");
            }
        }
        if let Some(p) = &self.pipe {
            let _ = writeln!(
                w,
                "\n### Floor: a do-nothing transactional consume → produce pipe, same broker\n\n{}",
                p.markdown()
            );
            match (self.tasks_per_sec(), self.pipe_ratio()) {
                (Some(t), Some(r)) => {
                    let _ = writeln!(
                        w,
                        "engine = {:.1}% of the pipe ({t:.0} tasks/s against {:.0} pipe records/s).",
                        r * 100.0,
                        p.records_per_sec()
                    );
                }
                _ => {
                    let _ = writeln!(w, "(no engine tasks/s without the hop tap: --no-hops)");
                }
            }
        }
        s
    }

    pub fn summary(&self) -> Value {
        json!({
            "planned": self.planned,
            "sent": self.sent,
            "accepted": self.accepted,
            "completed": self.completed,
            "not_completed": self.not_completed,
            "statuses": self.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "terminal": self.terminal,
            "send_seconds": self.send_seconds,
            "sustained_runs_per_sec": self.sustained_per_sec,
            "overall_runs_per_sec": self.overall_per_sec,
            "accept_ms": pct(&self.accept),
            "e2e_ms": pct(&self.e2e),
            "jain": self.jain,
            "baseline_round_trip_per_sec": self.baseline.as_ref().map(Baseline::round_trip_per_sec),
            "baseline_ratio": self.baseline_ratio(),
            "tasks_per_sec": self.tasks_per_sec(),
            "pipe_records_per_sec": self.pipe.as_ref().map(Pipe::records_per_sec),
            "pipe_ratio": self.pipe_ratio(),
            "hops_ms": self.hops.as_ref().map(|b| json!({
                "runs": b.runs,
                "hops": b.hops.iter().map(|(l, p)| json!({"hop": l, "ms": pct(p)})).collect::<Vec<_>>(),
                "total": pct(&b.total),
                "cron_ticks": b.cron.as_ref().map(|(n, _)| n),
                "cron_due_to_visible": b.cron.as_ref().map(|(_, p)| pct(p)),
            })),
        })
    }
}

fn pct(p: &Percentiles) -> Value {
    json!({"count": p.count, "p50": p.p50, "p90": p.p90, "p99": p.p99, "p99.9": p.p999, "max": p.max})
}

fn or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, Instant};

    use aiq_topics::{RunId, RunStatus};

    use super::*;

    fn c(due_ms: u64, done_ms: u64) -> Completion {
        Completion {
            due: Duration::from_millis(due_ms),
            done: Duration::from_millis(done_ms),
        }
    }

    #[test]
    fn sustained_throughput_counts_completions_inside_the_window() {
        let cs = [c(0, 500), c(100, 1500), c(200, 2500), c(300, 3500)];
        assert!((sustained(&cs, 1.0, 3.0) - 1.0).abs() < 1e-9);
        assert_eq!(sustained(&cs, 3.0, 3.0), 0.0);
        let tl = timeline(&[c(0, 10), c(500, 530), c(1200, 1300)]);
        assert_eq!(tl.len(), 2);
        assert_eq!((tl[0].second, tl[0].completed), (0, 2));
        assert!((tl[0].max_ms - 30.0).abs() < 1e-9);
        assert!((tl[1].p50_ms - 100.0).abs() < 1e-9);
    }

    #[test]
    fn the_report_has_every_table_and_the_baseline_ratio() {
        let start = Instant::now();
        let names = vec!["t-a".to_owned(), "t-b".to_owned(), "t-c".to_owned()];
        let mut t = Tally::new(start, &names);
        for i in 0..4u64 {
            let tenant = usize::from(i > 0);
            let due = start + Duration::from_millis(i * 100);
            t.answered(tenant, due, due + Duration::from_millis(3), 202);
            let run = RunId::random();
            t.accepted(run, tenant, due);
            if i < 3 {
                t.ended(
                    run,
                    &names[tenant],
                    RunStatus::Succeeded,
                    due + Duration::from_millis(40),
                );
            }
        }
        t.answered(2, start, start + Duration::from_millis(1), 429);
        let mut o = Outcome::from_tally(&t, &names, 0.0, 0.4);
        o.settings = vec![("rate".into(), "10/s".into())];
        o.baseline = Some(Baseline {
            messages: 100,
            message_bytes: 250,
            partitions: 12,
            produced: 100,
            failed: 0,
            consumed: 100,
            produce_seconds: 0.01,
            total_seconds: 0.1,
        });
        assert_eq!(
            (o.sent, o.accepted, o.completed, o.not_completed),
            (5, 4, 3, 1)
        );
        assert_eq!(o.tenants[0].name, "t-b");
        // Completion ratios 1 (t-a), 2/3 (t-b), 0 (t-c).
        let expected = (1.0f64 + 2.0 / 3.0).powi(2) / (3.0 * (1.0 + 4.0 / 9.0));
        assert!((o.jain - expected).abs() < 1e-9, "{}", o.jain);
        let md = o.markdown();
        for needle in [
            "| rate | 10/s |",
            "### Throughput",
            "| 5 | 5 | 4 | 3 | 1 |",
            "HTTP answers: 202: 4, 429: 1. Runs ended: succeeded: 3.",
            "| accept (trigger → 202) | 5 | 3.0 |",
            "| end to end (trigger → terminal run event) | 3 | 40.0 |",
            "| t-b | 3 | 3 | 2 | 40.",
            "Jain's fairness index over per-tenant completion ratios: 0.641",
            "engine = ",
            "% of raw Kafka produce+consume",
        ] {
            assert!(md.contains(needle), "{needle:?} missing from\n{md}");
        }
        let j = o.summary();
        assert_eq!(j["completed"], 3);
        assert_eq!(j["statuses"]["429"], 1);

        // A floor that moved nothing gives no ratio, not a division by zero.
        o.baseline = o.baseline.map(|b| Baseline { consumed: 0, ..b });
        assert_eq!(o.baseline_ratio(), None);
        assert!(!o.markdown().contains("% of raw Kafka"));
    }
}
