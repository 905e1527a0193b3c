//! Cron schedules: standard 5-field crontab, or 6 fields with seconds first, in an IANA
//! time zone, via `croner`.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

pub fn parse(schedule: &str) -> Result<Cron, String> {
    schedule.parse::<Cron>().map_err(|e| e.to_string())
}

/// The first tick strictly after `after`, in `timezone`; `None` if the schedule never
/// fires again or the inputs are not valid (validation has checked them).
pub fn next_tick(schedule: &str, timezone: &str, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = parse(schedule).ok()?;
    let tz: Tz = timezone.parse().ok()?;
    let local = after.with_timezone(&tz);
    cron.find_next_occurrence(&local, false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The last tick at or before `at`, in `timezone`. Ticks are whole seconds; `at` is
/// taken down to its second first (croner would otherwise keep its fraction).
pub fn prev_tick(schedule: &str, timezone: &str, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = parse(schedule).ok()?;
    let tz: Tz = timezone.parse().ok()?;
    let whole = DateTime::from_timestamp(at.timestamp(), 0)?;
    let local = whole.with_timezone(&tz);
    cron.find_previous_occurrence(&local, true)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_follow_the_time_zone() {
        let after = DateTime::parse_from_rfc3339("2026-03-28T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // 02:00 Berlin is 01:00 UTC in winter.
        let next = next_tick("0 2 * * *", "Europe/Berlin", after).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-03-29T01:00:00+00:00");
        assert!(parse("61 * * * *").is_err());
        let every_second = next_tick("* * * * * *", "UTC", after).unwrap();
        assert_eq!(every_second.to_rfc3339(), "2026-03-28T12:00:01+00:00");
        let prev = prev_tick("*/5 * * * *", "UTC", after + chrono::Duration::seconds(601)).unwrap();
        assert_eq!(prev.to_rfc3339(), "2026-03-28T12:10:00+00:00");
        let exact = prev_tick("*/5 * * * *", "UTC", prev).unwrap();
        assert_eq!(exact, prev);
        let fraction = prev_tick(
            "* * * * * *",
            "UTC",
            prev + chrono::Duration::milliseconds(1500),
        );
        assert_eq!(fraction.unwrap(), prev + chrono::Duration::seconds(1));
    }
}
