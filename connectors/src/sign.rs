//! Signing an outgoing body as AutomateIQ signs its own webhooks, so that a receiver
//! can check it came from us and was not replayed late: `X-AIQ-Timestamp: <unix
//! seconds>` and `X-AIQ-Signature: v1=<hex>`, an HMAC-SHA256 with the tenant's secret
//! of `"{timestamp}.{body}"` over the exact bytes sent.

use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use aiq_secrets::ExposeSecret;
use aiq_topics::TaskOutcome;

use crate::call::CallContext;
use crate::outcome::fatal;

pub const TIMESTAMP_HEADER: &str = "x-aiq-timestamp";
pub const SIGNATURE_HEADER: &str = "x-aiq-signature";

/// `args.sign`: the tenant secret to sign with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Sign {
    pub secret: String,
}

/// `v1=<hex HMAC-SHA256 of "{timestamp}.{body}">`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The bytes to send for a signed request (its `json`, compact, or its `body`) with the
/// signature headers added to `headers`.
pub(crate) async fn signed_body(
    connector: &str,
    sign: &Sign,
    json: Option<&Value>,
    body: Option<&str>,
    headers: &mut HeaderMap,
    ctx: &CallContext<'_>,
) -> Result<Vec<u8>, TaskOutcome> {
    let bytes = match (json, body) {
        (Some(j), _) => {
            headers
                .entry(CONTENT_TYPE)
                .or_insert(HeaderValue::from_static("application/json"));
            serde_json::to_vec(j)
                .map_err(|e| fatal(format!("{connector} connector: `args.json`: {e}")))?
        }
        (None, Some(b)) => b.as_bytes().to_vec(),
        (None, None) => Vec::new(),
    };
    let secret = ctx.secret("args.sign.secret", &sign.secret).await?;
    let now = chrono::Utc::now().timestamp();
    let sig = signature(secret.expose_secret().as_bytes(), now, &bytes);
    for (name, value) in [(TIMESTAMP_HEADER, now.to_string()), (SIGNATURE_HEADER, sig)] {
        let value = HeaderValue::from_str(&value)
            .map_err(|e| fatal(format!("{connector} connector: signature header: {e}")))?;
        headers.insert(HeaderName::from_static(name), value);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_timestamp_and_body_and_matches_an_independent_hmac() {
        // RFC 4231 test case 2's key and data, split as "{timestamp}.{body}" would be.
        let key = b"Jefe";
        let a = signature(key, 1_700_000_000, b"{\"run\":1}");
        assert!(a.starts_with("v1=") && a.len() == 3 + 64, "{a}");
        assert_ne!(a, signature(key, 1_700_000_001, b"{\"run\":1}"));
        assert_ne!(a, signature(key, 1_700_000_000, b"{\"run\":2}"));
        assert_ne!(a, signature(b"other", 1_700_000_000, b"{\"run\":1}"));
        // "what do ya want " + "for nothing?" under "Jefe" is RFC 4231's case 2.
        let rfc = {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
            mac.update(b"what do ya want for nothing?");
            hex::encode(mac.finalize().into_bytes())
        };
        assert_eq!(
            rfc,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
