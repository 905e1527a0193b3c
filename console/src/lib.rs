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
    "js/oidc.js",
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
/// holds a credential, so nothing else may run beside it. Requests go to this origin, and
/// to the OpenID provider's when people sign in through one (its discovery document and
/// token endpoint are fetched by the page).
fn policy(provider_origin: Option<&str>) -> String {
    let connect = match provider_origin {
        Some(o) => format!("'self' {o}"),
        None => "'self'".to_owned(),
    };
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
}

/// Signing people in through the deployment's OpenID provider: the authorization code
/// flow with PKCE, run by the page as a public client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignIn {
    /// The provider's issuer URL (its discovery document is under it).
    pub issuer: String,
    /// The console's client id at the provider (a public client; no secret).
    pub client_id: String,
    /// The scopes asked for, space-separated.
    pub scope: String,
    /// The resource indicator (RFC 8707) the access token is for, if the provider wants one.
    pub resource: Option<String>,
}

/// `scheme://host[:port]` of an http(s) URL whose host part holds only characters a
/// host may hold; `None` for anything else, so nothing odd reaches the policy header.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_ok = !authority.is_empty()
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    host_ok.then(|| format!("{scheme}://{authority}"))
}

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

fn serve(path: &str, policy: &HeaderValue) -> Response {
    let Some(asset) = find(path) else {
        return (StatusCode::NOT_FOUND, "no such console file").into_response();
    };
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static(content_type(path))),
        (CONTENT_SECURITY_POLICY, policy.clone()),
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

/// The console's routes: `/`, `/console/{*path}`, and `/console/sign-in.json`, which
/// tells the page how people sign in through the OpenID provider (`null`: with an API
/// key or a pasted token only). An issuer that is no http(s) URL is not offered.
pub fn router(sign_in: Option<SignIn>) -> Router {
    let sign_in = sign_in.and_then(|s| origin(&s.issuer).map(|o| (s, o)));
    let policy = HeaderValue::from_str(&policy(sign_in.as_ref().map(|(_, o)| o.as_str())))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"));
    let config = match &sign_in {
        Some((s, _)) => serde_json::json!({
            "issuer": s.issuer, "client_id": s.client_id, "scope": s.scope, "resource": s.resource,
        }),
        None => serde_json::Value::Null,
    }
    .to_string();
    let (root, files) = (policy.clone(), policy);
    Router::new()
        .route("/", get(move || async move { serve("index.html", &root) }))
        .route(
            "/console/sign-in.json",
            get(move || async move {
                (
                    [
                        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                    ],
                    config,
                )
            }),
        )
        .route(
            "/console/{*path}",
            get(
                move |axum::extract::Path(path): axum::extract::Path<String>| async move {
                    serve(&path, &files)
                },
            ),
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
        let app = router(None);
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

    async fn get_text(app: &Router, path: &str) -> (String, String) {
        let res = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let policy = res
            .headers()
            .get(CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (policy, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_configured_provider_is_offered_and_only_its_origin_is_added_to_the_policy() {
        let app = router(None);
        assert_eq!(get_text(&app, "/console/sign-in.json").await.1, "null");
        assert!(get_text(&app, "/").await.0.contains("connect-src 'self';"));

        let app = router(Some(SignIn {
            issuer: "https://idp.example.com:8443/realms/aiq".into(),
            client_id: "aiq-console".into(),
            scope: "openid api".into(),
            resource: Some("urn:aiq:api".into()),
        }));
        let config: serde_json::Value =
            serde_json::from_str(&get_text(&app, "/console/sign-in.json").await.1).unwrap();
        assert_eq!(config["issuer"], "https://idp.example.com:8443/realms/aiq");
        assert_eq!(config["client_id"], "aiq-console");
        assert_eq!(config["resource"], "urn:aiq:api");
        let (policy, _) = get_text(&app, "/console/js/main.js").await;
        assert!(
            policy.contains("connect-src 'self' https://idp.example.com:8443;"),
            "{policy}"
        );

        // An issuer that could smuggle anything into the header is not offered at all.
        let app = router(Some(SignIn {
            issuer: "https://idp.example.com; script-src *".into(),
            client_id: "x".into(),
            scope: "openid".into(),
            resource: None,
        }));
        assert_eq!(get_text(&app, "/console/sign-in.json").await.1, "null");
        assert_eq!(origin("ftp://idp.example.com"), None);
        assert_eq!(
            origin("http://127.0.0.1:4000").as_deref(),
            Some("http://127.0.0.1:4000")
        );
    }
}
