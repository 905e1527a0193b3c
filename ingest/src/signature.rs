//! Webhook signatures: HMAC-SHA256 over `"{timestamp}.{body}"` with the hook's secret,
//! sent as `X-AIQ-Timestamp: <unix seconds>` and `X-AIQ-Signature: v1=<hex>`. The
//! timestamp inside the MAC and a replay window stop an old delivery being sent again.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

pub const TIMESTAMP_HEADER: &str = "x-aiq-timestamp";
pub const SIGNATURE_HEADER: &str = "x-aiq-signature";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("header X-AIQ-Timestamp is missing")]
    MissingTimestamp,
    #[error("header X-AIQ-Timestamp must be whole Unix seconds, got {0:?}")]
    BadTimestamp(String),
    #[error("header X-AIQ-Signature is missing")]
    MissingSignature,
    #[error("header X-AIQ-Signature must be `v1=<64 hex digits>`")]
    BadSignatureFormat,
    #[error("timestamp is {age_secs} s from now, outside the {window_secs} s replay window")]
    Stale { age_secs: i64, window_secs: u64 },
    #[error("signature does not match the body and timestamp")]
    Mismatch,
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `X-AIQ-Signature` value a sender computes.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Checks a delivery. `now` is Unix seconds.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    window_secs: u64,
) -> Result<(), SignatureError> {
    let ts_raw = timestamp.ok_or(SignatureError::MissingTimestamp)?;
    let ts: i64 = ts_raw
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp(ts_raw.to_owned()))?;
    let sig = signature.ok_or(SignatureError::MissingSignature)?;
    let hex_sig = sig
        .trim()
        .strip_prefix("v1=")
        .ok_or(SignatureError::BadSignatureFormat)?;
    let given = hex::decode(hex_sig).map_err(|_| SignatureError::BadSignatureFormat)?;
    if given.len() != 32 {
        return Err(SignatureError::BadSignatureFormat);
    }
    let age = now.saturating_sub(ts);
    if age.unsigned_abs() > window_secs {
        return Err(SignatureError::Stale {
            age_secs: age,
            window_secs,
        });
    }
    let expected = mac(secret, ts, body).finalize().into_bytes();
    if bool::from(expected.as_slice().ct_eq(&given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test_0123456789abcdef";

    #[test]
    fn a_signed_delivery_verifies() {
        let body = br#"{"order":1}"#;
        let sig = sign(SECRET, 1_800_000_000, body);
        assert_eq!(
            verify(
                SECRET,
                Some("1800000000"),
                Some(&sig),
                body,
                1_800_000_010,
                300
            ),
            Ok(())
        );
    }

    #[test]
    fn matches_an_independent_implementation() {
        // printf '1700000000.hello' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign(b"key", 1_700_000_000, b"hello"),
            "v1=4d583a269f4f276a3fa80ff31b5a01879a848096983222a17893d198418939aa"
        );
    }

    #[test]
    fn each_failure_says_what_is_wrong() {
        let body = b"{}";
        let sig = sign(SECRET, 1000, body);
        assert_eq!(
            verify(SECRET, None, Some(&sig), body, 1000, 300),
            Err(SignatureError::MissingTimestamp)
        );
        assert_eq!(
            verify(SECRET, Some("1000"), None, body, 1000, 300),
            Err(SignatureError::MissingSignature)
        );
        assert_eq!(
            verify(SECRET, Some("soon"), Some(&sig), body, 1000, 300),
            Err(SignatureError::BadTimestamp("soon".into()))
        );
        assert_eq!(
            verify(SECRET, Some("1000"), Some("sha256=ab"), body, 1000, 300),
            Err(SignatureError::BadSignatureFormat)
        );
        assert_eq!(
            verify(SECRET, Some("1000"), Some(&sig), body, 1000 + 301, 300),
            Err(SignatureError::Stale {
                age_secs: 301,
                window_secs: 300
            })
        );
        assert_eq!(
            verify(SECRET, Some("1000"), Some(&sig), body, 1000 - 301, 300),
            Err(SignatureError::Stale {
                age_secs: -301,
                window_secs: 300
            })
        );
        assert_eq!(
            verify(SECRET, Some("1000"), Some(&sig), b"{ }", 1000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", Some("1000"), Some(&sig), body, 1000, 300),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is inside the MAC: moving it breaks the signature.
        let moved = sign(SECRET, 1001, body);
        assert_eq!(
            verify(SECRET, Some("1000"), Some(&moved), body, 1000, 300),
            Err(SignatureError::Mismatch)
        );
    }
}
