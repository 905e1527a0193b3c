//! An open-loop schedule: request `i` is due at `start + i / rate`, whether or not the
//! previous ones have answered, and its latency is counted from when it was due. A
//! closed loop (send, wait, send) would slow down with the server and hide its queueing
//! delay — coordinated omission.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// When request `i` of a run at `rate` per second is due, after the start.
pub fn due(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// Latency from the intended send time, in microseconds.
pub fn latency_us(intended: Instant, answered: Instant) -> u64 {
    u64::try_from(answered.saturating_duration_since(intended).as_micros()).unwrap_or(u64::MAX)
}

pub fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min at 3 significant digits; creation cannot fail for these bounds.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_due_on_the_schedule_not_after_the_previous_answer() {
        assert_eq!(due(0, 100.0), Duration::ZERO);
        assert_eq!(due(100, 100.0), Duration::from_secs(1));
        assert_eq!(due(3, 2.0), Duration::from_millis(1500));
        let start = Instant::now();
        // A request due at 10 ms and answered at 60 ms waited 50 ms.
        assert_eq!(
            latency_us(
                start + Duration::from_millis(10),
                start + Duration::from_millis(60)
            ),
            50_000
        );
    }
}
