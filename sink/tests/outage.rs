//! Cassandra goes away (a proxy in front of it is cut) while events keep coming: the
//! sink commits nothing meanwhile and its lag grows; once the store is back it drains,
//! and every event produced is in the store. `AIQ_SINK_OUTAGE_SECS` sets the outage
//! (default 60).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aiq_sql::{CqlSettings, connect};
use aiq_topics::{Event, RunEvent, RunId, RunStatus, TenantId, WorkflowId};
use chrono::Utc;
use common::proxy::Proxy;
use tokio::sync::Mutex;
use uuid::Uuid;

fn pair(i: u64) -> (RunId, Vec<Event>) {
    let tenant = TenantId::new(["acme", "beta", "gamma", "tshort"][(i % 4) as usize]).unwrap();
    let run = RunId::from_uuid(Uuid::from_u128(0x5eed_0000 + u128::from(i)));
    let now = Utc::now();
    let event = |status, started_at| {
        Event::Run(RunEvent {
            tenant: tenant.clone(),
            run,
            workflow: WorkflowId::new("wf").unwrap(),
            version: 1,
            status,
            at: now,
            input: None,
            output: None,
            error: None,
            started_at,
            source: None,
            scheduled_at: None,
        })
    };
    (
        run,
        vec![
            event(RunStatus::Running, None),
            event(RunStatus::Succeeded, Some(now)),
        ],
    )
}

fn total(m: &BTreeMap<(String, i32), i64>) -> i64 {
    m.values().sum()
}

fn lag(ends: &BTreeMap<(String, i32), i64>, committed: &BTreeMap<(String, i32), i64>) -> i64 {
    ends.iter()
        .map(|(tp, end)| end - committed.get(tp).copied().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_holds_the_offsets_and_loses_nothing() {
    let Some(env) = common::env("sinkoutage", 3).await else {
        return;
    };
    let env = Arc::new(env);
    let outage = Duration::from_secs(
        std::env::var("AIQ_SINK_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let proxy = Proxy::start(&env.cql.contact_points);
    let proxied = CqlSettings {
        contact_points: proxy.addr().to_string(),
        ..env.cql.clone()
    };
    let session = Arc::new(connect(&proxied).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let sink = env
        .start_with(env.settings("sink", dir.path()), session, &registry)
        .await;

    // Events keep coming for the whole test.
    let produced: Arc<Mutex<Vec<RunId>>> = Arc::default();
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let (env, produced, producing) = (
            Arc::clone(&env),
            Arc::clone(&produced),
            Arc::clone(&producing),
        );
        tokio::spawn(async move {
            let mut i = 0;
            while producing.load(Ordering::Relaxed) {
                let (run, events) = pair(i);
                env.events(&events).await;
                produced.lock().await.push(run);
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // Before: the sink keeps up.
    let clock = Instant::now();
    loop {
        let c = env.committed("sink").await;
        if total(&c) >= 100 {
            break;
        }
        assert!(
            clock.elapsed() < Duration::from_secs(60),
            "sink never committed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    proxy.cut();
    // A batch written just before the cut may still commit.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = env.committed("sink").await;
    let lag_at_cut = lag(&env.ends().await, &held);
    println!("cut: committed {} records, lag {lag_at_cut}", total(&held));
    let cut_at = Instant::now();
    let mut last_lag = lag_at_cut;
    let mut last_metric = 0;
    while cut_at.elapsed() < outage {
        tokio::time::sleep(Duration::from_secs(5).min(outage)).await;
        let committed = env.committed("sink").await;
        let ends = env.ends().await;
        let now_lag = lag(&ends, &committed);
        let metric: i64 = registry
            .gather()
            .iter()
            .filter(|f| f.name() == aiq_sink::metrics::CONSUMER_LAG)
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| m.get_gauge().get_value() as i64)
            })
            .sum();
        println!(
            "outage +{:>3}s: committed {} (held {}), lag {now_lag}, aiq_sink_consumer_lag {metric}",
            cut_at.elapsed().as_secs(),
            total(&committed),
            total(&held)
        );
        assert_eq!(committed, held, "an offset moved while the store was down");
        assert!(now_lag >= last_lag, "lag shrank while the store was down");
        last_lag = now_lag;
        last_metric = metric;
    }
    assert!(last_lag > lag_at_cut, "lag did not grow during the outage");
    // Sampled beside the loop, which is retrying the store meanwhile.
    assert!(
        last_metric > 0,
        "aiq_sink_consumer_lag did not show the lag during the outage"
    );
    assert!(!sink.is_finished(), "the sink gave up during the outage");
    let (refused, accepted) = proxy.counts();
    println!("proxy: {refused} connections refused during the outage, {accepted} accepted");

    proxy.restore();
    let restored = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    producing.store(false, Ordering::Relaxed);
    producer.await.unwrap();
    let took = env.wait_drained("sink", Duration::from_secs(300)).await;
    println!(
        "drained {:?} after the restore (lag before it: {last_lag})",
        restored.elapsed().max(took)
    );
    sink.shutdown().await.unwrap();

    let produced = produced.lock().await.clone();
    let rows: Vec<(Uuid, Option<String>)> = env
        .select(
            format!("SELECT run_id, status FROM {}.runs", env.cql.keyspace),
            (),
        )
        .await;
    let succeeded: HashSet<Uuid> = rows
        .iter()
        .filter(|r| r.1.as_deref() == Some("succeeded"))
        .map(|r| r.0)
        .collect();
    let missing: Vec<_> = produced
        .iter()
        .filter(|r| !succeeded.contains(&r.as_uuid()))
        .collect();
    println!("{} runs produced, {} stored", produced.len(), rows.len());
    assert!(
        missing.is_empty(),
        "{} runs missing: {missing:?}",
        missing.len()
    );
    assert_eq!(rows.len(), produced.len());
    let by_day = env.rows("SELECT run_id FROM {ks}.runs_by_day").await;
    assert_eq!(by_day.len(), produced.len());
}
