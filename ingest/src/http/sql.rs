//! Tenant-facing SQL over the run history's Parquet tables, and the ready reports.
//! Queries see the caller's tenant only; a platform admin who names no tenant sees all.

use aiq_analytics::{AnalyticsError, QueryResult, REPORTS, Scope};
use aiq_auth::{Action, Role};
use aiq_topics::AuditAction;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::http::body;
use crate::http::history::query_rejection;
use crate::http::{ACTING_TENANT, App, Caller};
use crate::problem::{FieldError, Problem};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Csv,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"query": "SELECT status, count(*) AS runs FROM runs GROUP BY status"}))]
pub struct SqlRequest {
    /// One read-only statement over the tables `runs` and `steps`.
    #[schema(min_length = 1)]
    query: String,
    /// `json` (default) or `csv`.
    #[serde(default)]
    format: Format,
}

#[derive(Serialize, ToSchema)]
pub struct Column {
    name: String,
    /// The Arrow type, e.g. `Int64`, `Utf8`.
    data_type: String,
}

#[derive(Serialize, ToSchema)]
pub struct SqlAnswer {
    columns: Vec<Column>,
    /// One array per row, in column order; timestamps as RFC 3339 strings.
    #[schema(value_type = Vec<Vec<Value>>)]
    rows: Vec<Vec<Value>>,
    /// More rows matched than one answer may hold; `rows` has the first ones.
    truncated: bool,
    elapsed_ms: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ReportInfo {
    name: String,
    title: String,
}

#[derive(Serialize, ToSchema)]
pub struct ReportList {
    reports: Vec<ReportInfo>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `json` (default) or `csv`.
    format: Option<Format>,
}

pub(crate) fn analytics(app: &App) -> Result<&aiq_analytics::Analytics, Problem> {
    app.analytics.as_deref().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "analytics-disabled",
            "this deployment does not serve SQL (no analytics settings: the Parquet history \
             root is not configured)",
        )
    })
}

/// A platform admin acting for no particular tenant (no `X-AIQ-Tenant`) queries every
/// tenant; anyone else only the tenant of the credential.
pub(crate) fn scope(caller: &Caller, headers: &HeaderMap) -> Scope {
    if caller.role == Role::PlatformAdmin
        && aiq_auth::permits(caller.role, Action::QuerySqlAllTenants)
        && !headers.contains_key(ACTING_TENANT)
    {
        Scope::Platform
    } else {
        Scope::Tenant(caller.tenant.clone())
    }
}

/// Records a query (or report) in the audit trail: the SHA-256 of its text, never the
/// text, with how many rows it returned and how it ended.
async fn audit_query(
    app: &App,
    caller: &Caller,
    headers: &HeaderMap,
    text: &str,
    report: Option<&str>,
    result: &Result<aiq_analytics::QueryResult, AnalyticsError>,
) {
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let platform = matches!(scope(caller, headers), Scope::Platform);
    let detail = match result {
        Ok(r) => serde_json::json!({
            "sha256": hash, "rows": r.rows.len(), "truncated": r.truncated,
            "elapsed_ms": r.elapsed_ms, "report": report, "all_tenants": platform,
        }),
        Err(e) => serde_json::json!({
            "sha256": hash, "error": e.to_string(), "report": report, "all_tenants": platform,
        }),
    };
    let mut event = crate::audit::event(caller, AuditAction::SqlQuery, &hash, detail);
    event.outcome = Some(if result.is_ok() { "ok" } else { "error" }.into());
    if let Err(e) = crate::audit::publish(&app.publisher, &event).await {
        tracing::error!(tenant = %event.tenant, error = %e, "sql_query audit event not published");
    }
}

/// A tenant-scoped query's limits from the tenant's plan (the platform scope keeps the
/// configured ones).
fn limits(app: &App, caller: &Caller, headers: &HeaderMap) -> aiq_analytics::Limits {
    match scope(caller, headers) {
        Scope::Platform => aiq_analytics::Limits::default(),
        Scope::Tenant(t) => app
            .tenants
            .directory
            .with(&t, |r| aiq_analytics::Limits {
                max_rows: r.plan.sql_max_rows.map(|n| n as usize),
                timeout_ms: r.plan.sql_timeout_ms.map(u64::from),
            })
            .unwrap_or_default(),
    }
}

pub(crate) fn analytics_error(e: AnalyticsError) -> Problem {
    let detail = e.to_string();
    match e {
        AnalyticsError::Refused { .. } => {
            Problem::new(StatusCode::FORBIDDEN, "sql-refused", detail)
        }
        AnalyticsError::Invalid { message } => Problem::bad_request("invalid-query", detail)
            .with_errors(vec![FieldError {
                pointer: "/query".into(),
                reason: message,
                line: None,
            }]),
        AnalyticsError::Timeout { .. } => {
            Problem::new(StatusCode::GATEWAY_TIMEOUT, "query-timeout", detail)
        }
        AnalyticsError::ResourcesExhausted { .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "query-too-big",
            format!("{detail}; narrow it (a `date` filter prunes whole days)"),
        ),
        // The type names the limit (`tenant-query-limit`, `process-query-limit`), the
        // detail its setting.
        AnalyticsError::Busy { limit, .. } => Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("{limit}-query-limit"),
            detail,
        )
        .retry_after(aiq_analytics::RETRY_AFTER_SECS),
        AnalyticsError::HistoryChanged { .. } => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "history-changed", detail)
                .retry_after(aiq_analytics::RETRY_AFTER_SECS)
        }
        AnalyticsError::UnknownReport(_) => Problem::not_found(detail),
        AnalyticsError::Internal(_) => {
            tracing::error!(error = %detail, "analytics query failed");
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
        }
    }
}

fn answer(result: QueryResult, format: Format) -> Response {
    match format {
        Format::Json => Json(SqlAnswer {
            columns: result
                .columns
                .into_iter()
                .map(|c| Column {
                    name: c.name,
                    data_type: c.data_type,
                })
                .collect(),
            rows: result.rows,
            truncated: result.truncated,
            elapsed_ms: result.elapsed_ms,
        })
        .into_response(),
        Format::Csv => {
            let mut resp = result.to_csv().into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            // CSV has no place for these, so they travel as headers.
            h.insert(
                "aiq-truncated",
                HeaderValue::from_static(if result.truncated { "true" } else { "false" }),
            );
            h.insert("aiq-elapsed-ms", HeaderValue::from(result.elapsed_ms));
            resp
        }
    }
}

/// Runs one read-only SQL statement over the caller's run history (`runs`, `steps`).
/// Beyond the tenant's or the process's concurrent queries: 429 with `Retry-After`; 503
/// with `Retry-After` when the history's files changed under every attempt at it.
#[utoipa::path(post, path = "/v1/sql", tag = "sql",
    params(("X-AIQ-Tenant" = Option<String>, Header, pattern = "^[a-z0-9][a-z0-9_-]{0,63}$",
        description = "Platform admins: query this tenant only")),
    request_body = SqlRequest,
    responses(
        (status = 200, description = "The answer: JSON, or CSV with `format` csv",
            content((SqlAnswer = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 413, body = Problem), (status = 422, body = Problem),
        (status = 429, description = "the tenant or the process runs as many queries as allowed; see Retry-After", body = Problem),
        (status = 500, body = Problem),
        (status = 503, description = "this deployment serves no SQL (`analytics-disabled`), or the history's files changed under every attempt at the query (`history-changed`, with Retry-After)", body = Problem),
        (status = 504, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn query(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    caller.require(Action::QuerySql)?;
    let engine = analytics(&app)?;
    let raw = body::bytes(raw, app.settings.max_body_bytes)?;
    let req: SqlRequest = body::object(&raw)?;
    if req.query.trim().is_empty() {
        return Err(
            Problem::bad_request("invalid-query", "`query` is empty").with_errors(vec![
                FieldError {
                    pointer: "/query".into(),
                    reason: "must be one SQL statement".into(),
                    line: None,
                },
            ]),
        );
    }
    let result = engine
        .query_with(
            &scope(&caller, &headers),
            &req.query,
            limits(&app, &caller, &headers),
        )
        .await;
    audit_query(&app, &caller, &headers, &req.query, None, &result).await;
    let result = result.map_err(analytics_error)?;
    Ok(answer(result, req.format))
}

/// The ready reports.
#[utoipa::path(get, path = "/v1/reports", tag = "sql",
    responses(
        (status = 200, body = ReportList),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn reports(State(app): State<App>, caller: Caller) -> Result<Json<ReportList>, Problem> {
    caller.require(Action::QuerySql)?;
    analytics(&app)?;
    Ok(Json(ReportList {
        reports: REPORTS
            .iter()
            .map(|r| ReportInfo {
                name: r.name.to_owned(),
                title: r.title.to_owned(),
            })
            .collect(),
    }))
}

/// Runs a ready report over the caller's run history.
#[utoipa::path(get, path = "/v1/reports/{name}", tag = "sql",
    params(
        ("name" = String, Path, description = "A name from GET /v1/reports"),
        ReportQuery,
        ("X-AIQ-Tenant" = Option<String>, Header, pattern = "^[a-z0-9][a-z0-9_-]{0,63}$",
            description = "Platform admins: this tenant only"),
    ),
    responses(
        (status = 200, description = "The answer: JSON, or CSV with `format` csv",
            content((SqlAnswer = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem),
        (status = 429, description = "the tenant or the process runs as many queries as allowed; see Retry-After", body = Problem),
        (status = 500, body = Problem),
        (status = 503, description = "this deployment serves no SQL (`analytics-disabled`), or the history's files changed under every attempt at the query (`history-changed`, with Retry-After)", body = Problem),
        (status = 504, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn report(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Action::QuerySql)?;
    let engine = analytics(&app)?;
    let Query(q) = query.map_err(|e| query_rejection(&e))?;
    let result = engine
        .report_with(
            &scope(&caller, &headers),
            &name,
            limits(&app, &caller, &headers),
        )
        .await;
    let text = aiq_analytics::REPORTS
        .iter()
        .find(|r| r.name == name)
        .map_or(name.as_str(), |r| r.sql);
    audit_query(&app, &caller, &headers, text, Some(&name), &result).await;
    let result = result.map_err(analytics_error)?;
    Ok(answer(result, q.format.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;

    #[test]
    fn a_history_that_kept_changing_is_a_503_to_try_again() {
        let resp = analytics_error(AnalyticsError::HistoryChanged { attempts: 8 }).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers()[axum::http::header::RETRY_AFTER],
            aiq_analytics::RETRY_AFTER_SECS.to_string()
        );
    }

    #[test]
    fn a_query_the_engine_cannot_plan_names_the_query_field() {
        let problem = analytics_error(AnalyticsError::Invalid {
            message: "No field named nope".into(),
        });
        let body = serde_json::to_value(&problem).unwrap_or_default();
        assert_eq!(problem.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body["errors"][0]["pointer"], "/query", "{body}");
    }
}
