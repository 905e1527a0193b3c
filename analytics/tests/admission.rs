//! Queries cannot starve the process: beyond the per-tenant and per-process limits they
//! are refused at once, a dropped query gives its slot back, and queries execute on the
//! SQL runtime's own threads (at a lower priority), not on the caller's runtime.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use aiq_analytics::{Analytics, AnalyticsError, AnalyticsSettings, QueryLimit, Scope};
use aiq_topics::TenantId;

/// A query that keeps both SQL threads busy until its timeout.
const HEAVY: &str = "SELECT count(*) FROM generate_series(1, 1000000000) a \
                     CROSS JOIN generate_series(1, 1000000000) b";

fn tenant(s: &str) -> Scope {
    Scope::Tenant(TenantId::new(s).unwrap())
}

fn engine(timeout_ms: u64) -> Analytics {
    let dir = std::env::temp_dir().join("aiq-analytics-admission-none");
    Analytics::new(AnalyticsSettings {
        root: dir.into(),
        timeout_ms,
        max_queries: 3,
        max_queries_per_tenant: 2,
        ..AnalyticsSettings::default()
    })
    .unwrap()
}

async fn until_running(a: &Analytics, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.running_queries() != n {
        assert!(Instant::now() < deadline, "{} running", a.running_queries());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_beyond_the_tenant_and_process_limits_are_refused_until_a_slot_frees() {
    let a = engine(60_000);
    let heavy = |scope: Scope| {
        let a = a.clone();
        tokio::spawn(async move { a.query(&scope, HEAVY).await })
    };
    let a1 = heavy(tenant("acme"));
    let a2 = heavy(tenant("acme"));
    until_running(&a, 2).await;
    let e = a.query(&tenant("acme"), "SELECT 1").await.unwrap_err();
    assert!(
        matches!(
            e,
            AnalyticsError::Busy {
                limit: QueryLimit::Tenant,
                max: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "2 queries already run for tenant acme, the most \
         analytics.max_queries_per_tenant allows; try again later"
    );
    let b1 = heavy(tenant("globex"));
    until_running(&a, 3).await;
    let e = a.query(&Scope::Platform, "SELECT 1").await.unwrap_err();
    assert!(
        matches!(
            e,
            AnalyticsError::Busy {
                limit: QueryLimit::Process,
                max: 3,
                ..
            }
        ),
        "{e:?}"
    );
    // An abandoned query stops and frees its slot.
    a1.abort();
    until_running(&a, 2).await;
    let r = a.query(&tenant("acme"), "SELECT 1 AS one").await.unwrap();
    assert_eq!(r.rows[0][0], 1);
    a2.abort();
    b1.abort();
    until_running(&a, 0).await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "current_thread")]
async fn queries_execute_on_the_sql_threads_at_a_lower_priority() {
    let a = engine(1_500);
    let cpu_by = |sql: bool| {
        aiq_testkit::threads_of(None)
            .into_iter()
            .filter(|(name, ..)| (name == aiq_analytics::THREAD_NAME) == sql)
            .map(|(_, cpu, _)| cpu)
            .sum::<u64>()
    };
    // At nice 10 the SQL threads get little of a machine that is busy at nice 0 (on CI,
    // the services and other tests), so queries run, each stopped at its 1.5 s timeout,
    // until the SQL threads have used 50 ticks (0.5 s of CPU), within a budget.
    let (mut sql, mut other) = (0, 0);
    let started = std::time::Instant::now();
    while sql < 50 && started.elapsed() < std::time::Duration::from_secs(60) {
        let (sql0, other0) = (cpu_by(true), cpu_by(false));
        let e = a.query(&tenant("acme"), HEAVY).await.unwrap_err();
        assert!(matches!(e, AnalyticsError::Timeout { .. }), "{e:?}");
        // Saturating: a thread that ended between the two readings takes its ticks along.
        sql += cpu_by(true).saturating_sub(sql0);
        other += cpu_by(false).saturating_sub(other0);
    }
    println!(
        "CPU ticks during the queries ({:.1} s): SQL threads {sql}, every other thread {other}",
        started.elapsed().as_secs_f64()
    );
    assert!(sql >= 50, "the SQL threads hardly ran: {sql}");
    // The caller's thread only waited.
    assert!(
        other * 10 <= sql,
        "other threads did the work: {other} vs {sql}"
    );
    let sql_threads: Vec<_> = aiq_testkit::threads_of(None)
        .into_iter()
        .filter(|(name, ..)| name == aiq_analytics::THREAD_NAME)
        .collect();
    assert!(sql_threads.len() >= 2, "{sql_threads:?}");
    for (_, _, nice) in &sql_threads {
        assert_eq!(*nice, 10, "{sql_threads:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_pool_bounds_a_query_and_gets_its_memory_back() {
    let dir = std::env::temp_dir().join("aiq-analytics-admission-none");
    let a = Analytics::new(AnalyticsSettings {
        root: dir.into(),
        memory_limit_bytes: 4 * 1024 * 1024,
        memory_pool_bytes: 4 * 1024 * 1024,
        ..AnalyticsSettings::default()
    })
    .unwrap();
    let e = a
        .query(
            &Scope::Platform,
            "SELECT count(DISTINCT value) FROM generate_series(1, 20000000)",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, AnalyticsError::ResourcesExhausted { .. }),
        "{e:?}"
    );
    // A failed query gives its memory back (its other partitions stop a moment later).
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.memory_reserved() != 0 {
        assert!(
            Instant::now() < deadline,
            "{} bytes held",
            a.memory_reserved()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bad = AnalyticsSettings {
        memory_pool_bytes: 2 * 1024 * 1024,
        memory_limit_bytes: 4 * 1024 * 1024,
        ..AnalyticsSettings::default()
    };
    let e = Analytics::new(bad).unwrap_err().to_string();
    assert!(e.contains("memory_pool_bytes"), "{e}");
}
