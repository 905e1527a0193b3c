//! The http and soap connectors against real HTTP servers on loopback (axum): the happy
//! paths, the error classes, the step timeout, the circuit breaker per tenant and host,
//! the outbound guard (on addresses, names and redirects) and secret scrubbing.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aiq_connectors::{
    BreakerSettings, BreakerState, ConnectorSettings, Connectors, OutboundSettings,
};
use aiq_topics::{ErrorClass, TaskMessage, TaskOutcome, TenantId};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{any, get, post};
use serde_json::{Value, json};

const TOKEN: &str = "tok-SUPER-secret-4711";
const PASSWORD: &str = "pw-very-secret-0815";

/// Attempt 3, so the test can see the attempt in the Idempotency-Key.
fn task(tenant: &str, connector: &str, args: Value, timeout_ms: u64) -> TaskMessage {
    TaskMessage {
        attempt: 3,
        ..common::task(tenant, connector, args, timeout_ms)
    }
}

fn connectors(allow: &[&str], breaker: BreakerSettings) -> Connectors {
    Connectors::builtin(
        &ConnectorSettings {
            outbound: OutboundSettings {
                allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            },
            breaker,
            max_response_bytes: 64 * 1024,
            ..ConnectorSettings::default()
        },
        common::store(&[
            ("acme", "api-token", TOKEN),
            ("acme", "api-password", PASSWORD),
            ("globex", "api-token", TOKEN),
            ("globex", "api-password", PASSWORD),
        ]),
        None,
        &prometheus::Registry::new(),
    )
    .unwrap()
}

#[derive(Clone, Default)]
struct Counters {
    flaky: Arc<AtomicUsize>,
}

/// Echoes what it got: method, query, the headers that matter, the body.
async fn echo(
    method: axum::http::Method,
    headers: HeaderMap,
    Query(q): Query<std::collections::BTreeMap<String, String>>,
    body: String,
) -> impl IntoResponse {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    axum::Json(json!({
        "method": method.as_str(),
        "query": q,
        "authorization": h("authorization"),
        "x_api_key": h("x-api-key"),
        "idempotency_key": h("idempotency-key"),
        "content_type": h("content-type"),
        "body": body,
    }))
}

async fn soap(headers: HeaderMap, body: String) -> impl IntoResponse {
    let action = headers
        .get("soapaction")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let ns = "http://schemas.xmlsoap.org/soap/envelope/";
    let fault = |code: &str, text: &str| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/xml")],
            format!(
                r#"<s:Envelope xmlns:s="{ns}"><s:Body><s:Fault><faultcode>s:{code}</faultcode><faultstring>{text}</faultstring></s:Fault></s:Body></s:Envelope>"#
            ),
        )
    };
    if action != "\"urn:convert\"" {
        return fault("Client", &format!("unknown SOAPAction {action}"));
    }
    if body.contains("<zip>00000</zip>") {
        return fault("Client", "no such zip");
    }
    if body.contains("<zip>busy</zip>") {
        return fault("Server", "backend busy");
    }
    (
        StatusCode::OK,
        [("content-type", "text/xml")],
        format!(
            r#"<?xml version="1.0"?><s:Envelope xmlns:s="{ns}"><s:Body><m:ConvertResponse xmlns:m="urn:x"><m:city>Springfield</m:city><m:tags><m:t>a</m:t><m:t>b</m:t></m:tags></m:ConvertResponse></s:Body></s:Envelope>"#
        ),
    )
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn app(counters: Counters) -> Router {
    Router::new()
        .route("/echo", any(echo))
        .route(
            "/status/{code}",
            get(
                |axum::extract::Path(code): axum::extract::Path<u16>| async move {
                    (
                        StatusCode::from_u16(code).unwrap(),
                        format!("status {code} body"),
                    )
                },
            ),
        )
        .route(
            "/hang",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route("/big", get(|| async { "x".repeat(100 * 1024) }))
        .route("/loop", any(|| async { Redirect::temporary("/loop") }))
        .route("/see-other", any(|| async { Redirect::to("/echo") }))
        .route(
            "/redirect",
            any(
                |Query(q): Query<std::collections::BTreeMap<String, String>>| async move {
                    Redirect::temporary(q.get("to").map(String::as_str).unwrap_or("/echo"))
                },
            ),
        )
        .route(
            "/flaky",
            get(|State(c): State<Counters>| async move {
                c.flaky.fetch_add(1, Ordering::SeqCst);
                (StatusCode::SERVICE_UNAVAILABLE, "down")
            }),
        )
        .route("/soap", post(soap))
        .with_state(counters)
}

fn ok(o: &TaskOutcome) -> &Value {
    match o {
        TaskOutcome::Ok { output } => output,
        other => panic!("expected success, got {other:?}"),
    }
}

fn err(o: &TaskOutcome, want: ErrorClass, words: &str) {
    match o {
        TaskOutcome::Error { class, message } => {
            assert_eq!(*class, want, "{message}");
            assert!(message.contains(words), "{words:?} not in {message:?}");
            assert!(
                !message.contains(TOKEN) && !message.contains(PASSWORD),
                "{message}"
            );
        }
        other => panic!("expected {want:?} error, got {other:?}"),
    }
}

#[tokio::test]
async fn rest_calls_carry_query_body_auth_and_idempotency_key() {
    let base = serve(app(Counters::default())).await;
    let c = connectors(&["127.0.0.1/32"], BreakerSettings::default());

    let out = c
        .call(&task(
            "acme",
            "http",
            json!({
                "url": format!("{base}/echo"),
                "query": {"q": "a b", "n": 3, "on": true},
                "headers": {"x-trace": "t1"},
                "auth": {"type": "bearer", "secret": "api-token"},
            }),
            5000,
        ))
        .await;
    let o = ok(&out);
    assert_eq!(o["status"], 200);
    assert_eq!(o["body"]["method"], "GET");
    assert_eq!(
        o["body"]["query"],
        json!({"q": "a b", "n": "3", "on": "true"})
    );
    // The server saw the real token; the step output shows it scrubbed.
    assert_eq!(o["body"]["authorization"], "Bearer [redacted]");
    let key = o["body"]["idempotency_key"].as_str().unwrap();
    assert!(key.ends_with("/call/3"), "{key}");
    assert!(!out_text(&out).contains(TOKEN));

    let o = c
        .call(&task(
            "acme",
            "http",
            json!({
                "method": "POST",
                "url": format!("{base}/echo"),
                "json": {"order": 42},
                "auth": {"type": "basic", "username": "svc", "password_secret": "api-password"},
            }),
            5000,
        ))
        .await;
    let o = ok(&o);
    assert_eq!(o["body"]["method"], "POST");
    assert_eq!(o["body"]["body"], r#"{"order":42}"#);
    assert_eq!(o["body"]["content_type"], "application/json");
    assert!(
        o["body"]["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Basic ")
    );

    let o = c
        .call(&task(
            "acme",
            "http",
            json!({
                "method": "PUT",
                "url": format!("{base}/echo"),
                "form": {"a": "1", "b": "x y"},
                "auth": {"type": "api_key", "header": "X-Api-Key", "secret": "api-token"},
            }),
            5000,
        ))
        .await;
    let o = ok(&o);
    assert_eq!(o["body"]["body"], "a=1&b=x+y");
    assert_eq!(o["body"]["x_api_key"], "[redacted]");

    // Statuses map to classes; the message names the call and quotes the body.
    err(
        &c.call(&task(
            "acme",
            "http",
            json!({"url": format!("{base}/status/404")}),
            5000,
        ))
        .await,
        ErrorClass::Fatal,
        "answered 404: status 404 body",
    );
    err(
        &c.call(&task(
            "acme",
            "http",
            json!({"url": format!("{base}/status/429")}),
            5000,
        ))
        .await,
        ErrorClass::Retryable,
        "answered 429",
    );
    err(
        &c.call(&task(
            "acme",
            "http",
            json!({"url": format!("{base}/status/502")}),
            5000,
        ))
        .await,
        ErrorClass::Retryable,
        "answered 502",
    );
    err(
        &c.call(&task(
            "acme",
            "http",
            json!({"url": format!("{base}/big")}),
            5000,
        ))
        .await,
        ErrorClass::Fatal,
        "more than connectors.max_response_bytes",
    );
    // Bad arguments name the field.
    err(
        &c.call(&task(
            "acme",
            "http",
            json!({"url": format!("{base}/echo"), "method": "FETCH"}),
            5000,
        ))
        .await,
        ErrorClass::Fatal,
        "`args.method`: unknown variant `FETCH`",
    );
    err(
        &c.call(&task(
            "acme",
            "http",
            json!({"url": format!("{base}/echo"), "auth": {"type": "bearer", "secret": "nope"}}),
            5000,
        ))
        .await,
        ErrorClass::Fatal,
        "args.auth.secret: secret \"nope\" is not set for this tenant",
    );
    err(
        &c.call(&task(
            "acme",
            "http",
            json!({"url": "ftp://example.com/x"}),
            5000,
        ))
        .await,
        ErrorClass::Fatal,
        "the scheme must be http or https",
    );
    // Nothing listens on port 1 of loopback.
    err(
        &c.call(&task(
            "acme",
            "http",
            json!({"url": "http://127.0.0.1:1/"}),
            5000,
        ))
        .await,
        ErrorClass::Retryable,
        "http connector",
    );
}

fn out_text(o: &TaskOutcome) -> String {
    serde_json::to_string(o).unwrap()
}

#[tokio::test]
async fn a_hanging_endpoint_is_cut_off_at_the_step_timeout() {
    let base = serve(app(Counters::default())).await;
    let c = connectors(&["127.0.0.1/32"], BreakerSettings::default());
    let started = std::time::Instant::now();
    err(
        &c.call(&task(
            "acme",
            "http",
            json!({"url": format!("{base}/hang")}),
            300,
        ))
        .await,
        ErrorClass::Timeout,
        "timeout of 300 ms",
    );
    let took = started.elapsed();
    println!("hanging call returned after {took:?} (step timeout 300 ms)");
    assert!(
        took < Duration::from_secs(10),
        "the timeout did not cut the call off: {took:?}"
    );
}

#[tokio::test]
async fn a_failing_host_opens_its_breaker_for_that_tenant_only() {
    let counters = Counters::default();
    let bad = serve(app(counters.clone())).await;
    let good = serve(app(Counters::default())).await;
    let c = connectors(
        &["127.0.0.1/32"],
        BreakerSettings {
            window: 10,
            min_calls: 5,
            failure_rate: 0.5,
            open_ms: 60_000,
        },
    );
    let flaky = json!({"url": format!("{bad}/flaky")});
    for _ in 0..5 {
        err(
            &c.call(&task("acme", "http", flaky.clone(), 5000)).await,
            ErrorClass::Retryable,
            "answered 503",
        );
    }
    let bad_host = bad.trim_start_matches("http://");
    assert_eq!(
        c.breakers()
            .state(&TenantId::new("acme").unwrap(), bad_host),
        BreakerState::Open
    );
    // acme's next calls to that host are not made at all.
    err(
        &c.call(&task("acme", "http", flaky.clone(), 5000)).await,
        ErrorClass::CircuitOpen,
        "circuit open for",
    );
    assert_eq!(counters.flaky.load(Ordering::SeqCst), 5);
    // acme's calls to another host, and globex's calls to any host, go through.
    ok(&c
        .call(&task(
            "acme",
            "http",
            json!({"url": format!("{good}/echo")}),
            5000,
        ))
        .await);
    ok(&c
        .call(&task(
            "globex",
            "http",
            json!({"url": format!("{good}/echo")}),
            5000,
        ))
        .await);
    err(
        &c.call(&task("globex", "http", flaky.clone(), 5000)).await,
        ErrorClass::Retryable,
        "answered 503",
    );
    assert_eq!(counters.flaky.load(Ordering::SeqCst), 6);
    // A 4xx is the caller's fault: it never opens a breaker.
    for _ in 0..10 {
        err(
            &c.call(&task(
                "globex",
                "http",
                json!({"url": format!("{good}/status/404")}),
                5000,
            ))
            .await,
            ErrorClass::Fatal,
            "404",
        );
    }
    let good_host = good.trim_start_matches("http://");
    assert_eq!(
        c.breakers()
            .state(&TenantId::new("globex").unwrap(), good_host),
        BreakerState::Closed
    );
}

#[tokio::test]
async fn the_outbound_guard_refuses_private_addresses_names_and_redirects_unless_allowed() {
    let base = serve(app(Counters::default())).await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let closed = connectors(&[], BreakerSettings::default());
    for url in [
        format!("{base}/echo"),
        "http://10.0.0.1/".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[::1]:{port}/echo"),
        // A name is judged by what it resolves to.
        format!("http://localhost:{port}/echo"),
    ] {
        err(
            &closed
                .call(&task("acme", "http", json!({"url": url}), 5000))
                .await,
            ErrorClass::Fatal,
            "refused to connect to",
        );
    }
    err(
        &closed.call(&task("acme", "soap", json!({"url": format!("{base}/soap"), "action": "urn:convert", "body": "<zip>1</zip>"}), 5000)).await,
        ErrorClass::Fatal,
        "refused to connect to 127.0.0.1",
    );
    // Allowed: loopback v4. A redirect from there to a refused address is refused.
    let open = connectors(&["127.0.0.1/32"], BreakerSettings::default());
    ok(&open
        .call(&task(
            "acme",
            "http",
            json!({"url": format!("{base}/redirect?to=/echo")}),
            5000,
        ))
        .await);
    for to in [
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[::1]:{port}/echo"),
        "http://10.1.2.3/".to_owned(),
    ] {
        let url = format!("{base}/redirect?to={}", urlencode(&to));
        err(
            &open
                .call(&task("acme", "http", json!({"url": url}), 5000))
                .await,
            ErrorClass::Fatal,
            "refused to connect to",
        );
    }
    // Not following redirects: the 307 itself is the answer, and a fatal one.
    err(
        &open
            .call(&task(
                "acme",
                "http",
                json!({"url": format!("{base}/redirect?to=/echo"), "follow_redirects": false}),
                5000,
            ))
            .await,
        ErrorClass::Fatal,
        "answered 307",
    );
}

/// A credential header (`api_key` auth) stays with the origin it was given for: a
/// redirect to another host gets neither it nor `Authorization`, one on the same origin
/// keeps it, and a 303 after a POST becomes a GET without the body.
#[tokio::test]
async fn a_redirect_to_another_host_never_carries_the_credential_headers() {
    let base = serve(app(Counters::default())).await;
    // Another origin: another port, reached by another name.
    let other = serve(app(Counters::default())).await;
    let other_port = other.rsplit(':').next().unwrap().to_owned();
    let elsewhere = format!("http://localhost:{other_port}/echo");
    let c = connectors(&["127.0.0.1/32", "::1/128"], BreakerSettings::default());
    let call = |url: String, auth: Value| {
        let c = &c;
        async move {
            c.call(&task(
                "acme",
                "http",
                json!({"url": url, "auth": auth, "headers": {"x-trace": "t1"}}),
                5000,
            ))
            .await
        }
    };
    let api_key = json!({"type": "api_key", "header": "X-Api-Key", "secret": "api-token"});
    let bearer = json!({"type": "bearer", "secret": "api-token"});

    // Same origin: the key goes along (scrubbed in the output, so it arrived).
    let o = call(format!("{base}/redirect?to=/echo"), api_key.clone()).await;
    assert_eq!(ok(&o)["body"]["x_api_key"], "[redacted]");

    // Another host: neither the custom header nor a bearer token is forwarded.
    let away = format!("{base}/redirect?to={}", urlencode(&elsewhere));
    let o = call(away.clone(), api_key.clone()).await;
    let body = &ok(&o)["body"];
    assert_eq!(body["x_api_key"], Value::Null, "{body}");
    assert_eq!(body["authorization"], Value::Null, "{body}");
    let o = call(away, bearer).await;
    assert_eq!(ok(&o)["body"]["authorization"], Value::Null);
    // And not when it comes back to the first origin later either.
    let back = format!("{base}/echo");
    let bounce = format!("{other}/redirect?to={}", urlencode(&back));
    let o = call(
        format!("{base}/redirect?to={}", urlencode(&bounce)),
        api_key.clone(),
    )
    .await;
    assert_eq!(ok(&o)["body"]["x_api_key"], Value::Null);
    assert!(!out_text(&o).contains(TOKEN));

    // A redirect loop ends after 10 hops.
    let o = call(format!("{base}/loop"), api_key).await;
    err(&o, ErrorClass::Fatal, "more than 10 redirects");

    // 307 keeps the method and the body; 303 makes a GET without them.
    let post = |url: String| {
        let c = &c;
        async move {
            c.call(&task(
                "acme",
                "http",
                json!({"method": "POST", "url": url, "json": {"order": 42}}),
                5000,
            ))
            .await
        }
    };
    let o = post(format!("{base}/redirect?to=/echo")).await;
    let body = &ok(&o)["body"];
    assert_eq!(
        (body["method"].as_str(), body["body"].as_str()),
        (Some("POST"), Some(r#"{"order":42}"#))
    );
    let o = post(format!("{base}/see-other")).await;
    let body = &ok(&o)["body"];
    assert_eq!(
        (body["method"].as_str(), body["body"].as_str()),
        (Some("GET"), Some(""))
    );
    assert_eq!(body["content_type"], Value::Null);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn soap_calls_send_an_envelope_and_classify_faults() {
    let base = serve(app(Counters::default())).await;
    let c = connectors(&["127.0.0.1/32"], BreakerSettings::default());
    let call = |zip: &str, action: &str| {
        task(
            "acme",
            "soap",
            json!({
                "url": format!("{base}/soap"),
                "action": action,
                "body": format!("<m:Convert xmlns:m=\"urn:x\"><zip>{zip}</zip></m:Convert>"),
            }),
            5000,
        )
    };
    let o = c.call(&call("12345", "urn:convert")).await;
    assert_eq!(
        ok(&o)["body"],
        json!({"ConvertResponse": {"city": "Springfield", "tags": {"t": ["a", "b"]}}})
    );
    err(
        &c.call(&call("00000", "urn:convert")).await,
        ErrorClass::Fatal,
        "SOAP fault s:Client: no such zip",
    );
    err(
        &c.call(&call("busy", "urn:convert")).await,
        ErrorClass::Retryable,
        "SOAP fault s:Server: backend busy",
    );
    err(
        &c.call(&call("1", "urn:other")).await,
        ErrorClass::Fatal,
        "unknown SOAPAction",
    );
    err(
        &c.call(&task(
            "acme",
            "soap",
            json!({"url": format!("{base}/soap"), "body": "<open>"}),
            5000,
        ))
        .await,
        ErrorClass::Fatal,
        "is not well-formed XML",
    );
}
