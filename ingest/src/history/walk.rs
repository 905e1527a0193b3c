//! Lists over day partitions: newest day first, rows in clustering order (newest first)
//! within a day, resuming after a [`Position`], stopping one row past the page so that
//! the last page says so, and stopping early when the request's [`Budget`] is spent.
//!
//! Each fetched batch of rows goes through a `resolve` step before it is listed: the
//! identity for tables whose rows are the answer, a filter for rows filtered here, or a
//! read of each run's row for the key-only status indexes (`runs.rs`).

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use scylla::deserialize::row::DeserializeRow;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use uuid::Uuid;

use super::{FETCH_PAGE, HistoryError, HistoryStore, Position, Window};

/// A listed row knows its own position.
pub(super) trait Positioned {
    fn position(&self) -> Position;
}

/// The most one list request reads before it answers with what it has and a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Rows read from Cassandra: listing rows, plus each run row read to check an index
    /// entry.
    pub rows: usize,
    /// Day partitions queried.
    pub partitions: usize,
}

impl Default for Budget {
    /// 5,000 rows (ten full pages of 500) and 32 partitions (the longest window: 31
    /// days touch 32 UTC days).
    fn default() -> Self {
        Self {
            rows: 5_000,
            partitions: 32,
        }
    }
}

/// What one list request read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan {
    pub rows: usize,
    pub partitions: usize,
    /// The budget stopped the request before the page was full or the window read.
    pub truncated: bool,
}

pub struct Page<R> {
    pub items: Vec<R>,
    /// Where the next page starts; None on the last page.
    pub next: Option<Position>,
    pub scan: Scan,
}

/// One list request over day partitions.
pub(super) struct Walk<'a> {
    pub op: &'static str,
    pub statement: &'a PreparedStatement,
    pub window: Window,
    pub after: Option<Position>,
    pub limit: usize,
    pub budget: Budget,
    /// Every row is expected to be listed (a table keyed by the filter): fetch only
    /// what the page still needs. Otherwise rows are filtered here and fetched
    /// [`FETCH_PAGE`] at a time.
    pub sized_to_page: bool,
}

/// What `resolve` made of a batch: the rows to list, in order, and the extra rows it
/// read to decide.
pub(super) struct Resolved<R> {
    pub items: Vec<R>,
    pub reads: usize,
}

/// The cursor of a request the budget stopped before it read anything of `day`.
fn day_start(day: NaiveDate) -> Position {
    let end = NaiveTime::from_hms_milli_opt(23, 59, 59, 999).unwrap_or(NaiveTime::MIN);
    Position {
        day,
        at: day.and_time(end).and_utc(),
        id: Uuid::nil(),
    }
}

impl HistoryStore {
    /// Runs `walk`: `bind(day, from, to)` gives the statement's values for one day, its
    /// rows are `T`, each `convert`ed to a candidate `C`; each fetched batch of
    /// candidates is `resolve`d into the rows listed.
    pub(super) async fn walk<T, C, R, V, F>(
        &self,
        walk: Walk<'_>,
        bind: impl Fn(NaiveDate, DateTime<Utc>, DateTime<Utc>) -> V,
        convert: impl Fn(T) -> C,
        resolve: impl Fn(Vec<C>) -> F,
    ) -> Result<Page<R>, HistoryError>
    where
        T: for<'f> DeserializeRow<'f, 'f>,
        C: Positioned,
        R: Positioned,
        V: SerializeRow,
        F: Future<Output = Result<Resolved<R>, HistoryError>>,
    {
        let op = walk.op;
        let bad = |reason: String| HistoryError::Result { op, reason };
        let budget = walk.budget;
        let mut scan = Scan::default();
        let mut items: Vec<R> = Vec::new();
        // A cut before any row past `after` would hand back the same cursor forever.
        let mut progressed = false;
        for day in walk.window.days_newest_first() {
            if walk.after.is_some_and(|a| day > a.day) {
                continue;
            }
            // Always read something, so that every request moves its cursor on.
            if scan.partitions > 0 && scan.partitions >= budget.partitions {
                scan.truncated = true;
                return Ok(Page {
                    items,
                    next: Some(day_start(day)),
                    scan,
                });
            }
            scan.partitions += 1;
            let resume = walk.after.filter(|a| a.day == day);
            let to = resume.map_or(walk.window.to, |a| a.at.min(walk.window.to));
            // Rows at the resume instant up to and including the resume row were on an
            // earlier page; ids are matched rather than compared, as Cassandra orders
            // uuids by version and bytes. A nil id (a cursor between days) resumes
            // before every row at its instant.
            let mut passed = resume.is_none_or(|r| r.id.is_nil());
            let mut last_seen: Option<Position> = None;
            let mut paging = PagingState::start();
            loop {
                if progressed && scan.rows >= budget.rows {
                    scan.truncated = true;
                    let next = last_seen.or(resume).unwrap_or_else(|| day_start(day));
                    return Ok(Page {
                        items,
                        next: Some(next),
                        scan,
                    });
                }
                let wanted = if walk.sized_to_page {
                    walk.limit + 1 - items.len()
                } else {
                    FETCH_PAGE
                };
                let left = budget.rows.saturating_sub(scan.rows).max(1);
                let mut statement = walk.statement.clone();
                statement.set_page_size(
                    i32::try_from(wanted.min(left).clamp(1, FETCH_PAGE)).unwrap_or(1),
                );
                let (result, more) = self
                    .session
                    .execute_single_page(&statement, bind(day, walk.window.from, to), paging)
                    .await
                    .map_err(|source| HistoryError::Execute {
                        op,
                        source: Box::new(source),
                    })?;
                let rows = result.into_rows_result().map_err(|e| bad(e.to_string()))?;
                let mut batch = Vec::new();
                for row in rows.rows::<T>().map_err(|e| bad(e.to_string()))? {
                    scan.rows += 1;
                    let row = convert(row.map_err(|e| bad(e.to_string()))?);
                    let p = row.position();
                    last_seen = Some(p);
                    if let Some(r) = resume.filter(|_| !passed) {
                        if p.at == r.at {
                            passed = p.id == r.id;
                            continue;
                        }
                        passed = true;
                    }
                    progressed = true;
                    batch.push(row);
                }
                let resolved = resolve(batch).await?;
                scan.rows += resolved.reads;
                for row in resolved.items {
                    if items.len() == walk.limit {
                        let next = items.last().map(Positioned::position);
                        return Ok(Page { items, next, scan });
                    }
                    items.push(row);
                }
                match more {
                    PagingStateResponse::HasMorePages { state } => paging = state,
                    PagingStateResponse::NoMorePages => break,
                }
            }
            progressed = true;
        }
        Ok(Page {
            items,
            next: None,
            scan,
        })
    }
}
