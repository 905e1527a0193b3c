//! `DELETE /v1/tenants/{id}/data`: erasing a tenant's data, in two calls (the first
//! answers the plan and a confirmation token, the second, with the token, erases).
//! `DELETE /v1/runs/{run_id}`: erasing one ended run's payloads.

use aiq_auth::Action;
use aiq_topics::{RunId, TenantId};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::erasure::{ErasureCertificate, ErasureError, ErasurePlan};
use crate::http::{App, Caller};
use crate::problem::Problem;
use crate::run_erasure::{RunErasureCertificate, RunErasureError};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EraseQuery {
    /// The token a first call without it answered.
    confirmation: Option<String>,
}

/// The plan (first call) or the certificate (confirmed call).
#[derive(Serialize, ToSchema)]
pub struct ErasureAnswer {
    /// True once the data is erased.
    erased: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<ErasurePlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate: Option<ErasureCertificate>,
}

fn problem(e: ErasureError) -> Problem {
    match e {
        ErasureError::Tenant(t) => super::tenants::problem(t),
        ErasureError::Confirmation => {
            Problem::new(StatusCode::CONFLICT, "confirmation-mismatch", e.to_string())
        }
        ErasureError::NoVault => {
            Problem::new(StatusCode::CONFLICT, "erasure-unavailable", e.to_string())
        }
        e => Problem::unavailable(format!(
            "{e}; the tenant is marked erased, and the same confirmed call finishes the erasure"
        )),
    }
}

/// Erases a tenant's data: its data keys are destroyed (every record sealed under them,
/// wherever it is kept, becomes unreadable), its history rows and Parquet folders
/// deleted, its definitions and secrets removed, its runs cancelled and its triggers
/// refused for good. Without `confirmation`, nothing is changed: the answer says what
/// would be erased and carries the token that confirms it.
#[utoipa::path(delete, path = "/v1/tenants/{id}/data", tag = "tenants",
    params(("id" = String, Path), EraseQuery),
    responses(
        (status = 200, body = ErasureAnswer),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn erase(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<EraseQuery>,
) -> Result<Json<ErasureAnswer>, Problem> {
    caller.require(Action::EraseTenantData)?;
    let id = TenantId::new(&id).map_err(|_| Problem::not_found(format!("no tenant {id:?}")))?;
    let Some(confirmation) = q.confirmation else {
        let plan = app.erasure.plan(&app.tenants, &id).await.map_err(problem)?;
        return Ok(Json(ErasureAnswer {
            erased: false,
            plan: Some(plan),
            certificate: None,
        }));
    };
    let certificate = app
        .erasure
        .erase(
            &app.tenants,
            &app.publisher,
            &app.history,
            &caller,
            &id,
            Some(&confirmation),
        )
        .await
        .map_err(problem)?;
    Ok(Json(ErasureAnswer {
        erased: true,
        plan: None,
        certificate: Some(certificate),
    }))
}

fn run_problem(e: RunErasureError) -> Problem {
    match e {
        RunErasureError::NotFound(_) => Problem::not_found(e.to_string()),
        RunErasureError::NotEnded { .. } => {
            Problem::new(StatusCode::CONFLICT, "run-not-ended", e.to_string())
        }
        RunErasureError::AlreadyErased { .. } => {
            Problem::new(StatusCode::CONFLICT, "run-already-erased", e.to_string())
        }
        RunErasureError::History(_) | RunErasureError::Publish(_) => Problem::unavailable(format!(
            "{e}; nothing is marked erased yet, and the same call finishes the job"
        )),
    }
}

/// Erases one of the caller's ended runs' payloads: its input, output and error
/// messages are cleared from the history rows at once and from the Parquet history by
/// the sink within its next commit; the state the orchestrator keeps of a failed run
/// for redrive is dropped. Ids, statuses, times, sizes and error classes stay. The
/// certificate is the answer, and goes to the audit trail. Another tenant's run is
/// answered exactly like a missing one.
#[utoipa::path(delete, path = "/v1/runs/{run_id}", tag = "runs",
    params(("run_id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = RunErasureCertificate),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn erase_run(
    State(app): State<App>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<RunErasureCertificate>, Problem> {
    caller.require(Action::EraseRunData)?;
    let run: RunId = raw
        .parse()
        .map_err(|_| Problem::not_found(format!("run {raw:?} was not found")))?;
    crate::run_erasure::erase_run(
        &app.publisher,
        &app.history,
        &caller,
        run,
        app.erasure.vault.is_on(),
    )
    .await
    .map(Json)
    .map_err(run_problem)
}
