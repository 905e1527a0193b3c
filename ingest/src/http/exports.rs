//! Tenant data exports: `POST /v1/tenants/{id}/exports` starts one, `GET
//! /v1/exports/{id}` shows its progress and download link, `GET
//! /v1/exports/{id}/archive` downloads it (the same credentials, for a day).

use aiq_auth::{Action, Role};
use aiq_topics::TenantId;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::export::{ExportJob, Exporter};
use crate::http::{App, Caller};
use crate::problem::Problem;

#[derive(Serialize, ToSchema)]
pub struct ExportStarted {
    #[schema(value_type = String, format = Uuid)]
    export_id: Uuid,
    /// Always `running`.
    state: &'static str,
    /// `GET` it for progress and, once done, the download link.
    status_url: String,
}

#[derive(Serialize, ToSchema)]
pub struct ExportView {
    #[serde(flatten)]
    job: ExportJob,
    /// Set while the archive can be downloaded (same credentials).
    download_url: Option<String>,
}

fn exporter(app: &App) -> Result<&Exporter, Problem> {
    app.exports.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "export-unavailable",
            "this deployment keeps no history store (`sink.parquet.root`), where exports are written",
        )
    })
}

/// A tenant admin for its own tenant, a platform admin for any.
fn may_export(caller: &Caller, tenant: &str) -> Result<(), Problem> {
    caller.require(Action::ExportTenantData)?;
    if caller.role == Role::PlatformAdmin || caller.tenant.as_str() == tenant {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "a {} of {} may not export tenant {tenant:?}",
                caller.role, caller.tenant
            ),
        ))
    }
}

/// Starts an export of the tenant's data: definitions, runs with their payloads, audit,
/// API key and secret names (never values), its Parquet history, with a manifest of
/// checksums.
#[utoipa::path(post, path = "/v1/tenants/{id}/exports", tag = "tenants",
    params(("id" = String, Path)),
    responses(
        (status = 202, body = ExportStarted),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 429, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn start(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<ExportStarted>), Problem> {
    may_export(&caller, &id)?;
    let exporter = exporter(&app)?;
    let tenant = TenantId::new(&id).map_err(|_| Problem::not_found(format!("no tenant {id:?}")))?;
    app.tenants.catch_up().await;
    let since = match app.tenants.get(&tenant).await {
        Some(r) if r.is_erased() => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "tenant-erased",
                format!("tenant {id:?} was erased: there is nothing to export"),
            ));
        }
        Some(r) => r.created_at,
        // An unregistered tenant exists only for itself, where the registry is open.
        None if app.settings.open_tenants && caller.tenant == tenant => {
            Utc::now() - chrono::Duration::days(3 * 366)
        }
        None => return Err(Problem::not_found(format!("no tenant {id:?}"))),
    };
    let slot = std::sync::Arc::clone(&exporter.slots)
        .try_acquire_owned()
        .map_err(|_| {
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-exports",
                format!(
                    "this process is building as many exports as it may at once \
                     (ingest.max_concurrent_exports = {}); ask again once one has ended",
                    app.settings.max_concurrent_exports
                ),
            )
            .retry_after(30)
        })?;
    let export_id = Uuid::new_v4();
    exporter
        .jobs
        .insert(export_id, tenant.as_str(), &caller.subject, Utc::now())
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    let job = exporter.clone().run(tenant, since, export_id);
    tokio::spawn(async move {
        job.await;
        drop(slot);
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(ExportStarted {
            export_id,
            state: "running",
            status_url: format!("/v1/exports/{export_id}"),
        }),
    ))
}

async fn job_for(app: &App, caller: &Caller, raw: &str) -> Result<ExportJob, Problem> {
    let missing = || Problem::not_found(format!("no export {raw:?}"));
    let id: Uuid = raw.parse().map_err(|_| missing())?;
    let job = exporter(app)?
        .jobs
        .get(id)
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?
        .ok_or_else(missing)?;
    // Another tenant's export does not exist for this caller.
    may_export(caller, &job.tenant).map_err(|_| missing())?;
    Ok(job)
}

/// An export's progress, and its download link once it succeeded.
#[utoipa::path(get, path = "/v1/exports/{id}", tag = "tenants",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = ExportView),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ExportView>, Problem> {
    let mut job = job_for(&app, &caller, &id).await?;
    job.state = job.state_at(Utc::now()).to_owned();
    let download_url =
        (job.state == "succeeded").then(|| format!("/v1/exports/{}/archive", job.id));
    Ok(Json(ExportView { job, download_url }))
}

/// The export's archive (a tar: JSON Lines, Parquet and `manifest.json`), for a day
/// after it finished.
#[utoipa::path(get, path = "/v1/exports/{id}/archive", tag = "tenants",
    params(("id" = String, Path)),
    responses(
        (status = 200, content_type = "application/x-tar", body = Vec<u8>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 410, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn archive(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let job = job_for(&app, &caller, &id).await?;
    match job.state_at(Utc::now()) {
        "succeeded" => {}
        "expired" => {
            return Err(Problem::new(
                StatusCode::GONE,
                "export-expired",
                "the archive's download time is over; start a new export",
            ));
        }
        state => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "export-not-ready",
                format!("the export is {state}"),
            ));
        }
    }
    let bytes = exporter(&app)?
        .archive(&job)
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"aiq-export-{}-{}.tar\"",
                    job.tenant, job.id
                ),
            ),
        ],
        bytes,
    )
        .into_response())
}
