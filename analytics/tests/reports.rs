//! Every ready report, in tenant and platform scope, against figures computed from the
//! same events in plain Rust.
#![allow(clippy::unwrap_used)]

mod common;

use aiq_analytics::{REPORTS, Scope};
use aiq_topics::TenantId;
use common::*;

fn expected(h: &History, report: &str, tenant: Option<&str>) -> (usize, Expected) {
    match report {
        "workflow_success" => (2, expected_workflow_success(h, tenant)),
        "failing_steps" => (3, expected_failing_steps(h, tenant)),
        "runs_per_hour" => (2, expected_runs_per_hour(h, tenant)),
        "cron_schedule_lag" => (2, expected_cron_schedule_lag(h, tenant)),
        "cost_per_tenant" => (1, expected_cost_per_tenant(h, tenant)),
        other => panic!("no expectation for report {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_report_matches_the_figures_of_its_events_in_both_scopes() {
    every_report_matches(History::build(400)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_report_matches_on_azure_blob_storage_too() {
    let Some(h) = History::build_in_azurite(400) else {
        return;
    };
    every_report_matches(h).await;
}

async fn every_report_matches(h: History) {
    let analytics = h.analytics();
    assert_eq!(REPORTS.len(), 5);
    for report in REPORTS {
        let platform = analytics
            .report(&Scope::Platform, report.name)
            .await
            .unwrap();
        let (keys, want) = expected(&h, report.name, None);
        println!(
            "{} platform: {} rows in {} ms",
            report.name,
            platform.rows.len(),
            platform.elapsed_ms
        );
        assert!(!platform.truncated);
        assert_figures(report.name, &actual(&platform, keys), &want);

        for t in TENANTS {
            let scope = Scope::Tenant(TenantId::new(t).unwrap());
            let result = analytics.report(&scope, report.name).await.unwrap();
            let (keys, want) = expected(&h, report.name, Some(t));
            assert_figures(report.name, &actual(&result, keys), &want);
            let tenant_col = result.column("tenant").unwrap();
            assert!(result.rows.iter().all(|r| r[tenant_col] == t));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_columns_are_the_documented_ones() {
    let h = History::build(50);
    let analytics = h.analytics();
    let names = |r: &aiq_analytics::QueryResult| {
        r.columns
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
            .join(",")
    };
    let columns = [
        (
            "workflow_success",
            "tenant,workflow,runs_finished,succeeded,success_rate,p50_ms,p95_ms,p99_ms",
        ),
        (
            "failing_steps",
            "tenant,connector,error_class,failures,runs_affected",
        ),
        ("runs_per_hour", "tenant,hour,runs_started"),
        (
            "cron_schedule_lag",
            "tenant,workflow,cron_runs,avg_lag_ms,p95_lag_ms,max_lag_ms",
        ),
        (
            "cost_per_tenant",
            "tenant,step_seconds,output_bytes,task_attempts",
        ),
    ];
    for (name, want) in columns {
        let r = analytics.report(&Scope::Platform, name).await.unwrap();
        assert_eq!(names(&r), want, "{name}");
        let sql = aiq_analytics::REPORTS
            .iter()
            .find(|r| r.name == name)
            .unwrap()
            .sql;
        assert!(
            sql.starts_with(&format!("-- {name}:")),
            "{name} starts with its header"
        );
        assert!(sql.contains("-- Columns:"), "{name} documents its columns");
    }
}
