//! Every query sees the history as it is when the query starts: files the sink wrote or
//! replaced after an earlier query are read, never a listing an earlier query cached.
#![allow(clippy::unwrap_used)]

mod common;

use aiq_analytics::Scope;
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
