//! Webhook signatures. A delivery carries `X-AIQ-Timestamp: <unix seconds>` and
//! `X-AIQ-Signature: v1=<hex>` or `v2=<hex>`, an HMAC-SHA256 with the hook's secret of
//!
//! * v1: `"{timestamp}.{body}"` — only for a delivery without an `Idempotency-Key`;
//! * v2: `"v2\n{timestamp}\n{idempotency_key}\n{body}"` (the key empty when absent),
//!   so that the key is covered too: a captured delivery cannot be sent again under
//!   another key to start a second run. A header value holds no newline, so the parts
//!   cannot be shifted into each other, and a v2 input never reads as a v1 one.
//!
//! The timestamp is inside the MAC and must be within the replay window of now. Within
//! the window, a delivery without a key gets one made from its signature
//! ([`Signed::delivery_key`]): sent again, it finds its first run through the
//! idempotency store instead of starting another.
//!
//! Checking happens in two parts, so that a request that cannot be a valid delivery costs
//! nothing: [`parse`] checks the headers' form and the timestamp without the secret, and
//! only then [`Signed::verify`] needs the secret (and so, possibly, the store).

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
    #[error("header X-AIQ-Signature must be `v1=<64 hex digits>` or `v2=<64 hex digits>`")]
    BadSignatureFormat,
    #[error("timestamp is {age_secs} s from now, outside the {window_secs} s replay window")]
    Stale { age_secs: i64, window_secs: u64 },
    #[error(
        "header Idempotency-Key is not covered by a v1 signature: sign the delivery with v2, \
         the HMAC of \"v2\\n{{timestamp}}\\n{{idempotency key}}\\n{{body}}\""
    )]
    KeyNotSigned,
    #[error("signature does not match the body and timestamp")]
    Mismatch,
}

/// Which signing string a signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    V1,
    V2,
}

fn mac(secret: &[u8], scheme: Scheme, timestamp: i64, key: &str, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    match scheme {
        Scheme::V1 => {
            m.update(timestamp.to_string().as_bytes());
            m.update(b".");
        }
        Scheme::V2 => {
            m.update(b"v2\n");
            m.update(timestamp.to_string().as_bytes());
            m.update(b"\n");
            m.update(key.as_bytes());
            m.update(b"\n");
        }
    }
    m.update(body);
    m
}

/// The v1 `X-AIQ-Signature` value a sender computes (a delivery without a key).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1={}",
        hex::encode(
            mac(secret, Scheme::V1, timestamp, "", body)
                .finalize()
                .into_bytes()
        )
    )
}

/// The v2 `X-AIQ-Signature` value: covers the `Idempotency-Key` (`""` when none is sent).
pub fn sign_v2(secret: &[u8], timestamp: i64, idempotency_key: &str, body: &[u8]) -> String {
    format!(
        "v2={}",
        hex::encode(
            mac(secret, Scheme::V2, timestamp, idempotency_key, body)
                .finalize()
                .into_bytes()
        )
    )
}

/// A delivery's signature headers, well-formed and within the replay window: all that can
/// be checked without the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<'a> {
    pub scheme: Scheme,
    pub timestamp: i64,
    given: [u8; 32],
    idempotency_key: Option<&'a str>,
}

/// Checks the form of the headers and the timestamp (`now` is Unix seconds).
pub fn parse<'a>(
    timestamp: Option<&str>,
    signature: Option<&str>,
    idempotency_key: Option<&'a str>,
    now: i64,
    window_secs: u64,
) -> Result<Signed<'a>, SignatureError> {
    let ts_raw = timestamp.ok_or(SignatureError::MissingTimestamp)?;
    let ts: i64 = ts_raw
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp(ts_raw.to_owned()))?;
    let sig = signature.ok_or(SignatureError::MissingSignature)?.trim();
    let (scheme, hex_sig) = if let Some(h) = sig.strip_prefix("v1=") {
        (Scheme::V1, h)
    } else if let Some(h) = sig.strip_prefix("v2=") {
        (Scheme::V2, h)
    } else {
        return Err(SignatureError::BadSignatureFormat);
    };
    let given: [u8; 32] = hex::decode(hex_sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignatureError::BadSignatureFormat)?;
    let age = now.saturating_sub(ts);
    if age.unsigned_abs() > window_secs {
        return Err(SignatureError::Stale {
            age_secs: age,
            window_secs,
        });
    }
    if scheme == Scheme::V1 && idempotency_key.is_some() {
        return Err(SignatureError::KeyNotSigned);
    }
    Ok(Signed {
        scheme,
        timestamp: ts,
        given,
        idempotency_key,
    })
}

impl Signed<'_> {
    /// Whether the MAC matches the body, timestamp and key under `secret`.
    pub fn verify(&self, secret: &[u8], body: &[u8]) -> Result<(), SignatureError> {
        let key = self.idempotency_key.unwrap_or("");
        let expected = mac(secret, self.scheme, self.timestamp, key, body)
            .finalize()
            .into_bytes();
        if bool::from(expected.as_slice().ct_eq(&self.given)) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }

    /// The idempotency key the delivery's run is started with: the sender's, or, without
    /// one, `webhook-<signature hex>`, which is the same for the same delivery sent again
    /// (and so for two deliveries of the same body in the same second).
    pub fn delivery_key(&self) -> String {
        match self.idempotency_key {
            Some(k) => k.to_owned(),
            None => format!("webhook-{}", hex::encode(self.given)),
        }
    }
}

/// Checks a delivery without an `Idempotency-Key`: [`parse`], then [`Signed::verify`].
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    window_secs: u64,
) -> Result<(), SignatureError> {
    parse(timestamp, signature, None, now, window_secs)?.verify(secret, body)
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

    #[test]
    fn v2_covers_the_idempotency_key() {
        let body = br#"{"order":1}"#;
        let now = 1_800_000_000;
        let check = |sig: &str, key: Option<&str>, body: &[u8]| {
            parse(Some("1800000000"), Some(sig), key, now, 300)?.verify(SECRET, body)
        };
        let keyed = sign_v2(SECRET, now, "order-1", body);
        assert_eq!(check(&keyed, Some("order-1"), body), Ok(()));
        // The same signature under another key, or without it, does not verify.
        assert_eq!(
            check(&keyed, Some("order-2"), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(check(&keyed, None, body), Err(SignatureError::Mismatch));
        // v2 without a key signs the empty key.
        let unkeyed = sign_v2(SECRET, now, "", body);
        assert_eq!(check(&unkeyed, None, body), Ok(()));
        // A v1 signature does not cover a key, so a key beside it is refused.
        let v1 = sign(SECRET, now, body);
        assert_eq!(
            check(&v1, Some("order-1"), body),
            Err(SignatureError::KeyNotSigned)
        );
        assert_eq!(check(&v1, None, body), Ok(()));
        // A v1 MAC presented as v2 (or back) does not verify.
        let as_v2 = v1.replacen("v1=", "v2=", 1);
        assert_eq!(check(&as_v2, None, body), Err(SignatureError::Mismatch));
        // The key is not shifted into the body: "a\n" + body is another delivery.
        let shifted = sign_v2(SECRET, now, "a", body);
        let mut moved = b"a\n".to_vec();
        moved.extend_from_slice(body);
        assert_eq!(
            check(&shifted, Some(""), &moved),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn v2_matches_an_independent_implementation() {
        // printf 'v2\n1700000000\nk-1\nhello' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign_v2(b"key", 1_700_000_000, "k-1", b"hello"),
            "v2=4625cefaf92d9f97cfb0b9a3926b54a90a3bd17fbf117e4a9f9873e806e6e85d"
        );
    }

    #[test]
    fn a_delivery_without_a_key_gets_one_from_its_signature() {
        let body = b"{}";
        let sig = sign(SECRET, 1000, body);
        let signed = parse(Some("1000"), Some(&sig), None, 1000, 300).unwrap();
        assert_eq!(signed.delivery_key(), format!("webhook-{}", &sig[3..]));
        assert!(signed.delivery_key().len() <= aiq_topics::TriggerEvent::MAX_IDEMPOTENCY_KEY);
        let keyed = sign_v2(SECRET, 1000, "mine", body);
        let signed = parse(Some("1000"), Some(&keyed), Some("mine"), 1000, 300).unwrap();
        assert_eq!(signed.delivery_key(), "mine");
    }
}
