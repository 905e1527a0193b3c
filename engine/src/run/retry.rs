//! Retry backoff: exponential, capped, with jitter that is pseudo-random yet
//! deterministic — a hash of (run, step, attempt) — so that replaying a run waits the
//! same.

use aiq_topics::{RunId, StepId};
use sha2::{Digest, Sha256};

use crate::definition::RetryPolicy;

/// The wait before attempt `tries + 1`, after `tries` attempts failed.
pub fn backoff(policy: &RetryPolicy, tries: u32, run: &RunId, step: &StepId) -> chrono::Duration {
    let initial = policy.initial_backoff.0.as_secs_f64();
    let max = policy.max_backoff.0.as_secs_f64();
    let exp = i32::try_from(tries.saturating_sub(1)).unwrap_or(i32::MAX);
    let base = (initial * policy.multiplier.powi(exp)).min(max);
    // Jitter only shortens the wait, so `max_backoff` stays a true upper bound.
    let secs = base * (1.0 - policy.jitter * unit(run, step, tries));
    chrono::Duration::milliseconds((secs * 1000.0).round() as i64)
}

/// A number in [0, 1) from a hash.
fn unit(run: &RunId, step: &StepId, tries: u32) -> f64 {
    let digest = Sha256::digest(format!("{run}/{step}/{tries}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::HumanDuration;
    use aiq_topics::ErrorClass;
    use std::time::Duration;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: HumanDuration(Duration::from_secs(1)),
            max_backoff: HumanDuration(Duration::from_secs(30)),
            multiplier: 2.0,
            jitter,
            retry_on: vec![ErrorClass::Retryable],
        }
    }

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let run = RunId::random();
        let step = StepId::new("s").unwrap();
        let waits: Vec<i64> = (1..=7)
            .map(|t| backoff(&policy(0.0), t, &run, &step).num_milliseconds())
            .collect();
        assert_eq!(waits, vec![1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    }

    #[test]
    fn jitter_shortens_within_bounds_and_is_deterministic() {
        let run = RunId::random();
        let step = StepId::new("s").unwrap();
        for t in 1..=8 {
            let full = backoff(&policy(0.0), t, &run, &step).num_milliseconds();
            let j = backoff(&policy(0.5), t, &run, &step).num_milliseconds();
            assert!(j <= full && j >= full / 2, "try {t}: {j} vs {full}");
            assert_eq!(j, backoff(&policy(0.5), t, &run, &step).num_milliseconds());
        }
    }
}
