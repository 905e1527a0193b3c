//! The operations listener (`serve.ops_listen`): Prometheus metrics and the health
//! checks, on an address of its own so that the API listener, which may face the
//! internet, shows neither. Every `aiq serve` process runs it, whatever its roles; with
//! the ingest role its `/readyz` is ingest's readiness and `/metrics` holds ingest's
//! metrics too.

use aiq_stage::Health;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue};
use axum::routing::get;
use axum::{Json, Router};

use crate::http::App;
use crate::http::health::{healthz, readyz};

/// The stage's name.
pub const STAGE: &str = "ops";

const TEXT_FORMAT: &str = "text/plain; version=0.0.4";

fn prometheus_text(text: String) -> ([(HeaderName, HeaderValue); 1], String) {
    (
        [(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT))],
        text,
    )
}

/// `/metrics`, `/healthz` and `/readyz`. Without `ingest` (a process of other roles),
/// `/metrics` holds the default registry's metrics and `/readyz` answers 200 once the
/// listener is up (the stages run) unless a stage reports a problem in `health`; then
/// 503 with the problems.
pub fn router(ingest: Option<App>, health: Health) -> Router {
    match ingest {
        Some(app) => Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route(
                "/metrics",
                get(|State(app): State<App>| async move { prometheus_text(app.metrics.render()) }),
            )
            .with_state(app),
        None => Router::new()
            .route("/healthz", get(healthz))
            .route(
                "/readyz",
                get(move || {
                    let problems = health.problems();
                    async move {
                        let status = if problems.is_empty() {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        };
                        (status, Json(serde_json::json!({ "problems": problems })))
                    }
                }),
            )
            .route(
                "/metrics",
                get(|| async { prometheus_text(crate::metrics::render_default()) }),
            ),
    }
}

/// Serves [`router`] on `listener` as the stage "ops" until it is stopped.
pub fn spawn(
    ingest: Option<App>,
    health: Health,
    listener: tokio::net::TcpListener,
) -> aiq_stage::StageHandle {
    aiq_stage::spawn_task(STAGE, move |stop| async move {
        // Handlers turned into routes once, not on every connection.
        axum::serve(listener, router(ingest, health).with_state(()))
            .with_graceful_shutdown(async move { stop.stopped().await })
            .await
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn without_ingest_it_serves_the_process_metrics_and_health() {
        let counter = prometheus::IntCounter::new("aiq_ops_test_total", "test").unwrap();
        let _ = prometheus::register(Box::new(counter.clone()));
        counter.inc();
        let health = aiq_stage::Health::new();
        let r = super::router(None, health.clone());
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        let resp = r.clone().oneshot(get("/metrics")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], super::TEXT_FORMAT);
        let text = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains("aiq_ops_test_total 1"), "{text}");
        for path in ["/healthz", "/readyz"] {
            let resp = r.clone().oneshot(get(path)).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
        }
        let resp = r.clone().oneshot(get("/v1/workflows")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        // A stage's problem makes the process unready, and says why.
        health.fail("sink.history_store", "the store is unreachable");
        let resp = r.clone().oneshot(get("/readyz")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body["problems"]["sink.history_store"],
            "the store is unreachable"
        );
        health.clear("sink.history_store");
        let resp = r.oneshot(get("/readyz")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
