//! The web console: a page and its scripts, compiled into the binary and served by the
//! ingest role at `/` (the API stays under `/v1`).
//!
//! The console holds no server-side logic of its own: its scripts call the same API as
//! every other client, with the credential the user signed in with, so every page is
//! scoped to the signed-in tenant exactly as the API is (another tenant's run is a 404
//! there, and so here). The navigation lives in the URL's fragment (`/#/runs/…`), so
//! the server serves one page and a few files, whatever the view.
//!
//! The files are plain HTML, CSS and JavaScript modules written for this project: no
//! build step, no third-party code and nothing fetched from elsewhere, so the console
//! works without internet. They are embedded with `include_bytes!` from a fixed list
//! (a test checks that the list and the `assets/` folder agree), which keeps the crate
//! free of proc-macros for a dozen files.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file: its path under `assets/` and its bytes.
pub struct Asset {
    pub path: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        /// Every file of the console, by its path under `assets/`.
        pub const ASSETS: &[Asset] = &[$(Asset {
            path: $path,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $path)),
        }),*];
    };
}

assets!(
    "index.html",
    "console.css",
    "js/main.js",
    "js/api.js",
    "js/dom.js",
    "js/graph.js",
    "js/form.js",
    "js/cron.js",
    "js/chart.js",
    "js/pages/signin.js",
    "js/pages/workflows.js",
    "js/pages/workflow.js",
    "js/pages/runs.js",
    "js/pages/run.js",
    "js/pages/dead_letters.js",
    "js/pages/build.js",
    "js/pages/insights.js",
    "js/pages/admin.js",
    "js/pages/editor.js",
);

/// Where the console's files are served from (the page itself is `/`).
pub const PREFIX: &str = "/console/";

/// Scripts and styles only from this origin, no inline script, no framing: the page
/// holds a credential, so nothing else may run beside it.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn serve(path: &str) -> Response {
    let Some(asset) = find(path) else {
        return (StatusCode::NOT_FOUND, "no such console file").into_response();
    };
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static(content_type(path))),
        (CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
        // A new binary may bring new files under the same names: always revalidate.
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ),
        (
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    (headers, asset.bytes).into_response()
}

/// The console's routes: `/` and `/console/{*path}`.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { serve("index.html") }))
        .route(
            "/console/{*path}",
            get(|axum::extract::Path(path): axum::extract::Path<String>| async move {
                serve(&path)
            }),
        )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn files_under(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                files_under(&path, base, out);
            } else {
                let rel = path.strip_prefix(base).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_file_of_the_assets_folder_is_embedded_and_nothing_else() {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        let mut on_disk = Vec::new();
        files_under(&base, &base, &mut on_disk);
        on_disk.sort();
        let mut listed: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
    }

    #[test]
    fn the_page_loads_only_files_that_are_served() {
        let page = std::str::from_utf8(find("index.html").unwrap().bytes).unwrap();
        for part in page.split(['"', '\'']) {
            if let Some(path) = part.strip_prefix(PREFIX) {
                assert!(find(path).is_some(), "{path} is not embedded");
            }
            assert!(!part.starts_with("http"), "an outside address: {part}");
        }
        // Every module a script imports is embedded too.
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            let dir = asset.path.rsplit_once('/').map_or("", |(d, _)| d);
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let target = line.split(['"', '\'']).nth(1).unwrap();
                let resolved = resolve(dir, target);
                assert!(
                    find(&resolved).is_some(),
                    "{} imports {target} ({resolved}), which is not embedded",
                    asset.path
                );
            }
        }
    }

    fn resolve(dir: &str, target: &str) -> String {
        let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
        for seg in target.split('/') {
            match seg {
                "." => {}
                ".." => {
                    parts.pop();
                }
                s => parts.push(s),
            }
        }
        parts.join("/")
    }

    #[tokio::test]
    async fn the_page_and_its_files_are_served_with_their_types_and_a_strict_policy() {
        let app = router();
        let res = app
            .clone()
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(
            res.headers()[CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        let res = app
            .clone()
            .oneshot(
                Request::get("/console/js/main.js")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()[CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let res = app
            .oneshot(
                Request::get("/console/../Cargo.toml")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
    }
}
