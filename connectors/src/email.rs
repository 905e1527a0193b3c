//! The `email` connector: sends one message over SMTP — STARTTLS (the default), implicit
//! TLS, or plain for a trusted relay — logging in with a password the tenant keeps as a
//! secret.
//!
//! Every call opens its own connection and closes it: the guard judges the relay's
//! addresses afresh each time (a name can move), credentials differ per tenant, and a
//! workflow step sends one message, so a pool would save little. The TCP connection goes
//! to exactly the addresses the guard allowed (lettre never resolves the name again); the
//! certificate is checked against the name in `args.smtp.host`, with the Mozilla roots
//! plus `connectors.extra_ca_files`.

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use aiq_secrets::ExposeSecret;
use aiq_topics::{ErrorClass, TaskMessage, TaskOutcome};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use lettre::{Address, Message};
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::json;
use tokio::time::Instant;

use crate::call::{CallContext, CallFuture, Connector};
use crate::outcome::{fatal, parse_args, retryable, timeout_outcome};

/// How the connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TlsMode {
    /// Plain TCP, then `STARTTLS`; refused if the server does not offer it.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No TLS at all: only for a relay on a network the deployment trusts.
    None,
}

impl TlsMode {
    /// The port each mode usually listens on: submission (587), submissions (465), smtp
    /// (25).
    fn default_port(self) -> u16 {
        match self {
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
            TlsMode::None => 25,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmtpArgs {
    host: String,
    /// 587 for `starttls`, 465 for `tls`, 25 for `none` when not given.
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    tls: TlsMode,
    #[serde(default)]
    username: Option<String>,
    /// The tenant secret holding the password for `username`.
    #[serde(default)]
    password_secret: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailArgs {
    smtp: SmtpArgs,
    from: String,
    to: Recipients,
    #[serde(default)]
    cc: Recipients,
    #[serde(default)]
    bcc: Recipients,
    #[serde(default)]
    reply_to: Option<String>,
    subject: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    html: Option<String>,
}

/// One address, or a list of them; `null` is none.
#[derive(Debug, Default)]
struct Recipients {
    list: Vec<String>,
    /// Written as a bare string, so errors name `args.to` rather than `args.to[0]`.
    single: bool,
}

impl<'de> Deserialize<'de> for Recipients {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Recipients;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an email address or a list of them")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Recipients, E> {
                Ok(Recipients {
                    list: vec![s.to_owned()],
                    single: true,
                })
            }

            fn visit_unit<E: de::Error>(self) -> Result<Recipients, E> {
                Ok(Recipients::default())
            }

            fn visit_none<E: de::Error>(self) -> Result<Recipients, E> {
                Ok(Recipients::default())
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Recipients, A::Error> {
                let mut list = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    list.push(s);
                }
                Ok(Recipients {
                    list,
                    single: false,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Recipients {
    /// The mailboxes, each error naming its field (`args.to[1]`).
    fn parse(&self, field: &str) -> Result<Vec<Mailbox>, TaskOutcome> {
        self.list
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let name = if self.single {
                    format!("args.{field}")
                } else {
                    format!("args.{field}[{i}]")
                };
                mailbox(&name, s)
            })
            .collect()
    }
}

fn mailbox(field: &str, s: &str) -> Result<Mailbox, TaskOutcome> {
    s.trim().parse::<Mailbox>().map_err(|e| {
        fatal(format!(
            "email connector: `{field}`: {s:?} is not an email address: {e}"
        ))
    })
}

/// Where the SMTP conversation failed, to say so in the error.
enum Stage<'a> {
    Connect,
    Starttls,
    Login(&'a str),
    Sender(&'a str),
    Recipient(&'a str),
    Content,
}

impl fmt::Display for Stage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Connect => f.write_str("cannot connect"),
            Stage::Starttls => f.write_str("STARTTLS failed"),
            Stage::Login(user) => write!(f, "login as {user:?} failed"),
            Stage::Sender(from) => write!(f, "the sender {from} was refused"),
            Stage::Recipient(to) => write!(f, "the recipient {to} was refused"),
            Stage::Content => f.write_str("the message was refused"),
        }
    }
}

pub struct EmailConnector {
    /// Trusted besides the Mozilla roots.
    extra_cas: Vec<CertificateDer<'static>>,
}

impl EmailConnector {
    pub fn new(extra_cas: &[CertificateDer<'static>]) -> Self {
        Self {
            extra_cas: extra_cas.to_vec(),
        }
    }

    /// TLS for `domain`: certificate and name checked, Mozilla roots plus the extra CAs.
    fn tls_parameters(&self, domain: &str) -> Result<TlsParameters, TaskOutcome> {
        let setup = |e: SmtpError| fatal(format!("email connector: TLS setup: {e}"));
        let mut b = TlsParameters::builder(domain.to_owned())
            .certificate_store(CertificateStore::WebpkiRoots);
        for der in &self.extra_cas {
            b = b.add_root_certificate(Certificate::from_der(der.to_vec()).map_err(setup)?);
        }
        b.build_rustls().map_err(setup)
    }

    async fn run(&self, task: &TaskMessage, ctx: &CallContext<'_>) -> TaskOutcome {
        let args: EmailArgs = match parse_args("email", &task.args) {
            Ok(a) => a,
            Err(e) => return e,
        };
        let smtp = &args.smtp;
        let host = smtp.host.trim();
        if host.is_empty() || host.chars().any(char::is_whitespace) {
            return fatal(format!(
                "email connector: `args.smtp.host`: {:?} is not a host name",
                smtp.host
            ));
        }
        let port = smtp.port.unwrap_or_else(|| smtp.tls.default_port());
        if port == 0 {
            return fatal("email connector: `args.smtp.port`: must be 1 to 65535");
        }
        let login = match (&smtp.username, &smtp.password_secret) {
            (None, None) => None,
            (Some(u), Some(s)) => Some((u, s)),
            (Some(_), None) => {
                return fatal(
                    "email connector: `args.smtp.password_secret`: a username needs the \
                     secret holding its password",
                );
            }
            (None, Some(_)) => {
                return fatal(
                    "email connector: `args.smtp.username`: a password_secret needs the \
                     username it is for",
                );
            }
        };
        if login.is_some() && smtp.tls == TlsMode::None {
            return fatal(
                "email connector: `args.smtp.tls`: credentials are never sent over an \
                 unencrypted connection; use `starttls` or `tls`",
            );
        }
        let message = match build_message(task, &args) {
            Ok(m) => m,
            Err(e) => return e,
        };
        let credentials = match login {
            Some((user, secret)) => match ctx.secret("args.smtp.password_secret", secret).await {
                Ok(pw) => Some((
                    user.as_str(),
                    Credentials::new(user.clone(), pw.expose_secret().to_owned()),
                )),
                Err(e) => return e,
            },
            None => None,
        };
        // Brackets only mark an IPv6 literal; the certificate names the bare address.
        let domain = host.trim_start_matches('[').trim_end_matches(']');
        let tls = match smtp.tls {
            TlsMode::None => None,
            _ => match self.tls_parameters(domain) {
                Ok(t) => Some(t),
                Err(e) => return e,
            },
        };
        let resolving = ctx.outbound.resolve_for("email", host, port);
        let addrs = match tokio::time::timeout_at(ctx.deadline, resolving).await {
            Err(_) => return timeout_outcome(task.timeout_ms),
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return e,
        };
        let session = Session {
            host,
            port,
            mode: smtp.tls,
            tls,
            credentials,
            deadline: ctx.deadline,
        };
        ctx.guarded(&format!("{host}:{port}"), session.deliver(&addrs, &message))
            .await
    }
}

/// The message, with a Message-ID derived from run, step and attempt: stable when the
/// same attempt is redelivered (so receivers can drop the duplicate), new for a retry.
fn build_message(task: &TaskMessage, args: &EmailArgs) -> Result<Message, TaskOutcome> {
    let from = mailbox("args.from", &args.from)?;
    let to = args.to.parse("to")?;
    let cc = args.cc.parse("cc")?;
    let bcc = args.bcc.parse("bcc")?;
    if to.is_empty() && cc.is_empty() && bcc.is_empty() {
        return Err(fatal(
            "email connector: `args.to`: no recipients (give `to`, `cc` or `bcc`)",
        ));
    }
    let reply_to = match &args.reply_to {
        Some(r) => Some(mailbox("args.reply_to", r)?),
        None => None,
    };
    if args.subject.contains(['\r', '\n']) {
        return Err(fatal(
            "email connector: `args.subject`: must be one line (no CR or LF)",
        ));
    }
    let mut b = Message::builder()
        .from(from.clone())
        .subject(args.subject.clone())
        .message_id(Some(message_id(task, from.email.domain())))
        .date_now()
        .user_agent(concat!("AutomateIQ/", env!("CARGO_PKG_VERSION")).to_owned());
    for m in to {
        b = b.to(m);
    }
    for m in cc {
        b = b.cc(m);
    }
    for m in bcc {
        b = b.bcc(m);
    }
    if let Some(r) = reply_to {
        b = b.reply_to(r);
    }
    let built = match (&args.text, &args.html) {
        (Some(t), Some(h)) => b.multipart(MultiPart::alternative_plain_html(t.clone(), h.clone())),
        (Some(t), None) => b.singlepart(SinglePart::plain(t.clone())),
        (None, Some(h)) => b.singlepart(SinglePart::html(h.clone())),
        (None, None) => {
            return Err(fatal(
                "email connector: `args`: give `text`, `html` or both",
            ));
        }
    };
    built.map_err(|e| fatal(format!("email connector: cannot build the message: {e}")))
}

fn message_id(task: &TaskMessage, from_domain: &str) -> String {
    // Step ids are letters, digits, `-`, `_` and `.`; a dot becomes `=2E` so that no id
    // has two dots in a row or ends in one, and no two steps share an id.
    let step = task.step.as_str().replace('.', "=2E");
    let domain = if from_domain.is_ascii() && !from_domain.is_empty() {
        from_domain
    } else {
        "automateiq.invalid"
    };
    format!("<aiq.{}.{}.{step}@{domain}>", task.run, task.attempt)
}

/// One SMTP conversation.
struct Session<'a> {
    host: &'a str,
    port: u16,
    mode: TlsMode,
    tls: Option<TlsParameters>,
    credentials: Option<(&'a str, Credentials)>,
    deadline: Instant,
}

impl Session<'_> {
    fn left(&self) -> Duration {
        self.deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    }

    async fn deliver(self, addrs: &[SocketAddr], message: &Message) -> TaskOutcome {
        let hello = ClientId::default();
        let wrapper = match self.mode {
            TlsMode::Tls => self.tls.clone(),
            _ => None,
        };
        let mut conn = match AsyncSmtpConnection::connect_tokio1(
            addrs,
            Some(self.left()),
            &hello,
            wrapper,
            None,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => return self.failed(Stage::Connect, &e),
        };
        if self.mode == TlsMode::Starttls {
            if !conn.can_starttls() {
                conn.abort().await;
                return fatal(format!(
                    "email connector: {}:{} does not offer STARTTLS; set `args.smtp.tls` to \
                     `tls` if it expects TLS from the start",
                    self.host, self.port
                ));
            }
            let Some(params) = self.tls.clone() else {
                conn.abort().await;
                return fatal("email connector: STARTTLS without TLS parameters");
            };
            if let Err(e) = conn.starttls(params, &hello).await {
                // lettre has closed the connection already or, when the handshake failed,
                // left it without a stream (touching it then panics): drop it as it is.
                return self.failed(Stage::Starttls, &e);
            }
        }
        match self.converse(&mut conn, message).await {
            Ok(response) => {
                // The message is taken; a slow goodbye must not turn that into a timeout
                // (and a retry sending it twice).
                let bye = self.left().saturating_sub(Duration::from_millis(100));
                if !bye.is_zero() {
                    let _ =
                        tokio::time::timeout(bye.min(Duration::from_secs(2)), conn.quit()).await;
                }
                let accepted: Vec<String> = message
                    .envelope()
                    .to()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                let message_id = message
                    .headers()
                    .get_raw("Message-ID")
                    .unwrap_or_default()
                    .to_owned();
                tracing::debug!(
                    host = self.host,
                    port = self.port,
                    %message_id,
                    recipients = accepted.len(),
                    "email sent"
                );
                TaskOutcome::Ok {
                    output: json!({
                        "accepted": accepted,
                        "message_id": message_id,
                        "response": response_text(&response),
                    }),
                }
            }
            Err(outcome) => {
                conn.abort().await;
                outcome
            }
        }
    }

    async fn converse(
        &self,
        conn: &mut AsyncSmtpConnection,
        message: &Message,
    ) -> Result<Response, TaskOutcome> {
        if let Some((user, creds)) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], creds)
                .await
                .map_err(|e| self.failed(Stage::Login(user), &e))?;
        }
        // lettre's `send`, step by step, so that an error names the address refused.
        let envelope = message.envelope();
        let body = message.formatted();
        let mut params = Vec::new();
        let ascii = |a: &Address| a.user().is_ascii() && a.domain().is_ascii();
        let non_ascii_addresses =
            envelope.from().is_some_and(|a| !ascii(a)) || !envelope.to().iter().all(ascii);
        if non_ascii_addresses {
            if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Err(fatal(format!(
                    "email connector: {}:{} does not accept non-ASCII addresses (no SMTPUTF8)",
                    self.host, self.port
                )));
            }
            params.push(MailParameter::SmtpUtfEight);
        }
        if !body.is_ascii() {
            if !conn.server_info().supports_feature(Extension::EightBitMime) {
                return Err(fatal(format!(
                    "email connector: {}:{} does not accept 8-bit messages (no 8BITMIME)",
                    self.host, self.port
                )));
            }
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let from = envelope.from().map(ToString::to_string).unwrap_or_default();
        conn.command(Mail::new(envelope.from().cloned(), params))
            .await
            .map_err(|e| self.failed(Stage::Sender(&from), &e))?;
        for to in envelope.to() {
            conn.command(Rcpt::new(to.clone(), vec![]))
                .await
                .map_err(|e| self.failed(Stage::Recipient(to.as_ref()), &e))?;
        }
        conn.command(Data)
            .await
            .map_err(|e| self.failed(Stage::Content, &e))?;
        conn.message(&body)
            .await
            .map_err(|e| self.failed(Stage::Content, &e))
    }

    /// The outcome for an SMTP error: 5xx and certificate failures are fatal, 4xx and
    /// connection trouble worth a retry.
    fn failed(&self, stage: Stage<'_>, e: &SmtpError) -> TaskOutcome {
        // lettre wraps a failed TLS upgrade as a connection error twice.
        let what = e.to_string().replacen(
            "Connection error: Connection error: ",
            "Connection error: ",
            1,
        );
        let message = format!(
            "email connector: {}:{}: {stage}: {what}",
            self.host, self.port
        );
        if e.is_permanent() {
            fatal(message)
        } else if e.is_transient() {
            retryable(message)
        } else if certificate_rejected(e) {
            fatal(format!(
                "{message} (if the server's certificate is from an internal CA, add it to \
                 connectors.extra_ca_files)"
            ))
        } else if e.is_timeout() {
            TaskOutcome::Error {
                class: ErrorClass::Timeout,
                message,
            }
        } else if e.is_client() || e.is_tls() {
            // No common login mechanism, TLS setup: trying again changes nothing.
            fatal(message)
        } else {
            // Connection refused or reset, the TLS handshake broken off, the server
            // hanging up mid-answer.
            retryable(message)
        }
    }
}

/// Whether rustls refused the server's certificate (unknown issuer, wrong name, expired).
/// tokio-rustls hands the rustls error over inside an `io::Error`, whose `source` skips
/// it, so each level is looked into as well.
fn certificate_rejected(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cur {
        let tls = c.downcast_ref::<rustls::Error>().or_else(|| {
            c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if matches!(tls, Some(rustls::Error::InvalidCertificate(_))) {
            return true;
        }
        cur = c.source();
    }
    false
}

/// `250 OK queued as …`: the code and the text, lines joined.
fn response_text(r: &Response) -> String {
    let lines: Vec<&str> = r.message().collect();
    format!("{} {}", r.code(), lines.join(" "))
        .trim_end()
        .to_owned()
}

impl Connector for EmailConnector {
    fn call<'a>(&'a self, task: &'a TaskMessage, ctx: &'a CallContext<'a>) -> CallFuture<'a> {
        Box::pin(self.run(task, ctx))
    }
}

/// Whether `args` have the shape this connector takes (templates not yet filled in).
pub(crate) fn check_args(args: &serde_json::Value) -> Result<(), aiq_topics::TaskOutcome> {
    parse_args::<EmailArgs>("email", args).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiq_topics::{RunId, StepId, TenantId, WorkflowId};

    fn task(step: &str) -> TaskMessage {
        let tenant = TenantId::new("acme").unwrap();
        TaskMessage {
            run: RunId::from_idempotency_key(&tenant, &WorkflowId::new("w").unwrap(), "k"),
            tenant,
            step: StepId::new(step).unwrap(),
            attempt: 3,
            connector: "email".into(),
            args: json!({}),
            timeout_ms: 1000,
            dispatched_at: chrono::Utc::now(),
            expires_at: None,
        }
    }

    #[test]
    fn message_ids_are_per_attempt_and_well_formed() {
        let t = task("notify..x.");
        let id = message_id(&t, "example.com");
        assert_eq!(
            id,
            format!("<aiq.{}.3.notify=2E=2Ex=2E@example.com>", t.run)
        );
        assert!(message_id(&t, "exämple.com").ends_with("@automateiq.invalid>"));
    }

    #[test]
    fn recipients_are_one_address_or_a_list() {
        let a: EmailArgs = parse_args(
            "email",
            &json!({"smtp": {"host": "h"}, "from": "a@x", "to": "b@x", "cc": ["c@x", "d@x"],
                    "bcc": null, "subject": "s", "text": "t"}),
        )
        .unwrap();
        assert!(a.to.single && a.to.list == ["b@x"]);
        assert!(!a.cc.single && a.cc.list.len() == 2);
        assert!(a.bcc.list.is_empty());
        assert_eq!(a.smtp.tls, TlsMode::Starttls);
        let TaskOutcome::Error { message, .. } = parse_args::<EmailArgs>(
            "email",
            &json!({"smtp": {"host": "h", "tls": "ssl"}, "from": "a@x", "to": 5, "subject": "s"}),
        )
        .unwrap_err() else {
            panic!()
        };
        assert!(message.contains("`args.smtp.tls`"), "{message}");
    }

    #[test]
    fn bad_addresses_name_their_field_and_subjects_stay_on_one_line() {
        let args = |v: serde_json::Value| parse_args::<EmailArgs>("email", &v).unwrap();
        let err = |r: Result<Message, TaskOutcome>| match r {
            Err(TaskOutcome::Error { class, message }) => {
                assert_eq!(class, ErrorClass::Fatal);
                message
            }
            other => panic!("{other:?}"),
        };
        let base = json!({"smtp": {"host": "h"}, "from": "a@x.org", "subject": "s", "text": "t"});
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base.clone();
            b[k] = v;
            b
        };
        let m = err(build_message(
            &task("s"),
            &args(with("to", json!(["b@x.org", "nope"]))),
        ));
        assert!(
            m.starts_with("email connector: `args.to[1]`: \"nope\""),
            "{m}"
        );
        let m = err(build_message(&task("s"), &args(with("to", json!("nope")))));
        assert!(m.starts_with("email connector: `args.to`: "), "{m}");
        let mut a = with("to", json!("b@x.org"));
        a["subject"] = json!("hi\r\nBcc: evil@x.org");
        let m = err(build_message(&task("s"), &args(a)));
        assert!(m.contains("`args.subject`"), "{m}");
        let mut a = with("to", json!("Bee <b@x.org>"));
        a["html"] = json!("<p>t</p>");
        a["bcc"] = json!("hidden@x.org");
        let msg = build_message(&task("s"), &args(a)).unwrap();
        let text = String::from_utf8(msg.formatted()).unwrap();
        assert!(text.contains("multipart/alternative"), "{text}");
        assert!(!text.contains("hidden@x.org"), "{text}");
        assert_eq!(msg.envelope().to().len(), 2);
    }
}
