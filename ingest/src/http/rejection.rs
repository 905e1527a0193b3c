//! Every error answer is a problem document. Handlers answer with [`Problem`]s; what
//! axum answers by itself — an extractor's rejection (a path parameter that does not
//! parse, a malformed query string or JSON body), a path no route serves, a method the
//! route does not serve — is plain text or empty, and is rewritten here into a problem
//! document with the same status, the same headers (`Allow` among them) and axum's text
//! as its detail.

use axum::body::{Body, to_bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::http::doc::PROBLEM_JSON;
use crate::problem::Problem;

/// axum's rejection texts are one line; anything longer is cut.
const MAX_DETAIL_BYTES: usize = 4096;

/// True for an error answer that is not already JSON (a problem document, or the
/// readiness document `/readyz` answers 503 with).
fn needs_rewrite(resp: &Response) -> bool {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return false;
    }
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.split(';').next().unwrap_or_default().trim();
            ct == "application/json" || ct == PROBLEM_JSON
        });
    !json
}

fn slug(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad-request",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

fn default_detail(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "no route serves this path",
        StatusCode::METHOD_NOT_ALLOWED => "this route does not serve this method; see `Allow`",
        _ => "the request was refused",
    }
}

/// The middleware: rewrites an error answer that is not JSON into a problem document.
pub async fn problem_documents(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    if !needs_rewrite(&resp) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let status = parts.status;
    let text = to_bytes(body, MAX_DETAIL_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let detail = if text.is_empty() {
        default_detail(status).to_owned()
    } else {
        text
    };
    let problem = Problem::new(status, slug(status), detail).into_response();
    let (problem_parts, problem_body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    // The problem's own headers (none beyond the content type for these statuses) win.
    for (name, value) in &problem_parts.headers {
        parts.headers.insert(name.clone(), value.clone());
    }
    Response::from_parts(parts, Body::new(problem_body))
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::to_bytes;
    use axum::extract::Path;
    use axum::http::{Request, StatusCode, header};
    use axum::routing::get;
    use serde_json::Value;
    use tower::ServiceExt;

    async fn call(uri: &str, method: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
        let app = Router::new()
            .route(
                "/things/{n}",
                get(|Path(n): Path<u32>| async move { n.to_string() }),
            )
            .layer(axum::middleware::from_fn(super::problem_documents));
        let resp = app
            .oneshot(
                Request::builder()
                    .uri(uri)
                    .method(method)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = to_bytes(body, 1 << 20).await.unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status, parts.headers, v)
    }

    #[tokio::test]
    async fn rejections_unknown_paths_and_methods_are_problem_documents() {
        let (status, headers, v) = call("/things/-1", "GET").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(v["status"], 400);
        assert_eq!(v["type"], "https://automateiq.dev/problems/bad-request");
        assert!(
            v["detail"].as_str().unwrap().contains("`-1` to a `u32`"),
            "{v}"
        );

        let (status, headers, v) = call("/nowhere", "GET").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(v["detail"], "no route serves this path");

        let (status, headers, v) = call("/things/1", "DELETE").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(headers[header::ALLOW].to_str().unwrap().contains("GET"));
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(v["status"], 405);

        let (status, headers, v) = call("/things/7", "GET").await;
        assert_eq!(status, StatusCode::OK);
        assert_ne!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(v, 7);
    }
}
