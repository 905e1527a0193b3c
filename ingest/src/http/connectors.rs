//! `GET /v1/connectors`: every connector the workflow builder offers, each with its
//! arguments as form fields (`aiq_connectors::forms`); and `GET /v1/secrets`: the names
//! of the caller's secrets (never a value), for picking one by name.

use aiq_auth::Action;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::{App, Caller};
use crate::problem::Problem;

/// The connectors a task step can use, with their argument fields.
#[utoipa::path(get, path = "/v1/connectors", tag = "workflows",
    responses((status = 200, body = [Object]), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list(
    caller: Caller,
) -> Result<Json<&'static [aiq_connectors::forms::ConnectorForm]>, Problem> {
    caller.require(Action::ReadWorkflows)?;
    Ok(Json(aiq_connectors::forms::FORMS))
}

#[derive(Serialize, ToSchema)]
pub struct SecretNames {
    /// The names of the caller's secrets, sorted. Values are never returned.
    secrets: Vec<String>,
}

/// The names of the caller's secrets, as the secrets topic holds them now.
#[utoipa::path(get, path = "/v1/secrets", tag = "secrets",
    responses((status = 200, body = SecretNames), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 503, body = Problem)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn secret_names(
    State(app): State<App>,
    caller: Caller,
) -> Result<Json<SecretNames>, Problem> {
    caller.require(Action::ManageSecrets)?;
    let secrets = app
        .erasure
        .secret_names
        .of(&app.erasure.kafka, caller.tenant.as_str())
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    Ok(Json(SecretNames { secrets }))
}
