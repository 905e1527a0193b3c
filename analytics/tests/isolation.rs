//! A tenant-scoped query sees only its tenant's rows whatever SQL it tries, or is
//! refused with a message that names what was refused; the platform scope sees all.
#![allow(clippy::unwrap_used)]

mod common;

use aiq_analytics::{AnalyticsError, QueryResult, Scope};
use aiq_sql::layout::{Table, Tier, tenant_dir};
use aiq_topics::TenantId;
use common::*;
use serde_json::Value;

fn acme() -> Scope {
    Scope::Tenant(TenantId::new("acme").unwrap())
}

fn column(r: &QueryResult, i: usize) -> Vec<Value> {
    r.rows.iter().map(|row| row[i].clone()).collect()
}

fn count(r: &QueryResult) -> u64 {
    r.rows[0][0].as_u64().unwrap()
}

/// The message with the temporary folder replaced, for snapshots.
fn redact(h: &History, s: &str) -> String {
    let root = h.dir.path().display().to_string();
    // Plans print file paths without their leading slash.
    s.replace(&root, "[root]")
        .replace(root.trim_start_matches('/'), "[root]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_of_every_shape_see_only_the_tenants_rows() {
    let h = History::build(150);
    let a = h.analytics();
    let runs_a = h.runs(Some("acme")).count() as u64;
    let steps_a = h.steps(Some("acme")).count() as u64;
    assert!(runs_a > 0 && runs_a < h.runs(None).count() as u64);

    let only_acme = |r: &QueryResult, cols: &[usize]| {
        assert!(!r.rows.is_empty());
        for &c in cols {
            assert!(column(r, c).iter().all(|v| v == "acme"), "{:?}", r.rows);
        }
    };

    let r = a
        .query(&acme(), "SELECT DISTINCT tenant FROM runs")
        .await
        .unwrap();
    assert_eq!(column(&r, 0), vec![Value::from("acme")]);

    let r = a.query(&acme(), "SELECT count(*) FROM runs").await.unwrap();
    assert_eq!(count(&r), runs_a);

    // Asking for another tenant by name finds nothing: its rows are not in the table.
    let r = a
        .query(
            &acme(),
            "SELECT count(*) FROM runs WHERE tenant = 'globex' OR tenant <> 'acme'",
        )
        .await
        .unwrap();
    assert_eq!(count(&r), 0);

    let r = a
        .query(
            &acme(),
            "SELECT count(*) FROM steps WHERE run_id IN (SELECT run_id FROM runs WHERE tenant <> 'acme')",
        )
        .await
        .unwrap();
    assert_eq!(count(&r), 0);

    let r = a
        .query(
            &acme(),
            "SELECT tenant, count(*) FROM (SELECT tenant, run_id FROM runs UNION ALL \
             SELECT tenant, run_id FROM steps) AS u GROUP BY tenant",
        )
        .await
        .unwrap();
    only_acme(&r, &[0]);
    assert_eq!(r.rows[0][1].as_u64().unwrap(), runs_a + steps_a);

    let r = a
        .query(
            &acme(),
            "SELECT r.tenant, s.tenant, count(*) FROM runs r JOIN steps s ON r.run_id = s.run_id \
             GROUP BY r.tenant, s.tenant",
        )
        .await
        .unwrap();
    only_acme(&r, &[0, 1]);

    let r = a
        .query(
            &acme(),
            "WITH s AS (SELECT * FROM steps), r AS (SELECT * FROM runs) \
             SELECT DISTINCT s.tenant, r.tenant FROM s CROSS JOIN r",
        )
        .await
        .unwrap();
    only_acme(&r, &[0, 1]);
    assert_eq!(r.rows.len(), 1);

    // The platform scope sees every tenant.
    let r = a
        .query(
            &Scope::Platform,
            "SELECT DISTINCT tenant FROM runs ORDER BY tenant",
        )
        .await
        .unwrap();
    assert_eq!(column(&r, 0), TENANTS.map(Value::from).to_vec());
    let r = a
        .query(&Scope::Platform, "SELECT count(*) FROM steps")
        .await
        .unwrap();
    assert_eq!(count(&r), h.steps(None).count() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_files_and_catalogs_are_refused_with_a_message() {
    let h = History::build(20);
    let a = h.analytics();
    // The first file of globex's first day, so that the snapshot is stable.
    let sorted = |dir: std::path::PathBuf| {
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        paths
    };
    let first_day = sorted(tenant_dir(h.dir.path(), Tier::Warm, Table::Runs, "globex"))[0].clone();
    let globex_file = sorted(first_day)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let globex_file = globex_file.display().to_string();
    let globex_dir = tenant_dir(h.dir.path(), Tier::Warm, Table::Runs, "globex")
        .display()
        .to_string();

    let attempts = [
        (
            "create_view",
            "CREATE VIEW v AS SELECT * FROM runs".to_owned(),
        ),
        (
            "create_table",
            "CREATE TABLE t AS SELECT * FROM runs".to_owned(),
        ),
        ("drop_table", "DROP TABLE runs".to_owned()),
        ("insert", "INSERT INTO runs SELECT * FROM runs".to_owned()),
        (
            "create_external_table",
            format!("CREATE EXTERNAL TABLE g STORED AS PARQUET LOCATION '{globex_dir}'"),
        ),
        ("copy", "COPY runs TO '/tmp/aiq-leak.parquet'".to_owned()),
        (
            "set",
            "SET datafusion.execution.target_partitions = 8".to_owned(),
        ),
        ("show_tables", "SHOW TABLES".to_owned()),
        (
            "two_statements",
            "SELECT 1; SELECT count(*) FROM runs".to_owned(),
        ),
        (
            "information_schema",
            "SELECT * FROM information_schema.tables".to_owned(),
        ),
        (
            "read_parquet",
            format!("SELECT * FROM read_parquet('{globex_file}')"),
        ),
        (
            "read_csv",
            "SELECT * FROM read_csv('/etc/passwd')".to_owned(),
        ),
        ("path_etc_passwd", "SELECT * FROM '/etc/passwd'".to_owned()),
        (
            "path_other_tenant",
            format!("SELECT * FROM '{globex_file}'"),
        ),
        (
            "explain_ddl",
            "EXPLAIN CREATE VIEW v AS SELECT 1".to_owned(),
        ),
        ("empty", "  ".to_owned()),
    ];
    let mut messages = String::new();
    for (name, sql) in &attempts {
        let e = a.query(&acme(), sql).await.unwrap_err();
        match (&e, *name) {
            (AnalyticsError::Refused { .. }, _) => {}
            (
                AnalyticsError::Invalid { .. },
                "information_schema" | "read_parquet" | "read_csv" | "path_etc_passwd"
                | "path_other_tenant" | "empty",
            ) => {}
            _ => panic!("{name}: expected a refusal, got {e:?}"),
        }
        messages.push_str(&format!("{name}: {}\n", redact(&h, &e.to_string())));
    }
    insta::assert_snapshot!("refusals", messages);
    // The refused COPY wrote nothing.
    assert!(!std::path::Path::new("/tmp/aiq-leak.parquet").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_scan_is_rooted_in_the_tenants_folder() {
    let h = History::build(20);
    let a = h.analytics();
    let r = a
        .query(
            &acme(),
            "EXPLAIN SELECT count(*) FROM steps WHERE status = 'failed'",
        )
        .await
        .unwrap();
    let plan: String = r
        .rows
        .iter()
        .map(|row| {
            format!(
                "{}:\n{}\n",
                row[0].as_str().unwrap(),
                row[1].as_str().unwrap()
            )
        })
        .collect();
    let plan = redact(&h, &plan);
    assert!(
        plan.contains("[root]/warm/steps/tenant=acme/date="),
        "{plan}"
    );
    assert!(
        !plan.contains("tenant=globex") && !plan.contains("tenant=initech"),
        "{plan}"
    );
    insta::assert_snapshot!("tenant_explain", plan);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_scan_in_azure_lists_only_the_tenants_prefix() {
    let Some(h) = History::build_in_azurite(20) else {
        return;
    };
    let a = h.analytics();
    let r = a
        .query(
            &acme(),
            "EXPLAIN SELECT count(*) FROM steps WHERE status = 'failed'",
        )
        .await
        .unwrap();
    let plan: String = r
        .rows
        .iter()
        .map(|row| format!("{}\n", row[1].as_str().unwrap()))
        .collect();
    // az://<container>/<prefix>: the plan names objects by their path in the container.
    let prefix = h.root.as_str().rsplit('/').next().unwrap();
    assert!(
        plan.contains(&format!("{prefix}/warm/steps/tenant=acme/date=")),
        "{plan}"
    );
    assert!(
        !plan.contains("tenant=globex") && !plan.contains("tenant=initech"),
        "{plan}"
    );
    let r = a
        .query(&acme(), "SELECT count(*) FROM steps")
        .await
        .unwrap();
    assert_eq!(count(&r), h.steps(Some("acme")).count() as u64);
}
