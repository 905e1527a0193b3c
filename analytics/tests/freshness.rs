//! Every query sees the history as it is when the query starts: files the sink wrote or
//! replaced after an earlier query are read, never a listing an earlier query cached; a
//! file replaced while a query reads it is never read half old, half new.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aiq_analytics::Scope;
use aiq_history_store::HistoryRoot;
use aiq_sink::parquet::{ParquetSettings, ParquetWriter};
use aiq_topics::Event;
use common::*;

async fn runs(a: &aiq_analytics::Analytics) -> u64 {
    let r = a
        .query(&Scope::Platform, "SELECT count(*) FROM runs")
        .await
        .unwrap();
    r.rows[0][0].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_sees_files_written_after_the_previous_query() {
    sees_new_files(History::build(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_sees_objects_written_after_the_previous_query_in_azure() {
    let Some(h) = History::build_in_azurite(10) else {
        return;
    };
    sees_new_files(h).await;
}

async fn sees_new_files(h: History) {
    let a = h.analytics();
    let before = runs(&a).await;
    assert_eq!(before, h.runs(None).count() as u64);

    // A tenant whose folder did not exist at the first query.
    let mut rng = Rng::new(7);
    let more = tenant_events("newco", 5, &mut rng);
    write_history(&h.root, &more);
    assert!(
        runs(&a).await > before,
        "the second query read the first one's listing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_read_whole_files_while_the_sink_rewrites_them() {
    let dir = tempfile::tempdir().unwrap();
    queries_during_rewrites(HistoryRoot::from(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_read_whole_objects_while_the_sink_rewrites_them_in_azure() {
    let Some(root) = aiq_testkit::azurite_root("rewrites") else {
        return;
    };
    queries_during_rewrites(HistoryRoot::new(root)).await;
}

/// The sink's writer adds a few events at a time to one partition's open window and
/// flushes after each, which rewrites the window's files whole, each time longer. Queries
/// run meanwhile, back to back. A query that listed a file before a rewrite and read it
/// after would decode the new bytes at the old size (a corrupt footer or page) unless it
/// notices and runs again; every query must answer, and what it counts only grows.
async fn queries_during_rewrites(root: HistoryRoot) {
    let events = tenant_events("busy", 300, &mut Rng::new(11));
    let total = events.iter().filter(|e| matches!(e, Event::Run(_))).count() as u64;
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = Arc::clone(&writing);
        let root = root.clone();
        std::thread::spawn(move || {
            let mut w = ParquetWriter::new(&ParquetSettings {
                root,
                // One open window for the whole test: every flush rewrites its files.
                window_offsets: 1_000_000,
                ..Default::default()
            })
            .unwrap();
            let mut flushes = 0;
            for (n, chunk) in events.chunks(6).enumerate() {
                for (i, e) in chunk.iter().enumerate() {
                    w.add(0, (n * 6 + i) as i64, e);
                }
                w.flush().unwrap();
                flushes += 1;
            }
            writing.store(false, Ordering::SeqCst);
            flushes
        })
    };
    let registry = prometheus::Registry::new();
    let a = aiq_analytics::Analytics::with_registry(
        aiq_analytics::AnalyticsSettings {
            root,
            ..Default::default()
        },
        &registry,
    )
    .unwrap();
    let (mut last, mut during) = (0, 0);
    loop {
        let still_writing = writing.load(Ordering::SeqCst);
        let n = runs(&a).await;
        assert!(
            n >= last,
            "a query counted {n} runs after one counted {last}"
        );
        assert!(n <= total, "a query counted {n} runs of {total}");
        last = n;
        if !still_writing {
            break;
        }
        during += 1;
    }
    let flushes = writer.join().unwrap();
    assert_eq!(last, total, "the last query, after the last flush");
    assert!(
        during >= 10,
        "only {during} queries ran during the {flushes} rewrites: the test proves nothing"
    );
    // Some query met a rewrite (without the pins such a query fails on a corrupt footer).
    let reruns = registry
        .gather()
        .iter()
        .find(|f| f.name() == "aiq_analytics_query_reruns_total")
        .map_or(0.0, |f| f.get_metric()[0].get_counter().get_value());
    assert!(
        reruns >= 1.0,
        "no query of {during} met one of the {flushes} rewrites: the test proves nothing"
    );
}
