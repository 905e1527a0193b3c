//! Notifications end to end in a real `aiq serve`: a workflow that asks to be told of
//! failed runs gets, for a run that failed, a webhook signed with its tenant's secret
//! (checked here with an independent HMAC) and retried while the receiver answers 500,
//! and an email through the real SMTP server of `scripts/services`; each attempt shows
//! in the run's history; a run that succeeded tells nobody.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiq_testkit::{CQL, KAFKA, SMTP, require_service};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use support::{Deployment, wait_until};

const DEV_SECRET: &str = "notifications-test-secret-not-for-production";
const TENANT: &str = "acme";
const HOOK_SECRET: &str = "the-hook-signing-secret-value";

/// One POST as received: its path, headers (lower-case names) and body.
type Received = Arc<Mutex<Vec<(String, BTreeMap<String, String>, Vec<u8>)>>>;

/// A receiver on loopback that answers 500 to the first `fail_first` POSTs to `/hook`
/// and 200 after, and 500 to anything else (the workflow's failing step).
fn receiver(fail_first: usize) -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Received = Arc::default();
    let kept = Arc::clone(&got);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("?").to_owned();
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() {
                    break;
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let mut all = kept.lock().unwrap();
            let hooks_before = all.iter().filter(|(p, _, _)| p == "/hook").count();
            all.push((path.clone(), headers, body));
            drop(all);
            let ok = path == "/hook" && hooks_before >= fail_first;
            let answer: &[u8] = if ok {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            } else {
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\noops"
            };
            let _ = s.write_all(answer);
        }
    });
    (port, got)
}

fn signature(secret: &str, ts: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn a_failed_run_is_told_by_a_signed_webhook_retried_until_delivered_and_by_email() {
    let brokers = require_service!(KAFKA);
    let contact_points = require_service!(CQL);
    let smtp_port = require_service!(SMTP);
    let var = |n: &str| std::env::var(n).unwrap_or_else(|_| panic!("{n} is not set"));
    let (smtp_user, smtp_password, smtp_ca, maildir) = (
        var("AIQ_SMTP_USER"),
        var("AIQ_SMTP_PASSWORD"),
        var("AIQ_SMTP_CA"),
        PathBuf::from(var("AIQ_SMTP_MAILDIR")),
    );
    let keys = std::env::temp_dir().join(aiq_testkit::unique("notify-keys"));
    let key = format!(
        "k1 {}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::write(&keys, format!("{key}\n")).unwrap();
    let d = Deployment::start(
        "notify",
        &brokers,
        &contact_points,
        DEV_SECRET,
        &format!(
            "[connectors]\nextra_ca_files = [\"{smtp_ca}\"]\n\n[connectors.outbound]\nallow = [\"127.0.0.0/8\", \"::1/128\"]\n\n[secrets]\nkey_file = \"{}\"\n",
            keys.display()
        ),
    );
    let admin = d.token(TENANT, "tenant_admin");
    for (name, value) in [
        ("hook-key", HOOK_SECRET),
        ("smtp-pw", smtp_password.as_str()),
    ] {
        let body = json!({ "value": value }).to_string();
        let (status, answer) = d.call(
            "PUT",
            &format!("/v1/secrets/{name}"),
            &admin,
            Some(("application/json", &body)),
        );
        assert!(
            status == 200 || status == 201,
            "secret {name}: {status} {answer}"
        );
    }
    // The receiver refuses the first two deliveries.
    let (port, got) = receiver(2);
    let told = format!(
        r#"
id: told
notify:
  on: [failed]
  webhook: {{ url: "http://127.0.0.1:{port}/hook", secret: hook-key }}
  email:
    smtp: {{ host: localhost, port: {smtp_port}, username: "{smtp_user}", password_secret: smtp-pw }}
    from: "AutomateIQ <robot@automateiq.test>"
    to: ["ops@example.test"]
steps:
  - id: call
    task:
      connector: http
      args: {{ method: GET, url: "http://127.0.0.1:{port}/fail" }}
      retry: {{ max_attempts: 1 }}
"#
    );
    let quiet = format!(
        "id: quiet\nnotify:\n  on: [failed]\n  webhook: {{ url: \"http://127.0.0.1:{port}/hook\" }}\nsteps:\n  - id: hi\n    task: {{ connector: noop }}\n"
    );
    for doc in [&told, &quiet] {
        let (status, body) = d.call(
            "POST",
            "/v1/workflows",
            &admin,
            Some(("application/yaml", doc)),
        );
        assert!(status == 201 || status == 200, "{status} {body}");
    }
    let start = |wf: &str| {
        let (status, body) = d.call(
            "POST",
            &format!("/v1/workflows/{wf}/runs"),
            &admin,
            Some(("application/json", "{}")),
        );
        assert_eq!(status, 202, "{body}");
        body["run_id"].as_str().unwrap().to_owned()
    };
    let quiet_run = start("quiet");
    let run = start("told");

    // Three attempts at the webhook (500, 500, 200), one email.
    let hooks = || {
        got.lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == "/hook")
            .cloned()
            .collect::<Vec<_>>()
    };
    wait_until("three webhook deliveries", Duration::from_secs(120), || {
        hooks().len() >= 3
    });
    std::thread::sleep(Duration::from_secs(3));
    let delivered = hooks();
    assert_eq!(
        delivered.len(),
        3,
        "no delivery after the one that was taken"
    );
    for (_, headers, body) in &delivered {
        let ts = headers.get("x-aiq-timestamp").expect("a timestamp");
        assert_eq!(
            headers.get("x-aiq-signature").map(String::as_str),
            Some(signature(HOOK_SECRET, ts, body).as_str()),
            "the signature checks out with the tenant's secret"
        );
        let sent: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(sent["type"], "run.ended");
        assert_eq!(sent["run_id"], run.as_str());
        assert_eq!(sent["status"], "failed");
        assert_eq!(sent["error"]["step"], "call");
    }
    assert!(
        !delivered
            .iter()
            .any(|(_, _, b)| String::from_utf8_lossy(b).contains(&quiet_run))
    );

    // Each attempt is in the run's history.
    let run_path = format!("/v1/runs/{run}");
    let mut detail = Value::Null;
    wait_until(
        "the deliveries in the history",
        Duration::from_secs(60),
        || {
            detail = d.call("GET", &run_path, &admin, None).1;
            let steps = detail["steps"].as_array().cloned().unwrap_or_default();
            steps
                .iter()
                .filter(|s| s["step"] == "aiq.notify.webhook")
                .count()
                == 3
                && steps.iter().any(|s| s["step"] == "aiq.notify.email")
        },
    );
    let outcomes: Vec<(u64, String)> = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == "aiq.notify.webhook")
        .map(|s| {
            (
                s["attempt"].as_u64().unwrap(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (1, "retrying".to_owned()),
            (2, "retrying".to_owned()),
            (3, "succeeded".to_owned())
        ],
        "{detail}"
    );
    let email = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "aiq.notify.email")
        .unwrap();
    assert_eq!(email["status"], "succeeded", "{email}");
    // The email itself, in the server's maildir.
    let mut found = false;
    wait_until("the email in the maildir", Duration::from_secs(30), || {
        found = support::texts_under(&maildir)
            .iter()
            .any(|text| text.contains(&run) && text.contains("ops@example.test"));
        found
    });
}
