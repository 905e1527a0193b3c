//! Errors as RFC 9457 problem documents (`application/problem+json`): a status, a short
//! title, a detail that says what to change, and for validation failures one entry per
//! error naming the field.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One field-level error in a problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// A JSON pointer into the request document, e.g. `/steps/4/retry/max_attempts`.
    pub pointer: String,
    pub reason: String,
    /// The 1-based line of the request document the pointer leads to, where it is known
    /// (a definition's errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    retry_after_secs: Option<u64>,
    #[serde(skip)]
    www_authenticate: bool,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://automateiq.dev/problems/{slug}"),
            title: status.canonical_reason().unwrap_or("error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_secs: None,
            www_authenticate: false,
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }

    /// 401s name the scheme the caller should use.
    pub fn challenge(mut self) -> Self {
        self.www_authenticate = true;
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn bad_request(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, slug, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail).retry_after(5)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = self.retry_after_secs;
        let challenge = self.www_authenticate;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = retry {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if challenge {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"automateiq\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_serialise_with_type_status_and_errors() {
        let p =
            Problem::bad_request("invalid-workflow", "the workflow has 1 error").with_errors(vec![
                FieldError {
                    pointer: "/steps/0/next".into(),
                    reason: "unknown step \"x\"".into(),
                    line: None,
                },
            ]);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v["type"],
            "https://automateiq.dev/problems/invalid-workflow"
        );
        assert_eq!(v["status"], 400);
        assert_eq!(v["title"], "Bad Request");
        assert_eq!(v["errors"][0]["pointer"], "/steps/0/next");
        let resp = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "slow down")
            .retry_after(3)
            .into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
