//! Dead letters as a resource: list the caller's (a platform admin: everyone's), read
//! one with its original record, replay it to the topic it came from (once), or mark
//! it resolved. Another tenant's letter is answered exactly like a missing one.

use aiq_auth::{Action, Role};
use aiq_topics::AuditAction;
use aiq_topics::TenantId;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::dead_letters::LetterError;
use crate::history::{Letter, LetterFilter, LetterState, LetterSummary, PLATFORM};
use crate::http::history::{bad_param, history_error, paging, query_rejection};
use crate::http::{App, Caller};
use crate::problem::Problem;

const STATES: [&str; 4] = ["open", "replaying", "replayed", "resolved"];

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LettersQuery {
    /// Only letters of this kind (`unknown_workflow`, `invalid_input`, ...).
    kind: Option<String>,
    /// Only letters set aside by this stage (`orchestrator`, `worker`, `sink`).
    stage: Option<String>,
    /// open, replaying, replayed or resolved.
    #[param(pattern = "^(open|replaying|replayed|resolved)$")]
    state: Option<String>,
    /// Every tenant's letters, and those whose tenant is unknown (platform admins).
    #[param(value_type = Option<bool>)]
    all_tenants: Option<String>,
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
pub struct LetterList {
    dead_letters: Vec<LetterSummary>,
    /// Pass as `page_token` for the next page; null on the last page.
    next_page_token: Option<String>,
}

/// One header of the original record.
#[derive(Serialize, ToSchema)]
pub struct HeaderView {
    name: String,
    /// The value as text, when it is UTF-8.
    value: Option<String>,
    value_base64: Option<String>,
}

/// The record as it was read before it was set aside.
#[derive(Serialize, ToSchema)]
pub struct RecordView {
    /// The key as text, when it is UTF-8.
    key: Option<String>,
    key_base64: Option<String>,
    /// The value parsed, when it is JSON, with its sealed payloads opened for the
    /// letter's tenant.
    #[schema(value_type = Option<Value>)]
    value_json: Option<Value>,
    /// The bytes as kept (payloads sealed: what a replay writes back). Null when the
    /// value was not kept (larger than the dead-letter topic takes).
    value_base64: Option<String>,
    headers: Vec<HeaderView>,
}

/// One dead letter whole.
#[derive(Serialize, ToSchema)]
pub struct LetterDetail {
    id: Uuid,
    at: DateTime<Utc>,
    tenant: Option<String>,
    kind: String,
    stage: String,
    reason: String,
    topic: String,
    partition: Option<i32>,
    offset: Option<i64>,
    state: LetterState,
    /// When, and by whom, it was replayed or resolved.
    state_at: Option<DateTime<Utc>>,
    state_by: Option<String>,
    /// Where the replay wrote the record, in `topic`.
    replayed_offset: Option<i64>,
    record: RecordView,
}

fn text(b: &[u8]) -> Option<String> {
    std::str::from_utf8(b).ok().map(str::to_owned)
}

fn detail(l: Letter) -> LetterDetail {
    let record = RecordView {
        key: l.key.as_deref().and_then(text),
        key_base64: l.key.as_deref().map(|k| STANDARD.encode(k)),
        value_json: l
            .value
            .as_deref()
            .and_then(|v| serde_json::from_slice(v).ok()),
        value_base64: l.value.as_deref().map(|v| STANDARD.encode(v)),
        headers: l
            .headers
            .iter()
            .map(|(name, v)| HeaderView {
                name: name.clone(),
                value: v.as_deref().and_then(text),
                value_base64: v.as_deref().map(|v| STANDARD.encode(v)),
            })
            .collect(),
    };
    LetterDetail {
        id: l.id,
        at: l.at,
        tenant: l.tenant,
        kind: l.kind,
        stage: l.stage,
        reason: l.reason,
        topic: l.topic,
        partition: l.partition,
        offset: l.offset,
        state: l.state,
        state_at: l.state_at,
        state_by: l.state_by,
        replayed_offset: l.replayed_offset,
        record,
    }
}

/// Whether `caller` may see a letter of `tenant`: its own, or any for a platform admin.
fn visible(caller: &Caller) -> impl Fn(Option<&str>) -> bool + '_ {
    move |tenant| caller.role == Role::PlatformAdmin || tenant == Some(caller.tenant.as_str())
}

fn letter_problem(e: &LetterError) -> Problem {
    match e {
        LetterError::NotFound(_) => Problem::not_found(e.to_string()),
        LetterError::Done { .. } => {
            Problem::new(StatusCode::CONFLICT, "already-done", e.to_string())
        }
        LetterError::Busy(_) => {
            Problem::new(StatusCode::CONFLICT, "replay-in-progress", e.to_string()).retry_after(60)
        }
        LetterError::NotReplayable { .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not-replayable",
            e.to_string(),
        ),
        LetterError::Store(s) => history_error(s),
        LetterError::Publish(_) => Problem::unavailable(e.to_string()),
    }
}

fn letter_id(raw: &str) -> Result<Uuid, Problem> {
    raw.parse()
        .map_err(|_| Problem::not_found(format!("dead letter {raw:?} was not found")))
}

/// The caller's dead letters in a time range, newest first.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "dead-letters",
    params(LettersQuery),
    responses(
        (status = 200, body = LetterList),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list(
    State(app): State<App>,
    caller: Caller,
    query: Result<Query<LettersQuery>, QueryRejection>,
) -> Result<Json<LetterList>, Problem> {
    caller.require(Action::ReadDeadLetters)?;
    let Query(q) = query.map_err(|e| query_rejection(&e))?;
    let all = match q.all_tenants.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad_param("all_tenants", "must be true or false")),
    };
    if all {
        caller.require(Action::ReadDeadLettersAllTenants)?;
    }
    let state = match q.state.as_deref() {
        None => None,
        Some(s) if STATES.contains(&s) => Some(LetterState::parse(Some(s))),
        Some(_) => {
            return Err(bad_param(
                "state",
                format!("must be one of {}", STATES.join(", ")),
            ));
        }
    };
    let p = paging(
        q.from.as_deref(),
        q.to.as_deref(),
        q.limit.as_deref(),
        q.page_token.as_deref(),
    )?;
    let filter = LetterFilter {
        kind: q.kind,
        stage: q.stage,
        state,
    };
    let under = if all {
        PLATFORM
    } else {
        caller.tenant.as_str()
    };
    let page = app
        .history
        .list_dead_letters(under, p.window, &filter, p.after, p.limit)
        .await
        .map_err(|e| history_error(&e))?;
    Ok(Json(LetterList {
        dead_letters: page.items,
        next_page_token: page.next.map(|p| p.token()),
    }))
}

/// One dead letter with the record as it was read.
#[utoipa::path(get, path = "/v1/dead-letters/{id}", tag = "dead-letters",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = LetterDetail),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get(
    State(app): State<App>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<LetterDetail>, Problem> {
    caller.require(Action::ReadDeadLetters)?;
    let id = letter_id(&raw)?;
    let letter = app
        .dead_letters
        .get(id, visible(&caller))
        .await
        .map_err(|e| letter_problem(&e))?;
    let mut d = detail(letter);
    let tenant = d.tenant.as_deref().and_then(|t| TenantId::new(t).ok());
    if let (Some(v), Some(t)) = (d.record.value_json.take(), tenant) {
        let vault = std::sync::Arc::clone(&app.erasure.vault);
        // Opening may read the data-keys topic to its end: off the runtime's threads.
        d.record.value_json = tokio::task::spawn_blocking(move || {
            let mut v = v;
            // A payload that does not open (its tenant erased) is shown sealed.
            let _ = vault.open_tree(&t, &mut v);
            v
        })
        .await
        .ok();
    }
    Ok(Json(d))
}

/// Where a replay wrote the record.
#[derive(Serialize, ToSchema)]
pub struct ReplayAnswer {
    id: Uuid,
    state: LetterState,
    topic: String,
    partition: i32,
    offset: i64,
}

/// Writes the letter's original record back to the topic and partition it came from,
/// once (after, say, the workflow it named was registered). A second replay, or a
/// replay of a resolved letter, is refused with 409.
#[utoipa::path(post, path = "/v1/dead-letters/{id}/replay", tag = "dead-letters",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = ReplayAnswer),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn replay(
    State(app): State<App>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<ReplayAnswer>, Problem> {
    caller.require(Action::ManageDeadLetters)?;
    let id = letter_id(&raw)?;
    let done = app
        .dead_letters
        .replay(id, &caller.subject, visible(&caller))
        .await
        .map_err(|e| letter_problem(&e))?;
    crate::audit::record(
        &app.publisher,
        &caller,
        AuditAction::DeadLetterReplayed,
        &id.to_string(),
        serde_json::json!({"topic": done.topic, "partition": done.partition, "offset": done.offset}),
    )
    .await;
    Ok(Json(ReplayAnswer {
        id,
        state: LetterState::Replayed,
        topic: done.topic,
        partition: done.partition,
        offset: done.offset,
    }))
}

/// Marks the letter resolved: nothing is replayed, and it can no longer be. Refused
/// with 409 once it was replayed or resolved.
#[utoipa::path(delete, path = "/v1/dead-letters/{id}", tag = "dead-letters",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 204),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn resolve(
    State(app): State<App>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Action::ManageDeadLetters)?;
    let id = letter_id(&raw)?;
    app.dead_letters
        .resolve(id, &caller.subject, visible(&caller))
        .await
        .map_err(|e| letter_problem(&e))?;
    crate::audit::record(
        &app.publisher,
        &caller,
        AuditAction::DeadLetterResolved,
        &id.to_string(),
        Value::Null,
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
