//! The email connector against the real SMTP server of `scripts/services` (aiosmtpd,
//! STARTTLS with a self-signed certificate, AUTH required, some domains refused): a
//! delivery checked in the server's maildir, and each error class — wrong password,
//! refused and deferred recipients, nothing listening, an untrusted certificate, the
//! outbound guard, a bad address. No outcome may carry the password.
//!
//! Needs `AIQ_SMTP_PORT` and friends (`scripts/services env`); without them the tests
//! skip, unless `CI` or `AIQ_REQUIRE_SERVICES=1` is set.

// Helpers outside #[test] functions unwrap too: a test failing on one is the point.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aiq_connectors::{ConnectorSettings, Connectors, OutboundSettings};
use aiq_topics::{ErrorClass, RunId, StepId, TaskMessage, TaskOutcome};
use serde_json::{Value, json};

const WRONG_PASSWORD: &str = "not-the-smtp-password-42";

struct Smtp {
    port: u16,
    user: String,
    password: String,
    ca: String,
    maildir: PathBuf,
}

/// The server's settings, or `None` (after saying why) when the test should skip.
fn smtp() -> Option<Smtp> {
    let port = aiq_testkit::service(aiq_testkit::SMTP)?;
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("AIQ_SMTP_PORT is set but {name} is not"))
    };
    Some(Smtp {
        port: port.trim().parse().expect("AIQ_SMTP_PORT is a port number"),
        user: var("AIQ_SMTP_USER"),
        password: var("AIQ_SMTP_PASSWORD"),
        ca: var("AIQ_SMTP_CA"),
        maildir: PathBuf::from(var("AIQ_SMTP_MAILDIR")),
    })
}

macro_rules! require_smtp {
    () => {
        match smtp() {
            Some(s) => s,
            None => return,
        }
    };
}

/// The connector table: `allow` opens the outbound guard, `trust_ca` adds the server's
/// self-signed certificate to the trusted roots. Tenant `acme` has the right password as
/// `smtp-pw` and a wrong one as `smtp-pw-wrong`.
fn connectors(s: &Smtp, allow: &[&str], trust_ca: bool) -> Connectors {
    Connectors::builtin(
        &ConnectorSettings {
            extra_ca_files: if trust_ca { vec![s.ca.clone()] } else { vec![] },
            outbound: OutboundSettings {
                allow: allow.iter().map(|a| (*a).to_owned()).collect(),
            },
            ..Default::default()
        },
        common::store(&[
            ("acme", "smtp-pw", &s.password),
            ("acme", "smtp-pw-wrong", WRONG_PASSWORD),
        ]),
        None,
        &prometheus::Registry::new(),
    )
    .unwrap()
}

const LOOPBACK: &[&str] = &["127.0.0.0/8", "::1/128"];

/// A task in a run of its own, so every message gets its own Message-ID.
fn task(args: Value) -> TaskMessage {
    TaskMessage {
        step: StepId::new("notify.manager").unwrap(),
        ..common::task("acme", "email", args, 20_000)
    }
}

/// Arguments for a mail to `to` via the test server as `localhost` (the name its
/// certificate carries), logging in with the secret `password_secret`.
fn args(s: &Smtp, port: u16, password_secret: &str, to: Value) -> Value {
    json!({
        "smtp": {
            "host": "localhost",
            "port": port,
            "username": s.user,
            "password_secret": password_secret,
        },
        "from": "AutomateIQ <robot@automateiq.test>",
        "to": to,
        "subject": "connector test",
        "text": "plain body",
    })
}

fn error(outcome: &TaskOutcome) -> (ErrorClass, &str) {
    match outcome {
        TaskOutcome::Error { class, message } => {
            eprintln!("{class:?}: {message}");
            (*class, message.as_str())
        }
        TaskOutcome::Ok { output } => panic!("expected an error, got {output}"),
    }
}

/// The password, right or wrong, appears in no outcome, not even scrubbed.
fn assert_no_password(s: &Smtp, outcome: &TaskOutcome) {
    let text = serde_json::to_string(outcome).unwrap();
    assert!(!text.contains(&s.password), "password leaked: {text}");
    assert!(!text.contains(WRONG_PASSWORD), "password leaked: {text}");
    assert!(
        !text.contains("[redacted]"),
        "a password had to be scrubbed: {text}"
    );
}

/// The stored message with this Message-ID, and its sibling `.json`.
fn find_in_maildir(dir: &Path, message_id: &str) -> (String, Value) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "eml") {
                continue;
            }
            let Ok(eml) = std::fs::read_to_string(&path) else {
                continue;
            };
            if eml
                .lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("Message-ID: {message_id}")))
            {
                let meta = std::fs::read_to_string(path.with_extension("json")).unwrap();
                return (eml, serde_json::from_str(&meta).unwrap());
            }
        }
        assert!(
            Instant::now() < until,
            "no message with Message-ID {message_id} in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of a header in a stored message (first line only).
fn header<'a>(eml: &'a str, name: &str) -> Option<&'a str> {
    let head = eml.split("\r\n\r\n").next().unwrap_or("");
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn a_text_and_html_mail_goes_out_over_starttls_with_login() {
    let s = require_smtp!();
    let c = connectors(&s, LOOPBACK, true);
    let subject = format!("Quarterly report {}", RunId::random());
    let mut a = args(
        &s,
        s.port,
        "smtp-pw",
        json!(["Ann <ann@example.com>", "bob@example.com"]),
    );
    a["cc"] = json!("carol@example.com");
    a["bcc"] = json!(["dave@example.com"]);
    a["reply_to"] = json!("replies@automateiq.test");
    a["subject"] = json!(subject);
    a["html"] = json!("<p>html <b>body</b></p>");
    let t = task(a);
    let outcome = c.call(&t).await;
    assert_no_password(&s, &outcome);
    let TaskOutcome::Ok { output } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        output["accepted"],
        json!([
            "ann@example.com",
            "bob@example.com",
            "carol@example.com",
            "dave@example.com"
        ])
    );
    let response = output["response"].as_str().unwrap();
    assert!(response.starts_with("250 "), "{response}");
    let message_id = output["message_id"].as_str().unwrap();
    assert_eq!(
        message_id,
        format!("<aiq.{}.1.notify=2Emanager@automateiq.test>", t.run)
    );

    let (eml, meta) = find_in_maildir(&s.maildir, message_id);
    assert_eq!(header(&eml, "Subject"), Some(subject.as_str()));
    assert_eq!(
        header(&eml, "From"),
        Some("AutomateIQ <robot@automateiq.test>")
    );
    assert_eq!(
        header(&eml, "To"),
        Some("Ann <ann@example.com>, bob@example.com")
    );
    assert_eq!(header(&eml, "Cc"), Some("carol@example.com"));
    assert_eq!(header(&eml, "Reply-To"), Some("replies@automateiq.test"));
    assert_eq!(
        header(&eml, "Bcc"),
        None,
        "Bcc must not travel in the message"
    );
    assert!(!eml.contains("dave@example.com"), "{eml}");
    assert!(eml.contains("multipart/alternative"), "{eml}");
    assert!(
        eml.contains("text/plain") && eml.contains("plain body"),
        "{eml}"
    );
    assert!(
        eml.contains("text/html") && eml.contains("<b>body</b>"),
        "{eml}"
    );
    assert_eq!(meta["auth_user"], json!(s.user));
    assert_eq!(meta["mail_from"], json!("robot@automateiq.test"));
    assert_eq!(
        meta["rcpt_tos"],
        json!([
            "ann@example.com",
            "bob@example.com",
            "carol@example.com",
            "dave@example.com"
        ])
    );
    assert!(response.contains("stored as"), "{response}");
}

#[tokio::test]
async fn a_wrong_password_is_fatal_and_never_shown() {
    let s = require_smtp!();
    let c = connectors(&s, LOOPBACK, true);
    let outcome = c
        .call(&task(args(
            &s,
            s.port,
            "smtp-pw-wrong",
            json!("ann@example.com"),
        )))
        .await;
    assert_no_password(&s, &outcome);
    let (class, message) = error(&outcome);
    assert_eq!(class, ErrorClass::Fatal, "{message}");
    assert!(message.contains("login as \"aiq\" failed"), "{message}");
    assert!(message.contains("535"), "{message}");
}

#[tokio::test]
async fn a_refused_recipient_is_fatal_and_a_deferred_one_retryable() {
    let s = require_smtp!();
    let c = connectors(&s, LOOPBACK, true);
    let outcome = c
        .call(&task(args(
            &s,
            s.port,
            "smtp-pw",
            json!(["ann@example.com", "nobody@reject.invalid"]),
        )))
        .await;
    assert_no_password(&s, &outcome);
    let (class, message) = error(&outcome);
    assert_eq!(class, ErrorClass::Fatal, "{message}");
    assert!(
        message.contains("the recipient nobody@reject.invalid was refused")
            && message.contains("550"),
        "{message}"
    );

    let outcome = c
        .call(&task(args(
            &s,
            s.port,
            "smtp-pw",
            json!("later@tempfail.invalid"),
        )))
        .await;
    assert_no_password(&s, &outcome);
    let (class, message) = error(&outcome);
    assert_eq!(class, ErrorClass::Retryable, "{message}");
    assert!(
        message.contains("later@tempfail.invalid") && message.contains("451"),
        "{message}"
    );
}

#[tokio::test]
async fn nothing_listening_is_retryable() {
    let s = require_smtp!();
    let c = connectors(&s, LOOPBACK, true);
    let mut a = args(&s, 1, "smtp-pw", json!("ann@example.com"));
    a["smtp"]["host"] = json!("127.0.0.1");
    let outcome = c.call(&task(a)).await;
    assert_no_password(&s, &outcome);
    let (class, message) = error(&outcome);
    assert_eq!(class, ErrorClass::Retryable, "{message}");
    assert!(message.contains("127.0.0.1:1: cannot connect"), "{message}");
}

#[tokio::test]
async fn an_untrusted_certificate_is_fatal() {
    let s = require_smtp!();
    let c = connectors(&s, LOOPBACK, false);
    let outcome = c
        .call(&task(args(&s, s.port, "smtp-pw", json!("ann@example.com"))))
        .await;
    assert_no_password(&s, &outcome);
    let (class, message) = error(&outcome);
    assert_eq!(class, ErrorClass::Fatal, "{message}");
    assert!(
        message.contains("STARTTLS failed") && message.contains("certificate"),
        "{message}"
    );
    assert!(message.contains("connectors.extra_ca_files"), "{message}");
}

#[tokio::test]
async fn the_outbound_guard_refuses_loopback_by_default() {
    let s = require_smtp!();
    let c = connectors(&s, &[], true);
    let outcome = c
        .call(&task(args(&s, s.port, "smtp-pw", json!("ann@example.com"))))
        .await;
    assert_no_password(&s, &outcome);
    let (class, message) = error(&outcome);
    assert_eq!(class, ErrorClass::Fatal, "{message}");
    assert!(
        message.starts_with("email connector: refused to connect to")
            && message.contains("(localhost)")
            && message.contains("loopback"),
        "{message}"
    );
}

#[tokio::test]
async fn bad_arguments_are_fatal_and_name_the_field() {
    let s = require_smtp!();
    let c = connectors(&s, LOOPBACK, true);
    let cases: Vec<(Value, &str)> = vec![
        (
            args(
                &s,
                s.port,
                "smtp-pw",
                json!(["ann@example.com", "not an address"]),
            ),
            "email connector: `args.to[1]`: \"not an address\" is not an email address",
        ),
        (
            {
                let mut a = args(&s, s.port, "smtp-pw", json!("ann@example.com"));
                a["cc"] = json!("x@");
                a
            },
            "email connector: `args.cc`: \"x@\" is not an email address",
        ),
        (
            {
                let mut a = args(&s, s.port, "smtp-pw", json!("ann@example.com"));
                a["smtp"]["tls"] = json!("none");
                a
            },
            "email connector: `args.smtp.tls`: credentials are never sent over an \
             unencrypted connection",
        ),
        (
            {
                let mut a = args(&s, s.port, "smtp-pw", json!("ann@example.com"));
                a.as_object_mut().unwrap().remove("text");
                a
            },
            "email connector: `args`: give `text`, `html` or both",
        ),
        (
            {
                let mut a = args(&s, s.port, "smtp-pw", json!("ann@example.com"));
                a["smtp"]["password"] = json!("inline");
                a
            },
            "email connector: `args.smtp.password`: unknown field `password`",
        ),
        (
            args(&s, s.port, "no-such-secret", json!("ann@example.com")),
            "args.smtp.password_secret: secret \"no-such-secret\" is not set",
        ),
    ];
    for (a, expected) in cases {
        let outcome = c.call(&task(a)).await;
        assert_no_password(&s, &outcome);
        let (class, message) = error(&outcome);
        assert_eq!(class, ErrorClass::Fatal, "{message}");
        assert!(
            message.starts_with(expected),
            "{message}\nexpected: {expected}"
        );
    }
}

#[tokio::test]
async fn implicit_tls_against_a_starttls_port_is_retryable() {
    let s = require_smtp!();
    let c = connectors(&s, LOOPBACK, true);
    let mut a = args(&s, s.port, "smtp-pw", json!("ann@example.com"));
    a["smtp"]["tls"] = json!("tls");
    let outcome = c.call(&task(a)).await;
    assert_no_password(&s, &outcome);
    let (class, message) = error(&outcome);
    assert_eq!(class, ErrorClass::Retryable, "{message}");
    assert!(message.contains("cannot connect"), "{message}");
}
