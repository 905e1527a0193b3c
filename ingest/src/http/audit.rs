//! The caller's tenant's audit trail: who changed its configuration, newest first.

use aiq_auth::Action;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::history::AuditEntry;
use crate::http::history::{history_error, paging, query_rejection};
use crate::http::{App, Caller};
use crate::problem::Problem;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// RFC 3339. Default: 24 hours before `to`.
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339. Default: now. At most 31 days after `from`.
    #[param(format = DateTime)]
    to: Option<String>,
    /// 1 to 500; default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    events: Vec<AuditEntry>,
    /// Pass as `page_token` for the next page; null on the last page.
    next_page_token: Option<String>,
}

/// The tenant's audit events in a time range, newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, body = AuditList),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list(
    State(app): State<App>,
    caller: Caller,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditList>, Problem> {
    caller.require(Action::ReadAudit)?;
    let Query(q) = query.map_err(|e| query_rejection(&e))?;
    let p = paging(
        q.from.as_deref(),
        q.to.as_deref(),
        q.limit.as_deref(),
        q.page_token.as_deref(),
    )?;
    let page = app
        .history
        .list_audit(caller.tenant.as_str(), p.window, p.after, p.limit)
        .await
        .map_err(|e| history_error(&e))?;
    Ok(Json(AuditList {
        events: page.items,
        next_page_token: page.next.map(|p| p.token()),
    }))
}
