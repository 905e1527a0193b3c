//! Liveness and readiness, on the API listener and the operations listener (`ops`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::http::{App, READY_TIMEOUT};

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    kafka: bool,
    definitions_loaded: bool,
    /// What the process's stages report as failing, by what it concerns
    /// (`sink.history_store`: the sink cannot write the Parquet history), with the reason.
    problems: BTreeMap<String, String>,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Kafka answers and every registered workflow has been read: requests will succeed.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, body = Readiness),
    (status = 503, body = Readiness, description = "Kafka unreachable, definitions still loading, or a stage reports a problem"),
))]
pub async fn readyz(State(app): State<App>) -> (StatusCode, Json<Readiness>) {
    let r = Readiness {
        kafka: app.publisher.ready(READY_TIMEOUT).await,
        definitions_loaded: *app.catalog_ready.borrow(),
        problems: app.health.problems(),
    };
    let status = if r.kafka && r.definitions_loaded && r.problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r))
}
