//! Reading a lightweight transaction's answer: its first column, `[applied]`.

use scylla::response::query_result::QueryResult;
use scylla::value::{CqlValue, Row};

/// Whether the conditional statement that answered `result` applied; `Err` says why the
/// answer could not be read.
pub(crate) fn applied(result: QueryResult) -> Result<bool, String> {
    let first = result
        .into_rows_result()
        .map_err(|e| e.to_string())?
        .maybe_first_row::<Row>()
        .map_err(|e| e.to_string())?
        .and_then(|r| r.columns.into_iter().next().flatten());
    Ok(matches!(first, Some(CqlValue::Boolean(true))))
}
