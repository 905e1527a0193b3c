//! The `http` connector (REST calls) and the HTTP client it shares with `soap`: TLS by
//! rustls with explicit roots, no proxies from the environment, the outbound guard on
//! every resolved address and on every redirect hop, bodies read up to a bound.

use std::collections::BTreeMap;
use std::sync::Arc;

use aiq_secrets::ExposeSecret;
use aiq_topics::{ErrorClass, TaskMessage, TaskOutcome};
use base64::Engine as _;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::call::{CallContext, CallFuture, Connector};
use crate::error::ConnectorError;
use crate::outbound::{Outbound, OutboundError};
use crate::outcome::{fatal, parse_args, retryable};
use crate::settings::ConnectorSettings;

/// Resolves names with the system resolver and keeps only addresses the guard allows.
struct GuardedResolver {
    outbound: Outbound,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let outbound = self.outbound.clone();
        Box::pin(async move {
            let addrs = outbound.resolve(name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[derive(Clone)]
pub struct HttpClient {
    /// Follows no redirect itself: the http connector follows them hop by hop
    /// ([`HttpClient::send_following`]), so that every hop is checked and credentials
    /// stay with the origin they were given for.
    client: reqwest::Client,
    outbound: Outbound,
    max_response_bytes: usize,
}

/// An IP written in the URL is never resolved, so the guard looks at it here.
fn check_literal(outbound: &Outbound, url: &Url) -> Result<(), OutboundError> {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => outbound.check(&ip.to_string(), ip.into()),
        Some(url::Host::Ipv6(ip)) => outbound.check(&ip.to_string(), ip.into()),
        _ => Ok(()),
    }
}

/// Most redirects one call follows.
const MAX_REDIRECTS: usize = 10;

/// One hop of a call: what to send where. A redirect makes the next one.
#[derive(Debug, Clone)]
pub(crate) struct Hop {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    /// False once a 301, 302 or 303 turned the request into a GET without its body.
    pub with_body: bool,
}

/// Whether a redirect from `from` to `to` leaves the origin the credentials were given
/// for: another scheme, host or port.
fn leaves_origin(from: &Url, to: &Url) -> bool {
    from.scheme() != to.scheme()
        || from.host_str() != to.host_str()
        || from.port_or_known_default() != to.port_or_known_default()
}

/// The hop a redirect answer asks for, `None` when `answer` is no redirect. Credential
/// headers (`Authorization`, cookies, and the step's own credential header named in
/// `credentials`) are dropped when the redirect leaves the origin, and are not sent again
/// on later hops even if they come back to it.
fn next_hop(
    connector: &str,
    hop: &Hop,
    answer: &Answer,
    credentials: &[HeaderName],
) -> Result<Option<Hop>, TaskOutcome> {
    if !matches!(answer.status, 301 | 302 | 303 | 307 | 308) {
        return Ok(None);
    }
    let Some(location) = answer.headers.get("location") else {
        return Ok(None);
    };
    let url = hop.url.join(location).map_err(|e| {
        fatal(format!(
            "{connector} connector: {} redirected to {location:?}, which is not a URL: {e}",
            hop.url
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(fatal(format!(
            "{connector} connector: {} redirected to a {}: URL",
            hop.url,
            url.scheme()
        )));
    }
    let mut next = Hop {
        method: hop.method.clone(),
        url,
        headers: hop.headers.clone(),
        with_body: hop.with_body,
    };
    if leaves_origin(&hop.url, &next.url) {
        use reqwest::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
        for name in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION]
            .iter()
            .chain(credentials)
        {
            next.headers.remove(name);
        }
    }
    if matches!(answer.status, 301..=303) {
        // As browsers do: the body is dropped and anything but HEAD becomes a GET.
        next.with_body = false;
        use reqwest::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
        for name in [
            CONTENT_TYPE,
            CONTENT_LENGTH,
            CONTENT_ENCODING,
            TRANSFER_ENCODING,
        ] {
            next.headers.remove(name);
        }
        if next.method != Method::HEAD {
            next.method = Method::GET;
        }
    }
    Ok(Some(next))
}

impl HttpClient {
    pub fn new(
        settings: &ConnectorSettings,
        outbound: &Outbound,
        extra_cas: &[CertificateDer<'static>],
    ) -> Result<Self, ConnectorError> {
        let tls = crate::tls::client_config(extra_cas)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .dns_resolver(Arc::new(GuardedResolver {
                outbound: outbound.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("AutomateIQ/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConnectorError::Http(chain(&e)))?;
        Ok(Self {
            client,
            outbound: outbound.clone(),
            max_response_bytes: settings.max_response_bytes,
        })
    }

    /// Sends `first` and, when `follow`, the redirects it answers with, at most
    /// [`MAX_REDIRECTS`] of them; `build` makes each hop's request (it adds the body when
    /// the hop keeps one). The guard checks every hop's address, and the headers named in
    /// `credentials` never go to another origin than the first.
    pub(crate) async fn send_following(
        &self,
        connector: &str,
        first: Hop,
        follow: bool,
        credentials: &[HeaderName],
        build: impl Fn(&reqwest::Client, &Hop) -> reqwest::RequestBuilder,
    ) -> Result<Answer, TaskOutcome> {
        let mut hop = first;
        for _ in 0..=MAX_REDIRECTS {
            let answer = self.send(connector, &hop.url, |c| build(c, &hop)).await?;
            if !follow {
                return Ok(answer);
            }
            match next_hop(connector, &hop, &answer, credentials)? {
                Some(next) => hop = next,
                None => return Ok(answer),
            }
        }
        Err(fatal(format!(
            "{connector} connector: more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// Sends one request built by `build` and reads the answer; a redirect is the answer.
    pub(crate) async fn send(
        &self,
        connector: &str,
        url: &Url,
        build: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Answer, TaskOutcome> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(fatal(format!(
                "{connector} connector: `args.url`: the scheme must be http or https, not {:?}",
                url.scheme()
            )));
        }
        check_literal(&self.outbound, url)
            .map_err(|e| fatal(format!("{connector} connector: {e}")))?;
        let resp = build(&self.client)
            .send()
            .await
            .map_err(|e| request_error(connector, &e))?;
        let status = resp.status().as_u16();
        let final_url = resp.url().clone();
        let mut headers = BTreeMap::new();
        for (name, value) in resp.headers() {
            if let Ok(v) = value.to_str() {
                headers
                    .entry(name.as_str().to_owned())
                    .and_modify(|e: &mut String| {
                        e.push_str(", ");
                        e.push_str(v);
                    })
                    .or_insert_with(|| v.to_owned());
            }
        }
        if let Some(len) = resp.content_length()
            && len as usize > self.max_response_bytes
        {
            return Err(fatal(format!(
                "{connector} connector: the response body has {len} bytes, more than \
                 connectors.max_response_bytes ({})",
                self.max_response_bytes
            )));
        }
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| request_error(connector, &e))?
        {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(fatal(format!(
                    "{connector} connector: the response body is larger than \
                     connectors.max_response_bytes ({})",
                    self.max_response_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            headers,
            body,
            url: final_url,
        })
    }
}

pub(crate) struct Answer {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub url: Url,
}

impl Answer {
    pub fn text_excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let mut s: String = text.chars().take(300).collect();
        if text.chars().count() > 300 {
            s.push('…');
        }
        s
    }
}

/// The error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = c.source();
    }
    s
}

fn refused_by_guard(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(o) = c.downcast_ref::<OutboundError>() {
            return Some(o.to_string());
        }
        cur = c.source();
    }
    None
}

pub(crate) fn request_error(connector: &str, e: &reqwest::Error) -> TaskOutcome {
    if let Some(refusal) = refused_by_guard(e) {
        return fatal(format!("{connector} connector: {refusal}"));
    }
    let what = chain(e);
    if e.is_timeout() {
        TaskOutcome::Error {
            class: ErrorClass::Timeout,
            message: format!("{connector} connector: {what}"),
        }
    } else if e.is_builder() || e.is_redirect() {
        fatal(format!("{connector} connector: {what}"))
    } else {
        retryable(format!("{connector} connector: {what}"))
    }
}

/// How a status maps to a class: 408 and 429 and 5xx are worth a retry; other 4xx and
/// 3xx (a redirect not followed) are not.
pub(crate) fn status_class(status: u16) -> Option<ErrorClass> {
    match status {
        200..=299 => None,
        408 | 425 | 429 | 500..=599 => Some(ErrorClass::Retryable),
        _ => Some(ErrorClass::Fatal),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum HttpMethod {
    #[default]
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
    Options,
}

impl HttpMethod {
    fn method(self) -> Method {
        match self {
            HttpMethod::Get => Method::GET,
            HttpMethod::Post => Method::POST,
            HttpMethod::Put => Method::PUT,
            HttpMethod::Patch => Method::PATCH,
            HttpMethod::Delete => Method::DELETE,
            HttpMethod::Head => Method::HEAD,
            HttpMethod::Options => Method::OPTIONS,
        }
    }
}

/// Credentials, each named by the tenant secret that holds them.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Auth {
    /// `Authorization: Bearer <secret>`.
    Bearer { secret: String },
    /// `Authorization: Basic base64(username:<secret>)`.
    Basic {
        username: String,
        password_secret: String,
    },
    /// `<header>: <secret>`.
    ApiKey { header: String, secret: String },
}

impl Auth {
    /// The header of an `api_key` credential: like `Authorization`, it is not sent to
    /// another origin on a redirect.
    pub(crate) fn own_header(&self) -> Option<HeaderName> {
        match self {
            Auth::ApiKey { header, .. } => HeaderName::from_bytes(header.as_bytes()).ok(),
            Auth::Bearer { .. } | Auth::Basic { .. } => None,
        }
    }

    /// The header carrying the credential, marked sensitive.
    pub(crate) async fn header(
        &self,
        ctx: &CallContext<'_>,
    ) -> Result<(HeaderName, HeaderValue), TaskOutcome> {
        let (name, value) = match self {
            Auth::Bearer { secret } => {
                let s = ctx.secret("args.auth.secret", secret).await?;
                (
                    reqwest::header::AUTHORIZATION,
                    format!("Bearer {}", s.expose_secret()),
                )
            }
            Auth::Basic {
                username,
                password_secret,
            } => {
                let s = ctx
                    .secret("args.auth.password_secret", password_secret)
                    .await?;
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", s.expose_secret()));
                (reqwest::header::AUTHORIZATION, format!("Basic {token}"))
            }
            Auth::ApiKey { header, secret } => {
                let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                    fatal(format!(
                        "`args.auth.header`: {header:?} is not a valid header name"
                    ))
                })?;
                let s = ctx.secret("args.auth.secret", secret).await?;
                (name, s.expose_secret().to_owned())
            }
        };
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| fatal("`args.auth`: the secret holds characters a header cannot carry"))?;
        value.set_sensitive(true);
        Ok((name, value))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ResponseKind {
    /// JSON when the content type says so, else text (base64 when not UTF-8).
    #[default]
    Auto,
    Json,
    Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpArgs {
    #[serde(default)]
    method: HttpMethod,
    url: String,
    #[serde(default)]
    query: BTreeMap<String, Value>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    json: Option<Value>,
    #[serde(default)]
    form: Option<BTreeMap<String, String>>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    auth: Option<Auth>,
    #[serde(default)]
    response: ResponseKind,
    #[serde(default = "yes")]
    follow_redirects: bool,
    /// Sign the `json` or `body` as AutomateIQ's own webhooks are signed.
    #[serde(default)]
    sign: Option<crate::sign::Sign>,
}

fn yes() -> bool {
    true
}

pub(crate) fn parse_url(connector: &str, url: &str) -> Result<Url, TaskOutcome> {
    Url::parse(url).map_err(|e| {
        fatal(format!(
            "{connector} connector: `args.url`: {url:?} is not a URL: {e}"
        ))
    })
}

pub(crate) fn header_map(
    connector: &str,
    headers: &BTreeMap<String, String>,
) -> Result<HeaderMap, TaskOutcome> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            fatal(format!(
                "{connector} connector: `args.headers.{k}`: not a valid header name"
            ))
        })?;
        let value = HeaderValue::from_str(v).map_err(|_| {
            fatal(format!(
                "{connector} connector: `args.headers.{k}`: not a valid header value"
            ))
        })?;
        map.insert(name, value);
    }
    Ok(map)
}

/// What a breaker is keyed by, with the tenant: `host:port`.
pub(crate) fn target(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// The headers every request of `connector` carries: the step's own, its credential
/// (marked sensitive) and the attempt's `Idempotency-Key`.
pub(crate) async fn request_headers(
    connector: &str,
    headers: &BTreeMap<String, String>,
    auth: Option<&Auth>,
    ctx: &CallContext<'_>,
) -> Result<HeaderMap, TaskOutcome> {
    let mut map = header_map(connector, headers)?;
    if let Some(auth) = auth {
        let (k, v) = auth.header(ctx).await?;
        map.insert(k, v);
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.task.idempotency_key()) {
        map.entry("idempotency-key").or_insert(v);
    }
    Ok(map)
}

pub struct HttpConnector {
    client: HttpClient,
}

impl HttpConnector {
    pub fn new(client: HttpClient) -> Self {
        Self { client }
    }

    async fn run(
        &self,
        task: &TaskMessage,
        ctx: &CallContext<'_>,
    ) -> Result<TaskOutcome, TaskOutcome> {
        let args: HttpArgs = parse_args("http", &task.args)?;
        let bodies = [
            args.json.is_some(),
            args.form.is_some(),
            args.body.is_some(),
        ];
        if bodies.iter().filter(|b| **b).count() > 1 {
            return Err(fatal(
                "http connector: give at most one of `args.json`, `args.form`, `args.body`",
            ));
        }
        let mut url = parse_url("http", &args.url)?;
        if !args.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &args.query {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(fatal(format!(
                            "http connector: `args.query.{k}`: must be a string, number or boolean"
                        )));
                    }
                };
                pairs.append_pair(k, &v);
            }
        }
        let mut headers = request_headers("http", &args.headers, args.auth.as_ref(), ctx).await?;
        let signed = match &args.sign {
            None => None,
            Some(_) if args.form.is_some() => {
                return Err(fatal(
                    "http connector: `args.sign` signs a `json` or `body`, not a `form`",
                ));
            }
            Some(sign) => Some(
                crate::sign::signed_body(
                    "http",
                    sign,
                    args.json.as_ref(),
                    args.body.as_deref(),
                    &mut headers,
                    ctx,
                )
                .await?,
            ),
        };
        let credentials: Vec<HeaderName> = args
            .auth
            .as_ref()
            .and_then(Auth::own_header)
            .into_iter()
            .collect();
        let host = crate::http::target(&url);
        let client = &self.client;
        let first = Hop {
            method: args.method.method(),
            url: url.clone(),
            headers,
            with_body: true,
        };
        let response = args.response;
        Ok(ctx
            .guarded(&host, async {
                let sent = client
                    .send_following(
                        "http",
                        first,
                        args.follow_redirects,
                        &credentials,
                        |c, hop| {
                            let mut rb = c
                                .request(hop.method.clone(), hop.url.clone())
                                .headers(hop.headers.clone());
                            if !hop.with_body {
                                return rb;
                            }
                            if let Some(b) = &signed {
                                rb = rb.body(b.clone());
                            } else if let Some(j) = &args.json {
                                rb = rb.json(j);
                            } else if let Some(f) = &args.form {
                                rb = rb.form(f);
                            } else if let Some(b) = &args.body {
                                rb = rb.body(b.clone());
                            }
                            rb
                        },
                    )
                    .await;
                let answer = match sent {
                    Ok(a) => a,
                    Err(e) => return e,
                };
                if let Some(class) = status_class(answer.status) {
                    return TaskOutcome::Error {
                        class,
                        message: format!(
                            "http connector: {} {} answered {}: {}",
                            args.method.method(),
                            answer.url,
                            answer.status,
                            answer.text_excerpt()
                        ),
                    };
                }
                match output(&answer, response) {
                    Ok(output) => TaskOutcome::Ok { output },
                    Err(e) => e,
                }
            })
            .await)
    }
}

fn output(a: &Answer, kind: ResponseKind) -> Result<Value, TaskOutcome> {
    let is_json = a
        .headers
        .get("content-type")
        .is_some_and(|c| c.contains("json"));
    let body = if a.body.is_empty() {
        Value::Null
    } else {
        match kind {
            ResponseKind::Json => serde_json::from_slice(&a.body).map_err(|e| {
                fatal(format!(
                    "http connector: the response is not JSON ({e}): {}",
                    a.text_excerpt()
                ))
            })?,
            ResponseKind::Auto if is_json => serde_json::from_slice(&a.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&a.body).into_owned())),
            ResponseKind::Auto | ResponseKind::Text => match std::str::from_utf8(&a.body) {
                Ok(s) => Value::String(s.to_owned()),
                Err(_) => json!({
                    "base64": base64::engine::general_purpose::STANDARD.encode(&a.body)
                }),
            },
        }
    };
    let headers: Map<String, Value> = a
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Ok(json!({"status": a.status, "headers": headers, "body": body}))
}

impl Connector for HttpConnector {
    fn call<'a>(&'a self, task: &'a TaskMessage, ctx: &'a CallContext<'a>) -> CallFuture<'a> {
        Box::pin(async move { self.run(task, ctx).await.unwrap_or_else(|e| e) })
    }
}

/// Whether `args` have the shape this connector takes (templates not yet filled in).
pub(crate) fn check_args(args: &serde_json::Value) -> Result<(), aiq_topics::TaskOutcome> {
    parse_args::<HttpArgs>("http", args).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_classes() {
        assert_eq!(status_class(204), None);
        assert_eq!(status_class(404), Some(ErrorClass::Fatal));
        assert_eq!(status_class(302), Some(ErrorClass::Fatal));
        assert_eq!(status_class(429), Some(ErrorClass::Retryable));
        assert_eq!(status_class(503), Some(ErrorClass::Retryable));
    }
}
