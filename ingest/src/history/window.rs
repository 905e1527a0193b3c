//! The time range a list covers, and the day partitions it touches.

use chrono::{DateTime, Duration, NaiveDate, Utc};

/// The longest range one list request may cover.
pub const MAX_SPAN_DAYS: i64 = 31;

/// An inclusive time range, at most [`MAX_SPAN_DAYS`] long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("`from` is after `to`")]
    Reversed,
    #[error("the range from `from` to `to` is longer than {MAX_SPAN_DAYS} days")]
    TooLong,
}

impl Window {
    /// Missing ends default to the 24 hours before `to`, and `to` to `now`.
    pub fn new(
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Self, WindowError> {
        let to = to.unwrap_or(now);
        let from = from.unwrap_or(to - Duration::hours(24));
        if from > to {
            return Err(WindowError::Reversed);
        }
        if to - from > Duration::days(MAX_SPAN_DAYS) {
            return Err(WindowError::TooLong);
        }
        Ok(Self { from, to })
    }

    /// The UTC days from the newest to the oldest.
    pub fn days_newest_first(&self) -> impl Iterator<Item = NaiveDate> + use<> {
        let first = self.from.date_naive();
        let mut next = Some(self.to.date_naive());
        std::iter::from_fn(move || {
            let day = next.filter(|d| *d >= first)?;
            next = day.pred_opt();
            Some(day)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_limits_and_days() {
        let now = at("2026-11-29T06:00:00Z");
        let w = Window::new(None, None, now).unwrap();
        assert_eq!(w.from, at("2026-11-28T06:00:00Z"));
        let days: Vec<_> = w.days_newest_first().map(|d| d.to_string()).collect();
        assert_eq!(days, ["2026-11-29", "2026-11-28"]);
        assert_eq!(
            Window::new(Some(now), Some(at("2026-11-28T00:00:00Z")), now),
            Err(WindowError::Reversed)
        );
        assert_eq!(
            Window::new(Some(at("2026-10-01T00:00:00Z")), None, now),
            Err(WindowError::TooLong)
        );
        assert!(Window::new(Some(now - Duration::days(31)), None, now).is_ok());
    }
}
