//! The ingest stage on a real socket: `spawn` serves the App until stopped, then ends
//! cleanly and stops listening, leaving the definitions follower it reads running.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use aiq_testkit::{CQL, KAFKA, require_service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status line and body of `GET path` on `addr`, over a connection of its own.
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: ingest\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stage_serves_until_stopped() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let api = support::api(brokers, cql, "stage").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let stage = aiq_ingest::spawn(api.ingest.app.clone(), listener);
    assert_eq!(stage.name(), "ingest");
    let (status, body) = get(addr, "/healthz").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.contains("\"ok\""), "{body}");

    // Ready once the definitions follower has read its topic.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(addr, "/readyz").await;
        if status == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready within 30 s: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    tokio::time::timeout(Duration::from_secs(10), stage.shutdown())
        .await
        .expect("stops within 10 s")
        .unwrap();
    assert!(stage.is_finished());
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a stopped stage no longer listens"
    );
    assert!(
        !api.definitions.handle().is_finished(),
        "ingest does not own the definitions follower"
    );
}

/// Metrics are served on the operations listener, never on the API listener; both
/// answer the health checks, and the operations listener serves nothing of the API.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_on_the_operations_listener_only() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let api = support::api(brokers, cql, "ops").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = listener.local_addr().unwrap();
    let ingest = aiq_ingest::spawn(api.ingest.app.clone(), listener);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops_addr = listener.local_addr().unwrap();
    let ops = aiq_ingest::http::ops::spawn(
        Some(api.ingest.app.clone()),
        api.ingest.app.health.clone(),
        listener,
    );
    assert_eq!(ops.name(), "ops");

    api.ingest
        .app
        .metrics
        .triggers
        .with_label_values(&["acme", "accepted"])
        .inc();
    let (status, body) = get(ops_addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(
        body.contains("aiq_ingest_triggers_total{outcome=\"accepted\",tenant=\"acme\"} 1"),
        "{body}"
    );
    let (status, _) = get(api_addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, body) = get(ops_addr, "/healthz").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    // Ingest's readiness (Kafka, definitions), as on the API listener.
    let (_, body) = get(ops_addr, "/readyz").await;
    assert!(body.contains("\"definitions_loaded\""), "{body}");
    let (status, _) = get(ops_addr, "/openapi.json").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (_, doc) = get(api_addr, "/openapi.json").await;
    assert!(
        !doc.contains("\"/metrics\""),
        "the API document lists no /metrics"
    );

    for stage in [ops, ingest] {
        tokio::time::timeout(Duration::from_secs(10), stage.shutdown())
            .await
            .expect("stops within 10 s")
            .unwrap();
    }
}
