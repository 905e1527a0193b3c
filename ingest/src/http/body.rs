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
