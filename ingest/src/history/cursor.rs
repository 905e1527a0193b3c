//! Page tokens: the position of the last row a page returned, opaque to callers
//! (base64url of `day|millis|uuid`), so a list can resume exactly after it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

/// Where a list stopped: the day partition, the row's time and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub day: NaiveDate,
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a page token this API issued; pass `next_page_token` from a previous answer unchanged"
)]
pub struct BadToken;

impl Position {
    pub fn token(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}|{}|{}",
            self.day,
            self.at.timestamp_millis(),
            self.id
        ))
    }

    pub fn from_token(token: &str) -> Result<Self, BadToken> {
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| BadToken)?;
        let text = String::from_utf8(bytes).map_err(|_| BadToken)?;
        let mut parts = text.split('|');
        let (Some(day), Some(millis), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(BadToken);
        };
        Ok(Self {
            day: day.parse().map_err(|_| BadToken)?,
            at: millis
                .parse()
                .ok()
                .and_then(DateTime::from_timestamp_millis)
                .ok_or(BadToken)?,
            id: id.parse().map_err(|_| BadToken)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let p = Position {
            day: NaiveDate::from_ymd_opt(2026, 11, 29).unwrap(),
            at: DateTime::from_timestamp_millis(1_764_400_000_123).unwrap(),
            id: Uuid::from_u128(42),
        };
        assert_eq!(Position::from_token(&p.token()), Ok(p));
        for bad in ["", "!!", "YWJj", &URL_SAFE_NO_PAD.encode("2026-11-29|x|y")] {
            assert_eq!(Position::from_token(bad), Err(BadToken), "{bad}");
        }
    }
}
