//! A replay's predicate into the runs it matches: `SELECT DISTINCT tenant, run_id FROM
//! runs WHERE (<predicate>)` in the caller's scope. The scope is the analytics engine's
//! (a tenant's session holds only its own files), so whatever the predicate says it
//! reads one tenant's rows, unless a platform admin asked for every tenant's.

use aiq_analytics::{Analytics, AnalyticsError, QueryResult, Scope};
use aiq_topics::{RunId, TenantId};
use serde_json::Value;

use super::Target;

/// The most runs one job takes; a predicate matching more is refused.
pub const MAX_RUNS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("field `where` is empty; give a predicate over the runs table, e.g. status = 'failed'")]
    Empty,
    #[error(
        "field `where` matches more than {MAX_RUNS} runs; narrow it (a `date` or \
         `workflow` condition) and replay in parts"
    )]
    TooMany,
    #[error(transparent)]
    Analytics(#[from] AnalyticsError),
    #[error("the query answered a row that is not a tenant and a run id: {0}")]
    BadRow(String),
}

/// The query a predicate becomes.
pub fn query(predicate: &str) -> String {
    format!(
        "SELECT DISTINCT tenant, run_id FROM runs WHERE ({predicate}) ORDER BY tenant, run_id \
         LIMIT {}",
        MAX_RUNS + 1
    )
}

/// The runs `predicate` matches in `scope`, ordered by tenant and run id.
pub async fn matching(
    analytics: &Analytics,
    scope: &Scope,
    predicate: &str,
) -> Result<Vec<Target>, SelectError> {
    if predicate.trim().is_empty() {
        return Err(SelectError::Empty);
    }
    targets(&analytics.query(scope, &query(predicate)).await?)
}

/// The runs of the query's answer; more than [`MAX_RUNS`] are refused.
fn targets(result: &QueryResult) -> Result<Vec<Target>, SelectError> {
    if result.rows.len() > MAX_RUNS || result.truncated {
        return Err(SelectError::TooMany);
    }
    result
        .rows
        .iter()
        .map(|row| {
            let target = match row.as_slice() {
                [Value::String(t), Value::String(r)] => TenantId::new(t.as_str())
                    .ok()
                    .zip(r.parse::<RunId>().ok())
                    .map(|(tenant, run)| Target { tenant, run }),
                _ => None,
            };
            target.ok_or_else(|| SelectError::BadRow(format!("{row:?}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_predicate_is_wrapped_so_that_it_only_filters() {
        let q = query("status = 'failed' OR true");
        assert!(q.starts_with(
            "SELECT DISTINCT tenant, run_id FROM runs WHERE (status = 'failed' OR true)"
        ));
        assert!(q.ends_with(&format!("LIMIT {}", MAX_RUNS + 1)));
    }

    fn answer(n: usize) -> QueryResult {
        let run = RunId::random().to_string();
        QueryResult {
            columns: Vec::new(),
            rows: (0..n)
                .map(|_| vec![Value::String("acme".into()), Value::String(run.clone())])
                .collect(),
            truncated: false,
            elapsed_ms: 0,
        }
    }

    #[test]
    fn a_predicate_matching_more_than_a_job_takes_is_refused() {
        assert_eq!(targets(&answer(MAX_RUNS)).unwrap().len(), MAX_RUNS);
        assert!(matches!(
            targets(&answer(MAX_RUNS + 1)),
            Err(SelectError::TooMany)
        ));
        let mut bad = answer(1);
        bad.rows[0][1] = Value::String("not a run id".into());
        assert!(matches!(targets(&bad), Err(SelectError::BadRow(_))));
    }
}
