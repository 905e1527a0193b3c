//! The `soap` connector: an envelope (SOAP 1.1 or 1.2) posted over the shared HTTP
//! client, the answer's body as JSON output, and a fault turned into an error of the
//! right class (a client/sender fault is fatal, a server/receiver fault retryable).

use std::collections::BTreeMap;

use aiq_topics::{ErrorClass, TaskMessage, TaskOutcome};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::call::{CallContext, CallFuture, Connector};
use crate::http::{Auth, HttpClient, parse_url, request_headers, status_class};
use crate::outcome::{fatal, parse_args};

const NS_11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const NS_12: &str = "http://www.w3.org/2003/05/soap-envelope";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
enum SoapVersion {
    #[default]
    #[serde(rename = "1.1")]
    V11,
    #[serde(rename = "1.2")]
    V12,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SoapArgs {
    url: String,
    /// The SOAPAction (1.1) or the `action` content-type parameter (1.2).
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    version: SoapVersion,
    /// The XML inside `<soap:Body>`.
    body: String,
    /// The XML inside `<soap:Header>`, if any.
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    auth: Option<Auth>,
}

pub struct SoapConnector {
    client: HttpClient,
}

fn envelope(version: SoapVersion, header: Option<&str>, body: &str) -> String {
    let ns = match version {
        SoapVersion::V11 => NS_11,
        SoapVersion::V12 => NS_12,
    };
    let header = header
        .map(|h| format!("<soap:Header>{h}</soap:Header>"))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{ns}">{header}<soap:Body>{body}</soap:Body></soap:Envelope>"#
    )
}

/// A fault's class and message, if the body holds one.
fn fault(body: roxmltree::Node<'_, '_>) -> Option<(ErrorClass, String)> {
    let f = body
        .children()
        .find(|n| n.is_element() && n.tag_name().name() == "Fault")?;
    fn child<'a, 'i>(
        parent: roxmltree::Node<'a, 'i>,
        name: &str,
    ) -> Option<roxmltree::Node<'a, 'i>> {
        parent
            .children()
            .find(|n| n.is_element() && n.tag_name().name() == name)
    }
    let text = |n: Option<roxmltree::Node<'_, '_>>| {
        n.map(|n| {
            n.descendants()
                .filter(roxmltree::Node::is_text)
                .filter_map(|t| t.text())
                .collect::<String>()
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
    };
    // 1.1: faultcode/faultstring; 1.2: Code/Value and Reason/Text.
    let (code, reason) = if let Some(c) = child(f, "faultcode") {
        (text(Some(c)), text(child(f, "faultstring")))
    } else {
        (
            text(child(f, "Code").and_then(|c| child(c, "Value"))),
            text(child(f, "Reason").and_then(|r| child(r, "Text"))),
        )
    };
    let local = code.rsplit(':').next().unwrap_or("");
    let class = match local.split('.').next().unwrap_or("") {
        "Server" | "Receiver" => ErrorClass::Retryable,
        _ => ErrorClass::Fatal,
    };
    Some((class, format!("SOAP fault {code}: {reason}")))
}

impl SoapConnector {
    pub fn new(client: HttpClient) -> Self {
        Self { client }
    }

    async fn run(
        &self,
        task: &TaskMessage,
        ctx: &CallContext<'_>,
    ) -> Result<TaskOutcome, TaskOutcome> {
        let args: SoapArgs = parse_args("soap", &task.args)?;
        let url = parse_url("soap", &args.url)?;
        let xml = envelope(args.version, args.header.as_deref(), &args.body);
        if let Err(e) = roxmltree::Document::parse(&xml) {
            return Err(fatal(format!(
                "soap connector: `args.body`/`args.header` is not well-formed XML: {e}"
            )));
        }
        let mut headers = request_headers("soap", &args.headers, args.auth.as_ref(), ctx).await?;
        let action = args.action.clone().unwrap_or_default();
        let content_type = match args.version {
            SoapVersion::V11 => {
                if let Ok(v) = HeaderValue::from_str(&format!("\"{action}\"")) {
                    headers.insert("soapaction", v);
                }
                "text/xml; charset=utf-8".to_owned()
            }
            SoapVersion::V12 if !action.is_empty() => {
                format!("application/soap+xml; charset=utf-8; action=\"{action}\"")
            }
            SoapVersion::V12 => "application/soap+xml; charset=utf-8".to_owned(),
        };
        let content_type = HeaderValue::from_str(&content_type)
            .map_err(|_| fatal("soap connector: `args.action` cannot go in a header"))?;
        headers.insert(CONTENT_TYPE, content_type);
        let host = crate::http::target(&url);
        let client = &self.client;
        Ok(ctx.guarded(&host, async {
            let answer = match client
                .send("soap", &url, |c| {
                    c.post(url.clone()).headers(headers).body(xml.clone())
                })
                .await
            {
                Ok(a) => a,
                Err(e) => return e,
            };
            let text = String::from_utf8_lossy(&answer.body).into_owned();
            let doc = match roxmltree::Document::parse(&text) {
                Ok(d) => d,
                Err(e) => {
                    let class = status_class(answer.status).unwrap_or(ErrorClass::Fatal);
                    return TaskOutcome::Error {
                        class,
                        message: format!(
                            "soap connector: {url} answered {} with no readable envelope ({e}): {}",
                            answer.status,
                            answer.text_excerpt()
                        ),
                    };
                }
            };
            let body = doc
                .root_element()
                .children()
                .find(|n| n.is_element() && n.tag_name().name() == "Body");
            let Some(body) = body else {
                return fatal(format!(
                    "soap connector: {url} answered {} without a soap:Body",
                    answer.status
                ));
            };
            if let Some((class, message)) = fault(body) {
                return TaskOutcome::Error {
                    class,
                    message: format!("soap connector: {message}"),
                };
            }
            if let Some(class) = status_class(answer.status) {
                return TaskOutcome::Error {
                    class,
                    message: format!(
                        "soap connector: {url} answered {}: {}",
                        answer.status,
                        answer.text_excerpt()
                    ),
                };
            }
            let output: Value = crate::xml::to_json(body);
            TaskOutcome::Ok {
                output: json!({"status": answer.status, "body": output}),
            }
        })
        .await)
    }
}

impl Connector for SoapConnector {
    fn call<'a>(&'a self, task: &'a TaskMessage, ctx: &'a CallContext<'a>) -> CallFuture<'a> {
        Box::pin(async move { self.run(task, ctx).await.unwrap_or_else(|e| e) })
    }
}

/// Whether `args` have the shape this connector takes (templates not yet filled in).
pub(crate) fn check_args(args: &serde_json::Value) -> Result<(), aiq_topics::TaskOutcome> {
    parse_args::<SoapArgs>("soap", args).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(xml: &str) -> Option<(ErrorClass, String)> {
        let doc = roxmltree::Document::parse(xml).unwrap();
        let body = doc
            .root_element()
            .children()
            .find(|n| n.is_element() && n.tag_name().name() == "Body")
            .unwrap();
        fault(body)
    }

    #[test]
    fn faults_of_both_versions_are_classified() {
        let f11 = format!(
            r#"<s:Envelope xmlns:s="{NS_11}"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>bad zip</faultstring></s:Fault></s:Body></s:Envelope>"#
        );
        assert_eq!(
            body_of(&f11),
            Some((ErrorClass::Fatal, "SOAP fault s:Client: bad zip".into()))
        );
        let f12 = format!(
            r#"<e:Envelope xmlns:e="{NS_12}"><e:Body><e:Fault><e:Code><e:Value>e:Receiver</e:Value></e:Code><e:Reason><e:Text xml:lang="en">busy</e:Text></e:Reason></e:Fault></e:Body></e:Envelope>"#
        );
        assert_eq!(
            body_of(&f12),
            Some((ErrorClass::Retryable, "SOAP fault e:Receiver: busy".into()))
        );
        assert!(roxmltree::Document::parse(&envelope(SoapVersion::V11, None, "<a>")).is_err());
    }
}
