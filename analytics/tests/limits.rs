//! Big answers are cut, long queries stopped, greedy ones refused memory; an empty
//! history answers with no rows.
#![allow(clippy::unwrap_used)]

mod common;

use aiq_analytics::{Analytics, AnalyticsError, AnalyticsSettings, REPORTS, Scope};
use aiq_topics::TenantId;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_cross_join_is_cut_at_max_result_rows() {
    let h = History::build(100);
    let a = h.analytics_with(|s| s.max_result_rows = 1_000);
    let steps = h.steps(None).count();
    assert!(steps * steps > 1_000_000);
    let r = a
        .query(
            &Scope::Platform,
            "SELECT a.run_id, b.step FROM steps a CROSS JOIN steps b",
        )
        .await
        .unwrap();
    println!("cross join of {steps}² rows cut after {} ms", r.elapsed_ms);
    assert!(r.truncated);
    assert_eq!(r.rows.len(), 1_000);

    let r = a
        .query(&Scope::Platform, "SELECT count(*) FROM runs")
        .await
        .unwrap();
    assert!(!r.truncated);
    assert_eq!(r.rows.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_query_is_stopped_by_the_timeout() {
    let h = History::build(10);
    let a = h.analytics_with(|s| s.timeout_ms = 300);
    let e = a
        .query(
            &Scope::Platform,
            "SELECT count(*) FROM generate_series(1, 1000000000) a \
             CROSS JOIN generate_series(1, 1000000000) b",
        )
        .await
        .unwrap_err();
    assert!(matches!(e, AnalyticsError::Timeout { ms: 300 }), "{e:?}");
    assert_eq!(e.to_string(), "the query ran longer than 300 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_needs_more_memory_than_allowed_is_refused_it() {
    let h = History::build(10);
    let a = h.analytics_with(|s| s.memory_limit_bytes = 2 * 1024 * 1024);
    let e = a
        .query(
            &Scope::Platform,
            "SELECT count(DISTINCT value) FROM generate_series(1, 20000000)",
        )
        .await
        .unwrap_err();
    println!("{e}");
    assert!(
        matches!(e, AnalyticsError::ResourcesExhausted { .. }),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_history_answers_every_report_with_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let a = Analytics::new(AnalyticsSettings {
        root: dir.path().join("not-yet").into(),
        ..Default::default()
    })
    .unwrap();
    let acme = Scope::Tenant(TenantId::new("acme").unwrap());
    for scope in [&Scope::Platform, &acme] {
        for report in REPORTS {
            let r = a.report(scope, report.name).await.unwrap();
            assert!(r.rows.is_empty(), "{}", report.name);
            assert!(!r.columns.is_empty());
        }
        let r = a.query(scope, "SELECT * FROM steps").await.unwrap();
        let names: Vec<&str> = r.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.last(), Some(&"date"));
        assert!(names.contains(&"tenant") && names.contains(&"kafka_offset"));
    }
    // A tenant without files beside tenants with files also sees an empty table.
    let h = History::build(10);
    let newcomer = Scope::Tenant(TenantId::new("newcomer").unwrap());
    let r = h
        .analytics()
        .query(&newcomer, "SELECT count(*) FROM runs")
        .await
        .unwrap();
    assert_eq!(r.rows[0][0], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_reports_and_bad_sql_name_the_problem() {
    let h = History::build(10);
    let a = h.analytics();
    let e = a.report(&Scope::Platform, "nope").await.unwrap_err();
    assert!(matches!(e, AnalyticsError::UnknownReport(ref n) if n == "nope"));
    let e = a
        .query(&Scope::Platform, "SELECT nope FROM runs")
        .await
        .unwrap_err();
    assert!(matches!(e, AnalyticsError::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains("nope"), "{e}");
    let e = a
        .query(&Scope::Platform, "SELECT * FROM jobs")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("jobs"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_come_out_as_json_csv_and_a_text_table() {
    let h = History::build(10);
    let a = h.analytics();
    let r = a
        .query(
            &Scope::Platform,
            "SELECT at, date, duration_ms, started_at, tenant FROM runs \
             WHERE status <> 'running' ORDER BY at LIMIT 1",
        )
        .await
        .unwrap();
    let row = &r.rows[0];
    let at = row[0].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    assert!(at.ends_with('Z'), "{at}");
    assert_eq!(row[1].as_str().unwrap(), &at[..10]);
    assert!(row[2].is_i64());
    let csv = r.to_csv();
    assert!(
        csv.starts_with("at,date,duration_ms,started_at,tenant\r\n"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 2);
    let table = r.to_table();
    assert!(
        table.contains("duration_ms") && table.contains(at),
        "{table}"
    );
    println!("{table}");
    let r = a
        .query(&Scope::Platform, "SELECT NULL AS n, 1.5 AS f, 'a,\"b' AS s")
        .await
        .unwrap();
    assert_eq!(
        r.rows[0],
        vec![serde_json::Value::Null, 1.5.into(), "a,\"b".into()]
    );
    assert_eq!(r.to_csv(), "n,f,s\r\n,1.5,\"a,\"\"b\"\r\n");
}
