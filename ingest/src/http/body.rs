//! Request bodies, read so that every failure is a problem document naming the cause.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::problem::Problem;

pub fn bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, Problem> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!("the request body is larger than {limit} bytes"),
            )
        } else {
            Problem::bad_request("unreadable-body", e.body_text())
        }
    })
}

/// An empty body means every field's default; anything else must be JSON.
pub fn json_or_default<T: Default + DeserializeOwned>(raw: &[u8]) -> Result<T, Problem> {
    if raw.is_empty() {
        Ok(T::default())
    } else {
        json(raw)
    }
}

/// A request document: a JSON object (serde would also read a struct from an array of
/// its fields, which no route documents); an empty body, or `null`, means every field's
/// default.
pub fn object_or_default<T: Default + DeserializeOwned>(raw: &[u8]) -> Result<T, Problem> {
    if raw.trim_ascii().is_empty() || raw.trim_ascii() == b"null" {
        Ok(T::default())
    } else {
        object(raw)
    }
}

/// A request document: a JSON object.
pub fn object<T: DeserializeOwned>(raw: &[u8]) -> Result<T, Problem> {
    let first = raw.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(Problem::bad_request(
            "malformed-json",
            "the body must be a JSON object",
        ));
    }
    json(raw)
}

pub fn json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(raw);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(" at `{path}`")
        };
        Problem::bad_request(
            "malformed-json",
            format!("the body is not valid JSON{at}: {}", e.into_inner()),
        )
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        #[serde(default)]
        a: Option<String>,
    }

    #[test]
    fn request_documents_are_objects() {
        for raw in [&b"[null]"[..], b" [\"x\"]", b"1", b"\"a\""] {
            let p = super::object_or_default::<Req>(raw).unwrap_err();
            assert_eq!(p.status, 400, "{raw:?}");
        }
        assert_eq!(
            super::object::<Req>(b" {\"a\": \"x\"}")
                .unwrap()
                .a
                .as_deref(),
            Some("x")
        );
        assert!(super::object_or_default::<Req>(b"").unwrap().a.is_none());
        assert!(
            super::object_or_default::<Req>(b" null ")
                .unwrap()
                .a
                .is_none()
        );
        assert!(super::object::<Req>(b"null").is_err());
        // Any JSON value where a value is wanted.
        assert!(super::json::<serde_json::Value>(b"[1]").is_ok());
    }
}
