//! The flaky peer of the `chaos-flaky` workflow: `GET /flaky/{key}` answers 503 the first
//! time it sees `key` (the run id) and 200 every time after, so each run's call fails
//! retryably once and then succeeds.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;

#[derive(Default)]
pub struct Flaky {
    seen: Mutex<HashSet<String>>,
    pub refused: AtomicU64,
    pub answered: AtomicU64,
}

impl Flaky {
    /// The status for one call with `key`.
    pub fn answer(&self, key: &str) -> StatusCode {
        let first = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_owned());
        if first {
            self.refused.fetch_add(1, Ordering::Relaxed);
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            self.answered.fetch_add(1, Ordering::Relaxed);
            StatusCode::OK
        }
    }
}

/// Serves on 127.0.0.1 on a free port until the runtime ends; returns the port.
pub async fn serve(flaky: Arc<Flaky>) -> std::io::Result<u16> {
    let app = Router::new()
        .route(
            "/flaky/{key}",
            get(
                |State(f): State<Arc<Flaky>>, Path(key): Path<String>| async move {
                    let status = f.answer(&key);
                    (
                        status,
                        axum::Json(serde_json::json!({ "ok": status == StatusCode::OK })),
                    )
                },
            ),
        )
        .with_state(flaky);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(port)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_first_call_per_key_is_refused() {
        let f = Flaky::default();
        assert_eq!(f.answer("a"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(f.answer("a"), StatusCode::OK);
        assert_eq!(f.answer("a"), StatusCode::OK);
        assert_eq!(f.answer("b"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(f.refused.load(Ordering::Relaxed), 2);
        assert_eq!(f.answered.load(Ordering::Relaxed), 2);
    }
}
