//! What every route shares, written into the OpenAPI document once the routes are
//! registered, so that the document says what the server does:
//!
//! - every error answer is a problem document, `application/problem+json`
//!   ([`crate::problem::Problem`] sets that content type on every answer it makes, and
//!   [`super::rejection`] turns every other error answer into one);
//! - a route with path parameters may answer 400 (a parameter that does not parse);
//! - a route that takes a credential may answer 400 (a malformed `X-AIQ-Tenant`), 401, 403
//!   and 503 (the credential store is unreachable);
//! - a route that reads a body may answer 400 (unreadable or malformed) and 413 (over
//!   `ingest.max_body_bytes`).

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::Response;
use utoipa::openapi::{Content, OpenApi, Ref, RefOr};

/// The media type of every error answer (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

const PROBLEM_SCHEMA: &str = "#/components/schemas/Problem";

/// Applies the shared answers to every operation of `doc`.
pub fn finish(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            shared_answers(op);
            problems_as_problem_json(op);
        }
    }
}

fn has_path_parameters(op: &Operation) -> bool {
    op.parameters.iter().flatten().any(|p| match p {
        RefOr::T(p) => p.parameter_in == ParameterIn::Path,
        RefOr::Ref(_) => false,
    })
}

fn shared_answers(op: &mut Operation) {
    let mut statuses: Vec<(&str, &str)> = Vec::new();
    if has_path_parameters(op) {
        statuses.push(("400", "A path parameter does not parse"));
    }
    if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
        statuses.extend([
            ("400", "Malformed request"),
            ("401", "No valid credential"),
            ("403", "The credential's role may not do this"),
            (
                "503",
                "A store the request needs is unreachable; retry later",
            ),
        ]);
    }
    if op.request_body.is_some() {
        statuses.extend([
            ("400", "The body is unreadable or malformed"),
            ("413", "The body is larger than ingest.max_body_bytes"),
        ]);
    }
    for (status, description) in statuses {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(problem_response(description)));
    }
}

fn problem_response(description: &str) -> Response {
    let mut r = Response::new(description);
    r.content.insert(
        PROBLEM_JSON.to_owned(),
        RefOr::T(Content::new(Some(Ref::new(PROBLEM_SCHEMA)))),
    );
    r
}

/// A response documented as `application/json` with the Problem schema is served as
/// `application/problem+json`.
fn problems_as_problem_json(op: &mut Operation) {
    for response in op.responses.responses.values_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let is_problem = |c: &RefOr<Content>| matches!(c, RefOr::T(c) if matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location == PROBLEM_SCHEMA));
        if response
            .content
            .get("application/json")
            .is_some_and(is_problem)
            && let Some(content) = response.content.shift_remove("application/json")
        {
            response.content.insert(PROBLEM_JSON.to_owned(), content);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::to_value(crate::http::openapi()).unwrap_or_default()
    }

    #[test]
    fn every_error_answer_is_a_problem_document_and_nothing_else_is() {
        let doc = doc();
        let mut errors = 0;
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                for (status, response) in op["responses"].as_object().into_iter().flatten() {
                    let types: Vec<&String> = response["content"]
                        .as_object()
                        .map(|c| c.keys().collect())
                        .unwrap_or_default();
                    let readiness = path == "/readyz";
                    if status.starts_with(['4', '5']) && !readiness {
                        errors += 1;
                        assert_eq!(
                            types,
                            ["application/problem+json"],
                            "{method} {path} {status}"
                        );
                        assert_eq!(
                            response["content"]["application/problem+json"]["schema"]["$ref"],
                            "#/components/schemas/Problem"
                        );
                    } else {
                        assert!(
                            !types
                                .iter()
                                .any(|t| t.as_str() == "application/problem+json"),
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
        assert!(errors > 50, "{errors}");
    }

    #[test]
    fn routes_with_a_credential_a_body_or_path_parameters_document_their_rejections() {
        let doc = doc();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let has = |status: &str| op["responses"].get(status).is_some();
                if op["security"].is_array() {
                    for s in ["400", "401", "403", "503"] {
                        assert!(has(s), "{method} {path} lacks {s}");
                    }
                }
                if op.get("requestBody").is_some() {
                    assert!(has("400") && has("413"), "{method} {path}");
                }
                if path.contains('{') {
                    assert!(has("400"), "{method} {path}");
                }
            }
        }
    }
}
