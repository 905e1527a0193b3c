//! The sink against a history store it cannot reach (Azurite's container through an
//! address where nothing listens): it commits nothing, reports why to the process's
//! readiness and keeps its lag; restarted with the right address, it writes every event
//! to Azurite and clears the problem. Needs Kafka, Cassandra and Azurite.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aiq_history_store::{HistoryFiles, HistoryRoot, ObjectPath};
use aiq_topics::{Event, RunEvent, RunId, RunStatus, TenantId, WorkflowId};
use chrono::Utc;
use uuid::Uuid;

const RUNS: u64 = 40;

fn run_events(i: u64) -> Vec<Event> {
    let tenant = TenantId::new(["acme", "beta"][(i % 2) as usize]).unwrap();
    let run = RunId::from_uuid(Uuid::from_u128(0xab5e_0000 + u128::from(i)));
    let now = Utc::now();
    [RunStatus::Running, RunStatus::Succeeded]
        .into_iter()
        .map(|status| {
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
                started_at: None,
                source: None,
                scheduled_at: None,
            })
        })
        .collect()
}

fn unreachable() -> BTreeMap<String, String> {
    [
        ("azure_storage_use_emulator", "false"),
        ("azure_storage_account_name", "devstoreaccount1"),
        (
            "azure_storage_account_key",
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
        ),
        ("azure_storage_endpoint", "http://127.0.0.1:9/devstoreaccount1"),
        ("allow_http", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Rows of every Parquet object under the root.
fn parquet_rows(files: &HistoryFiles) -> i64 {
    files
        .walk(&ObjectPath::from(""))
        .unwrap()
        .into_iter()
        .map(|p| {
            let bytes = files.get(&p).unwrap();
            let reader = parquet::file::reader::SerializedFileReader::new(bytes).unwrap();
            parquet::file::reader::FileReader::metadata(&reader)
                .file_metadata()
                .num_rows()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_history_store_holds_the_offsets_and_says_why() {
    let Some(root) = aiq_testkit::azurite_root("sinkstore") else {
        return;
    };
    let Some(env) = common::env("sinkstore", 2).await else {
        return;
    };
    let root = HistoryRoot::new(root);
    let mut settings = env.settings("sink", std::path::Path::new("unused"));
    settings.parquet.root = root.clone();
    let good = settings.clone();
    settings.parquet.store_options = unreachable();

    for i in 0..RUNS {
        env.events(&run_events(i)).await;
    }
    let health = aiq_stage::Health::new();
    let sink = env
        .start_reporting(
            settings,
            env.session.clone(),
            &prometheus::Registry::new(),
            health.clone(),
        )
        .await;
    let clock = Instant::now();
    let why = loop {
        if let Some(why) = health.problems().remove(aiq_sink::HISTORY_STORE) {
            break why;
        }
        assert!(
            clock.elapsed() < Duration::from_secs(60),
            "no problem reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("reported after {:?}: {why}", clock.elapsed());
    assert!(why.contains("cannot write the Parquet history"), "{why}");
    assert!(why.contains("127.0.0.1:9"), "{why}");
    // A few more seconds: still nothing committed, still unready.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.committed("sink").await.values().sum::<i64>(), 0);
    assert!(health.problems().contains_key(aiq_sink::HISTORY_STORE));
    let files = HistoryFiles::new(root.parse(&BTreeMap::new()).unwrap());
    assert_eq!(parquet_rows(&files), 0, "nothing reached the store");
    sink.stop();
    sink.finished().await.unwrap();

    // The same group with the right address: every event, once, and no problem left.
    let health = aiq_stage::Health::new();
    let sink = env
        .start_reporting(
            good,
            env.session.clone(),
            &prometheus::Registry::new(),
            health.clone(),
        )
        .await;
    env.wait_drained("sink", Duration::from_secs(60)).await;
    assert_eq!(parquet_rows(&files), (RUNS * 2) as i64);
    assert!(health.problems().is_empty(), "{:?}", health.problems());
    sink.stop();
    sink.finished().await.unwrap();
}
