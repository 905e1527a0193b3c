//! The open-loop driver of a chaos run. Trigger `i` is due at `start + i/rate` (the load
//! generator's schedule) whatever happens to the system; each is then retried, with the
//! same `Idempotency-Key`, until it is answered 202 — `aiq serve` may be dead, Kafka or
//! Cassandra down. A run of the signal workflow gets its signal right after its 202,
//! retried the same way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::chaos::compare::AcceptedRun;
use crate::chaos::workflows::{Kind, SIGNAL};
use crate::open_loop::due;

/// The header with which a platform admin acts for a tenant.
pub const ACTING_TENANT: &str = "x-aiq-tenant";

/// One trigger of the plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planned {
    pub i: u64,
    pub due: Duration,
    pub tenant: usize,
    pub kind: Kind,
}

/// `runs` triggers at `rate`, tenants uniform, workflows by their weights in `mix`.
pub fn plan(runs: u64, rate: f64, tenants: usize, mix: &[(Kind, f64)], seed: u64) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let total: f64 = mix.iter().map(|(_, w)| w).sum();
    (0..runs)
        .map(|i| {
            let mut u = rng.random::<f64>() * total;
            let mut kind = mix.last().map_or(Kind::Noop1, |m| m.0);
            for (k, w) in mix {
                if u < *w {
                    kind = *k;
                    break;
                }
                u -= w;
            }
            Planned {
                i,
                due: due(i, rate),
                tenant: rng.random_range(0..tenants.max(1)),
                kind,
            }
        })
        .collect()
}

/// What the driver did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DriveStats {
    pub planned: u64,
    pub accepted: u64,
    /// Triggers never answered 202 within the give-up time.
    pub given_up: u64,
    /// Trigger requests in all (first tries and retries).
    pub trigger_requests: u64,
    /// Answers other than 202, by status (0: no answer: refused connection, timeout).
    pub refused_by_status: BTreeMap<u16, u64>,
    /// 202s marked `idempotent-replayed`.
    pub replayed: u64,
    pub signals_accepted: u64,
    pub signal_requests: u64,
    pub signals_given_up: u64,
    /// Seconds from the first due trigger to the last 202.
    pub seconds: f64,
    /// The latest a trigger was first sent after it was due, in seconds.
    pub max_send_lag_s: f64,
}

#[derive(Default)]
struct Shared {
    stats: DriveStats,
    accepted: Vec<AcceptedRun>,
}

pub struct Driver {
    pub client: reqwest::Client,
    pub api: String,
    pub token: String,
    pub tenants: Vec<String>,
    /// Retrying stops this long after a trigger was due.
    pub give_up: Duration,
    pub max_in_flight: usize,
    /// `Idempotency-Key` of trigger i is `<key_prefix><i>`.
    pub key_prefix: String,
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(5)).min(2_000))
}

impl Driver {
    /// Sends the plan; returns every accepted run and the counts.
    pub async fn drive(&self, plan: Vec<Planned>) -> (Vec<AcceptedRun>, DriveStats) {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let gate = Arc::new(tokio::sync::Semaphore::new(self.max_in_flight.max(1)));
        let sent = Arc::new(AtomicU64::new(0));
        let planned = plan.len() as u64;
        let start = Instant::now();
        let mut next_report = start + Duration::from_secs(10);
        let mut tasks = JoinSet::new();
        let mut max_lag = Duration::ZERO;
        for p in plan {
            let intended = start + p.due;
            tokio::time::sleep_until(intended.into()).await;
            let Ok(permit) = Arc::clone(&gate).acquire_owned().await else {
                break;
            };
            max_lag = max_lag.max(Instant::now().saturating_duration_since(intended));
            let this = self.clone_parts();
            let (mine, sent) = (Arc::clone(&shared), Arc::clone(&sent));
            let give_up_at = intended + self.give_up;
            tasks.spawn(async move {
                this.one(p, give_up_at, &mine).await;
                sent.fetch_add(1, Ordering::Relaxed);
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
            if Instant::now() >= next_report {
                next_report += Duration::from_secs(10);
                report(start, p.i + 1, planned, &shared);
            }
        }
        while tasks.join_next().await.is_some() {
            if Instant::now() >= next_report {
                next_report += Duration::from_secs(10);
                report(start, planned, planned, &shared);
            }
        }
        let mut s = std::mem::take(&mut *lock(&shared));
        s.stats.planned = planned;
        s.stats.accepted = s.accepted.len() as u64;
        s.stats.seconds = start.elapsed().as_secs_f64();
        s.stats.max_send_lag_s = max_lag.as_secs_f64();
        s.accepted.sort_by_key(|a| a.i);
        (s.accepted, s.stats)
    }

    fn clone_parts(&self) -> Driver {
        Driver {
            client: self.client.clone(),
            api: self.api.clone(),
            token: self.token.clone(),
            tenants: self.tenants.clone(),
            give_up: self.give_up,
            max_in_flight: self.max_in_flight,
            key_prefix: self.key_prefix.clone(),
        }
    }

    async fn one(&self, p: Planned, give_up_at: Instant, shared: &Mutex<Shared>) {
        let tenant = self.tenants[p.tenant % self.tenants.len()].clone();
        let url = format!("{}/v1/workflows/{}/runs", self.api, p.kind.id());
        let key = format!("{}{}", self.key_prefix, p.i);
        let body = serde_json::json!({ "input": { "n": p.i } });
        let mut attempt = 0u32;
        let (run, replayed) = loop {
            let resp = self
                .client
                .post(&url)
                .bearer_auth(&self.token)
                .header(ACTING_TENANT, &tenant)
                .header("idempotency-key", &key)
                .json(&body)
                .send()
                .await;
            let status = resp.as_ref().map_or(0, |r| r.status().as_u16());
            lock(shared).stats.trigger_requests += 1;
            if let Ok(r) = resp
                && status == 202
            {
                let replayed = r.headers().contains_key("idempotent-replayed");
                let run = r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["run_id"].as_str().map(str::to_ascii_lowercase));
                if let Some(run) = run {
                    break (run, replayed);
                }
            }
            *lock(shared)
                .stats
                .refused_by_status
                .entry(status)
                .or_default() += 1;
            if Instant::now() >= give_up_at {
                lock(shared).stats.given_up += 1;
                return;
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        };
        {
            let mut s = lock(shared);
            s.stats.replayed += u64::from(replayed);
            s.accepted.push(AcceptedRun {
                i: p.i,
                run: run.clone(),
                tenant: tenant.clone(),
                workflow: p.kind.id().to_owned(),
                replayed,
            });
        }
        if p.kind != Kind::Signal {
            return;
        }
        let url = format!("{}/v1/runs/{run}/signals/{SIGNAL}", self.api);
        let body = serde_json::json!({ "payload": { "n": p.i } });
        let mut attempt = 0u32;
        loop {
            let status = self
                .client
                .post(&url)
                .bearer_auth(&self.token)
                .header(ACTING_TENANT, &tenant)
                .json(&body)
                .send()
                .await
                .map_or(0, |r| r.status().as_u16());
            let done = {
                let mut s = lock(shared);
                s.stats.signal_requests += 1;
                if status == 202 {
                    s.stats.signals_accepted += 1;
                    true
                } else if Instant::now() >= give_up_at {
                    s.stats.signals_given_up += 1;
                    true
                } else {
                    false
                }
            };
            if done {
                return;
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }
}

fn report(start: Instant, sent: u64, planned: u64, shared: &Mutex<Shared>) {
    let s = lock(shared);
    let refused: u64 = s.stats.refused_by_status.values().sum();
    eprintln!(
        "chaos: {:>4.0} s  due {sent}/{planned}  accepted {}  refused answers so far {refused}  given up {}",
        start.elapsed().as_secs_f64(),
        s.accepted.len(),
        s.stats.given_up
    );
}

fn lock(s: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_follows_the_rate_and_the_mix() {
        let mix = [
            (Kind::Noop1, 0.4),
            (Kind::Noop10, 0.2),
            (Kind::Signal, 0.2),
            (Kind::Flaky, 0.2),
        ];
        let p = plan(10_000, 100.0, 4, &mix, 1);
        assert_eq!(p[100].due, Duration::from_secs(1));
        let n = |k| p.iter().filter(|x| x.kind == k).count();
        assert!(
            (3_800..4_200).contains(&n(Kind::Noop1)),
            "{}",
            n(Kind::Noop1)
        );
        assert!(
            (1_800..2_200).contains(&n(Kind::Flaky)),
            "{}",
            n(Kind::Flaky)
        );
        assert!(p.iter().all(|x| x.tenant < 4));
        assert!((0..4).all(|t| p.iter().filter(|x| x.tenant == t).count() > 2_000));
        assert_eq!(plan(100, 10.0, 4, &mix, 1), plan(100, 10.0, 4, &mix, 1));
    }

    #[test]
    fn backoff_grows_to_two_seconds() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(9), Duration::from_secs(2));
    }
}
