//! `POST /v1/workflows/validate`: a definition checked as registration would check it,
//! without registering anything, each error with the line it is on (for an editor that
//! marks errors as you type).

use aiq_auth::Action;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::body;
use crate::http::{App, Caller};
use crate::problem::{FieldError, Problem};

#[derive(Serialize, ToSchema)]
pub struct Validation {
    /// Always true: an invalid document is answered 422.
    valid: bool,
    /// The document's workflow id.
    workflow: String,
}

/// Checks a definition (YAML with a YAML content type, JSON otherwise) exactly as
/// `POST /v1/workflows` would, and registers nothing: 200 for a valid one; 422 for an
/// invalid one, a problem document with every error, its pointer and its line; 400 for
/// a body that is no document at all (empty, or not UTF-8).
#[utoipa::path(post, path = "/v1/workflows/validate", tag = "workflows",
    request_body(description = "The definition document: YAML with a YAML content type, JSON otherwise",
        content((String = "application/yaml"), (Object = "application/json"))),
    responses((status = 200, body = Validation), (status = 422, body = Problem),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 413, body = Problem)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn validate(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Validation>, Problem> {
    caller.require(Action::RegisterWorkflow)?;
    let raw = body::bytes(raw, app.settings.max_body_bytes)?;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::bad_request(
            "empty-body",
            "the body is empty: send the definition document to check",
        ));
    }
    let (file, text) = super::workflows::document(&headers, &raw)?;
    match aiq_engine::validate_source(file, text) {
        Ok(wf) => Ok(Json(Validation {
            valid: true,
            workflow: wf.definition().id.to_string(),
        })),
        Err(errors) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-workflow",
            format!("the workflow has {} error(s)", errors.len()),
        )
        .with_errors(
            errors
                .into_iter()
                .map(|e| FieldError {
                    line: aiq_engine::locate::line_of(text, &e.pointer),
                    pointer: e.pointer,
                    reason: e.message,
                })
                .collect(),
        )),
    }
}
