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

/// A JSON number that is a whole number, as JSON Schema's `integer` means it: `7` and
/// `7.0` alike (a client's JSON library may write either).
pub(crate) fn whole_u32(v: &serde_json::Value) -> Option<u32> {
    let n = v.as_number()?;
    if let Some(u) = n.as_u64() {
        return u32::try_from(u).ok();
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f)).then_some(f as u32)
}

/// serde's `deserialize_with` for an optional [`whole_u32`].
pub(crate) fn optional_whole_u32<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u32>, D::Error> {
    use serde::Deserialize;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => whole_u32(&v).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!("{v} is not a whole number from 0 to {}", u32::MAX))
        }),
    }
}

#[cfg(test)]
mod whole_number_tests {
    use serde_json::json;

    #[test]
    fn whole_numbers_pass_in_either_form_and_others_do_not() {
        assert_eq!(super::whole_u32(&json!(7)), Some(7));
        assert_eq!(super::whole_u32(&json!(1120.0)), Some(1120));
        assert_eq!(super::whole_u32(&json!(1.5)), None);
        assert_eq!(super::whole_u32(&json!(-1)), None);
        assert_eq!(super::whole_u32(&json!(5_000_000_000u64)), None);
        assert_eq!(super::whole_u32(&json!("7")), None);
    }
}
