//! Lets through exactly one read-only statement: a query, or `EXPLAIN` of one.
//!
//! This is the first of two checks: the session also plans with DDL, DML and
//! statements disallowed, and holds no table but `runs` and `steps`.

use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

use crate::AnalyticsError;

/// Checks that `sql` is a single query before anything is planned.
pub(crate) fn check(sql: &str) -> Result<(), AnalyticsError> {
    let statements = DFParser::parse_sql(sql).map_err(AnalyticsError::from)?;
    match statements.len() {
        0 => Err(AnalyticsError::Invalid {
            message: "the query is empty".into(),
        }),
        1 => statements.front().map_or(Ok(()), read_only),
        n => Err(AnalyticsError::Refused {
            reason: format!("one statement per query, found {n}"),
        }),
    }
}

fn read_only(statement: &Statement) -> Result<(), AnalyticsError> {
    let kind = match statement {
        Statement::Statement(s) if matches!(**s, SqlStatement::Query(_)) => return Ok(()),
        Statement::Explain(e) => return read_only(&e.statement),
        Statement::Statement(s) => leading_keywords(&s.to_string()),
        Statement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE".into(),
        Statement::CopyTo(_) => "COPY".into(),
        Statement::Reset(_) => "RESET".into(),
    };
    Err(AnalyticsError::Refused {
        reason: format!(
            "{kind} is not allowed: only a query (SELECT, WITH, VALUES or EXPLAIN of one) \
             over the tables runs and steps"
        ),
    })
}

/// The statement's kind as its first keywords (`CREATE VIEW`, `SET`, `SHOW TABLES`): the
/// parser prints keywords in capitals and names as written.
fn leading_keywords(printed: &str) -> String {
    let words: Vec<&str> = printed
        .split_whitespace()
        .take(2)
        .take_while(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase()))
        .collect();
    if words.is_empty() {
        "this statement".into()
    } else {
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_pass_and_everything_else_is_named() {
        for sql in [
            "SELECT 1",
            "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
            "VALUES (1), (2)",
            "EXPLAIN SELECT * FROM runs",
            "EXPLAIN ANALYZE SELECT count(*) FROM steps",
            "SELECT 1; ",
        ] {
            assert!(check(sql).is_ok(), "{sql}");
        }
        for (sql, kind) in [
            ("create view v as select 1", "CREATE VIEW"),
            ("Drop Table runs", "DROP TABLE"),
            ("set datafusion.execution.batch_size = 1", "SET"),
            ("RESET datafusion.execution.batch_size", "RESET"),
            ("EXPLAIN COPY runs TO 'x.csv'", "COPY"),
        ] {
            match check(sql) {
                Err(AnalyticsError::Refused { reason }) => {
                    assert!(
                        reason.starts_with(&format!("{kind} is not allowed")),
                        "{reason}"
                    );
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
        assert!(matches!(
            check("SELEC 1"),
            Err(AnalyticsError::Invalid { .. })
        ));
    }
}
