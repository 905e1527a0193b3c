//! Lists over day partitions: newest day first, rows in clustering order (newest first)
//! within a day, resuming after a [`Position`], filtered here, stopping one row past the
//! page so that the last page says so.

use scylla::deserialize::row::DeserializeRow;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::prepared::PreparedStatement;

use super::{HistoryError, HistoryStore, Position, Window};

/// A listed row knows its own position.
pub(super) trait Positioned {
    fn position(&self) -> Position;
}

pub struct Page<R> {
    pub items: Vec<R>,
    /// Where the next page starts; None on the last page.
    pub next: Option<Position>,
}

/// One list request over day partitions.
pub(super) struct Walk<'a> {
    pub op: &'static str,
    pub statement: &'a PreparedStatement,
    pub tenant: &'a str,
    pub window: Window,
    pub after: Option<Position>,
    pub limit: usize,
}

impl HistoryStore {
    /// Runs `walk`; the statement binds `(tenant, day, from, to)`, its rows are `T`.
    pub(super) async fn walk<T, R>(
        &self,
        walk: Walk<'_>,
        convert: impl Fn(T) -> R,
        keep: impl Fn(&R) -> bool,
    ) -> Result<Page<R>, HistoryError>
    where
        T: for<'f> DeserializeRow<'f, 'f>,
        R: Positioned,
    {
        let op = walk.op;
        let bad = |reason: String| HistoryError::Result { op, reason };
        let mut items: Vec<R> = Vec::new();
        for day in walk.window.days_newest_first() {
            let resume = walk.after.filter(|a| a.day == day);
            if walk.after.is_some_and(|a| day > a.day) {
                continue;
            }
            let to = resume.map_or(walk.window.to, |a| a.at.min(walk.window.to));
            // Rows at the resume instant up to and including the resume row were on an
            // earlier page; ids are matched rather than compared, as Cassandra orders
            // uuids by version and bytes.
            let mut passed = resume.is_none();
            let mut paging = PagingState::start();
            loop {
                let (result, more) = self
                    .session
                    .execute_single_page(
                        walk.statement,
                        (walk.tenant, day, walk.window.from, to),
                        paging,
                    )
                    .await
                    .map_err(|source| HistoryError::Execute {
                        op,
                        source: Box::new(source),
                    })?;
                let rows = result.into_rows_result().map_err(|e| bad(e.to_string()))?;
                for row in rows.rows::<T>().map_err(|e| bad(e.to_string()))? {
                    let row = convert(row.map_err(|e| bad(e.to_string()))?);
                    if let Some(r) = resume.filter(|_| !passed) {
                        let p = row.position();
                        if p.at == r.at {
                            passed = p.id == r.id;
                            continue;
                        }
                        passed = true;
                    }
                    if !keep(&row) {
                        continue;
                    }
                    if items.len() == walk.limit {
                        let next = items.last().map(Positioned::position);
                        return Ok(Page { items, next });
                    }
                    items.push(row);
                }
                match more {
                    PagingStateResponse::HasMorePages { state } => paging = state,
                    PagingStateResponse::NoMorePages => break,
                }
            }
        }
        Ok(Page { items, next: None })
    }
}
