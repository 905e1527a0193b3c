//! The runner: every `poll` it lists the jobs not finished, takes those whose lease ran
//! out (a new job's, or one whose runner died) and works through each: one run at a
//! time, at most `max_per_second`, its progress saved about every second with the
//! lease extended. A save refused (the job was cancelled, or another runner took it)
//! stops the work at once.
//!
//! Each run's replay carries the idempotency key `replay:<job>:<index>`: a run replayed
//! again after a takeover (between the last save and the death of the runner before)
//! answers what it did the first time and writes nothing, so no run is replayed twice.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::store::ReplayStore;
use super::{Job, JobState, ReplayMode, Target};
use crate::history::HistoryStore;
use crate::publisher::Publisher;
use crate::recovery::{Recovery, RecoveryError, RerunVersion};
use crate::registry::store::RegistryStore;
use crate::runs::{Runs, StartError};

#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// How often the runner looks for jobs to take.
    pub poll: Duration,
    /// How long a taken job stays its runner's without a save.
    pub lease: Duration,
    /// Names the runner in the jobs it holds (host and process).
    pub owner: String,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(2),
            lease: Duration::from_secs(30),
            owner: format!(
                "{}:{}",
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_default(),
                std::process::id()
            ),
        }
    }
}

/// What replaying a run needs, owned (the runner outlives any request).
#[derive(Clone)]
pub struct Replayer {
    pub history: HistoryStore,
    pub publisher: Publisher,
    pub store: RegistryStore,
    pub runs: Runs,
}

/// How one run's replay went.
enum Outcome {
    Done,
    Skipped,
    Failed(String),
    /// Transient: try again after a pause.
    Again(String),
}

/// Attempts at one run before it counts as failed.
const ATTEMPTS: u32 = 5;
/// Progress is saved at least this often.
const SAVE_EVERY: Duration = Duration::from_secs(1);

impl Replayer {
    fn recovery(&self) -> Recovery<'_> {
        Recovery {
            history: &self.history,
            publisher: &self.publisher,
            store: &self.store,
            runs: &self.runs,
        }
    }

    async fn replay(&self, mode: ReplayMode, key: &str, t: &Target) -> Outcome {
        let now = Utc::now();
        let r = self.recovery();
        let result = match mode {
            ReplayMode::Redrive => r
                .redrive(&t.tenant, t.run, Some(key), now)
                .await
                .map(|_| ()),
            ReplayMode::Rerun => r
                .rerun(
                    &t.tenant,
                    t.run,
                    RerunVersion::Same,
                    Some(key.to_owned()),
                    now,
                )
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => Outcome::Done,
            Err(
                RecoveryError::NotFound(_)
                | RecoveryError::NotRedrivable { .. }
                | RecoveryError::Erased(_),
            ) => Outcome::Skipped,
            Err(
                e @ (RecoveryError::InProgress(_)
                | RecoveryError::History(_)
                | RecoveryError::Publish(_)
                | RecoveryError::Store(_)
                | RecoveryError::Start(
                    StartError::QueueFull { .. }
                    | StartError::InProgress(_)
                    | StartError::Unavailable(_)
                    | StartError::Store(_),
                )),
            ) => Outcome::Again(e.to_string()),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}

/// Starts the runner; it runs until the handle is aborted.
pub fn spawn_runner(
    store: ReplayStore,
    replayer: Replayer,
    settings: RunnerSettings,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut working: HashMap<Uuid, JoinHandle<()>> = HashMap::new();
        let mut tick = tokio::time::interval(settings.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            working.retain(|_, h| !h.is_finished());
            let active = match store.active().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "replay jobs not listed; trying again");
                    continue;
                }
            };
            for (tenant, id) in active {
                if working.contains_key(&id) {
                    continue;
                }
                let now = Utc::now();
                let until = now + chrono::Duration::from_std(settings.lease).unwrap_or_default();
                match store.claim(&tenant, id, &settings.owner, now, until).await {
                    Ok(true) => {}
                    Ok(false) => {
                        // Finished or cancelled but still listed: unlist it; held by
                        // another runner: leave it.
                        if let Ok(Some(j)) = store.get(&tenant, id).await
                            && j.state != JobState::Running
                        {
                            let _ = store.unlist(&tenant, id).await;
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(%id, error = %e, "replay job not taken");
                        continue;
                    }
                }
                let job = match store.get(&tenant, id).await {
                    Ok(Some(j)) => j,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(%id, error = %e, "replay job not read");
                        continue;
                    }
                };
                tracing::info!(%id, tenant = %tenant, total = job.total, from = job.next_index, "replay job taken");
                let worker = work(store.clone(), replayer.clone(), settings.clone(), job);
                working.insert(id, tokio::spawn(worker));
            }
        }
    })
}

/// Works through one job from where it was left.
async fn work(store: ReplayStore, replayer: Replayer, settings: RunnerSettings, mut job: Job) {
    let lease = chrono::Duration::from_std(settings.lease).unwrap_or_default();
    let pace = Duration::from_secs_f64(1.0 / f64::from(job.max_per_second.max(1)));
    let mut next_slot = tokio::time::Instant::now();
    let mut last_save = tokio::time::Instant::now();
    while job.next_index < job.targets.len() {
        tokio::time::sleep_until(next_slot).await;
        next_slot = tokio::time::Instant::now() + pace;
        let target = job.targets[job.next_index].clone();
        let key = format!("replay:{}:{}", job.id, job.next_index);
        let mut backoff = Duration::from_millis(500);
        let mut attempt = 1;
        let outcome = loop {
            match replayer.replay(job.mode, &key, &target).await {
                Outcome::Again(why) if attempt < ATTEMPTS => {
                    tracing::warn!(id = %job.id, run = %target.run, %why, "replay of a run failed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Outcome::Again(why) => break Outcome::Failed(why),
                other => break other,
            }
        };
        match outcome {
            Outcome::Done => job.done += 1,
            Outcome::Skipped => job.skipped += 1,
            Outcome::Failed(why) | Outcome::Again(why) => {
                job.failed += 1;
                job.last_error = Some(format!("run {}: {why}", target.run));
            }
        }
        job.next_index += 1;
        if last_save.elapsed() >= SAVE_EVERY {
            last_save = tokio::time::Instant::now();
            match store.save(&job, &settings.owner, Utc::now() + lease).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(id = %job.id, "replay job cancelled or taken over; stopping");
                    return;
                }
                Err(e) => tracing::warn!(id = %job.id, error = %e, "replay progress not saved"),
            }
        }
    }
    match store.finish(&job, &settings.owner).await {
        Ok(true) => tracing::info!(
            id = %job.id,
            done = job.done,
            skipped = job.skipped,
            failed = job.failed,
            "replay job done"
        ),
        Ok(false) => tracing::info!(id = %job.id, "replay job was cancelled at its end"),
        Err(e) => {
            tracing::warn!(id = %job.id, error = %e, "replay job not marked done; its lease will run out and it ends again")
        }
    }
}
