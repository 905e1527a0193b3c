//! The web console in a real browser: Debian's headless Chromium, driven over WebDriver
//! by chromedriver (`scripts/services up chromedriver`), against a real `aiq serve` with
//! Kafka, Cassandra and an SMTP server. A tenant admin signs in with an API key, runs a
//! workflow from the form its `input_schema` generates and sees it succeed on the run's
//! timeline; redrives a failed run from its page; builds a two-step workflow (an HTTP
//! call, then an email) and a decision with the form builder and runs them; sets who is
//! told when a workflow's runs end; finds nothing of another tenant by URL; and, as a
//! platform admin, makes a tenant and changes its plan. axe-core checks every page; each is saved as a screenshot under
//! `target/tmp/console-screenshots/`.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use aiq_testkit::{CQL, KAFKA, OIDC_A, SMTP, require_service};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use support::{Deployment, wait_until};

const DEV_SECRET: &str = "console-test-secret-not-for-production";
const JSON: &str = "application/json";

const GREET: &str = r#"
id: greet
name: Greeting
input_schema:
  type: object
  required: [name]
  properties:
    name: { type: string, title: Name, description: Who to greet }
    times: { type: integer, title: Times }
    loud: { type: boolean, title: Loud }
steps:
  - id: hello
    task:
      connector: noop
      args:
        output: { greeting: "hello ${ input.name }" }
"#;

fn flaky(port: u16) -> String {
    format!(
        "id: flaky\nsteps:\n  - id: call\n    task:\n      connector: http\n      args: {{ method: GET, url: \"http://127.0.0.1:{port}/flaky\" }}\n      retry: {{ max_attempts: 1 }}\n"
    )
}

/// An HTTP target that answers 500 until fixed, counting the calls.
fn target() -> (u16, Arc<AtomicBool>, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fixed = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU32::new(0));
    let (f, c) = (Arc::clone(&fixed), Arc::clone(&calls));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            c.fetch_add(1, Ordering::SeqCst);
            let answer: &[u8] = if f.load(Ordering::SeqCst) {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"ok\":true}"
            } else {
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\noops"
            };
            let _ = s.write_all(answer);
        }
    });
    (port, fixed, calls)
}

/// A tenant admin API key of `tenant`.
fn admin_key(d: &Deployment, tenant: &str) -> String {
    let token = d.token(tenant, "tenant_admin");
    let body = json!({"role": "tenant_admin", "label": "console test"}).to_string();
    let (status, created) = d.call("POST", "/v1/api-keys", &token, Some((JSON, &body)));
    assert_eq!(status, 201, "{created}");
    created["key"].as_str().unwrap().to_owned()
}

fn register(d: &Deployment, key: &str, doc: &str) {
    let (status, body) = d.call(
        "POST",
        "/v1/workflows",
        key,
        Some(("application/yaml", doc)),
    );
    assert_eq!(status, 201, "{body}");
}

async fn browser(webdriver: &str) -> Client {
    let chromium = std::env::var("AIQ_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1366,900"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(webdriver)
        .await
        .unwrap()
}

/// The element `css` once it appears; on a timeout, the page as it was and what it
/// showed, saved beside the screenshots.
async fn wait_css(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e,
        Err(e) => {
            shot(c, "failure").await;
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let main = match c.find(Locator::Css("body")).await {
                Ok(b) => b.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            panic!("no {css} within 60 s at {url}: {e}\n--- the page:\n{main}");
        }
    }
}

/// The text of the element `css` once it holds `needle`. Found and read again until
/// then: a page drawn anew after the element was found leaves it stale.
async fn wait_text(c: &Client, css: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(text) = e.text().await
        {
            if text.contains(needle) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shot(c, "failure").await;
    panic!("{css} never held {needle:?} within 60 s; last: {last:?}");
}

/// axe-core's verdict on the page in view: no violation of serious or critical impact.
async fn accessible(c: &Client, axe: &str, name: &str) {
    let loaded = c
        .execute("return typeof axe !== 'undefined'", vec![])
        .await
        .unwrap();
    if loaded != Value::Bool(true) {
        c.execute(axe, vec![]).await.unwrap();
    }
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { resultTypes: ['violations'] })
               .then(r => done(r.violations.map(v => ({
                   id: v.id, impact: v.impact, help: v.help,
                   nodes: v.nodes.map(n => n.target.join(' ')) }))))
               .catch(e => done([{ id: 'axe-failed', impact: 'critical', help: String(e) }]));",
            vec![],
        )
        .await
        .unwrap();
    let violations = found.as_array().unwrap();
    let grave: Vec<&Value> = violations
        .iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .collect();
    assert!(
        grave.is_empty(),
        "{name}: serious or critical accessibility violations among: {found}"
    );
}

async fn shot(c: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn heading(c: &Client) -> String {
    c.find(Locator::Css("main h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Types `text` into the element `css` names.
async fn type_into(c: &Client, css: &str, text: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .send_keys(text)
        .await
        .unwrap();
}

/// Clicks the element `css` names.
async fn click_css(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn click_button(c: &Client, label: &str) {
    c.find(Locator::XPath(&format!(
        "//button[normalize-space()='{label}']"
    )))
    .await
    .unwrap_or_else(|e| panic!("no button {label}: {e}"))
    .click()
    .await
    .unwrap();
}

#[test]
fn a_tenant_admin_runs_redrives_and_sees_only_its_own_tenant_in_a_real_browser() {
    let brokers = require_service!(KAFKA);
    let contact_points = require_service!(CQL);
    let webdriver = require_service!("AIQ_WEBDRIVER_URL");
    let axe = std::fs::read_to_string(require_service!("AIQ_AXE_JS")).unwrap();
    let smtp_port = require_service!(SMTP);
    let var = |n: &str| std::env::var(n).unwrap_or_else(|_| panic!("{n} is not set"));
    let (smtp_user, smtp_password, smtp_ca, maildir) = (
        var("AIQ_SMTP_USER"),
        var("AIQ_SMTP_PASSWORD"),
        var("AIQ_SMTP_CA"),
        std::path::PathBuf::from(var("AIQ_SMTP_MAILDIR")),
    );
    let d = Deployment::start(
        "console",
        &brokers,
        &contact_points,
        DEV_SECRET,
        &format!(
            "[connectors]\nextra_ca_files = [\"{smtp_ca}\"]\n\n[connectors.outbound]\nallow = [\"127.0.0.0/8\", \"::1/128\"]\n"
        ),
    );
    let (port, fixed, calls) = target();
    let acme = admin_key(&d, "acme");
    let globex = admin_key(&d, "globex");
    register(&d, &acme, GREET);
    register(&d, &acme, &flaky(port));
    // The SMTP password, as a secret the builder offers by name.
    let body = json!({ "value": smtp_password }).to_string();
    let (status, answer) = d.call("PUT", "/v1/secrets/smtp-pw", &acme, Some((JSON, &body)));
    assert!(status == 200 || status == 201, "{status} {answer}");
    register(&d, &globex, GREET);
    register(
        &d,
        &globex,
        "id: globex-only\nsteps:\n  - id: s\n    task: { connector: noop }\n",
    );
    // Another tenant's run, and acme's run that fails (the target answers 500).
    let start = |key: &str, wf: &str, input: Value| {
        let body = json!({ "input": input }).to_string();
        let (status, r) = d.call(
            "POST",
            &format!("/v1/workflows/{wf}/runs"),
            key,
            Some((JSON, &body)),
        );
        assert_eq!(status, 202, "{r}");
        r["run_id"].as_str().unwrap().to_owned()
    };
    let secret_name = format!("globex-{}", uuid::Uuid::new_v4().simple());
    let theirs = start(&globex, "greet", json!({ "name": secret_name }));
    let failing = start(&acme, "flaky", json!({}));
    wait_until("the flaky run failing", Duration::from_secs(60), || {
        d.call("GET", &format!("/v1/runs/{failing}"), &acme, None).1["status"] == "failed"
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = browser(&webdriver).await;
        let base = d.api.clone();

        // Signing in: the page asks first, then lands on the runs.
        c.goto(&format!("{base}/")).await.unwrap();
        wait_css(&c, "#api-key").await;
        assert_eq!(heading(&c).await, "Sign in");
        shot(&c, "signin").await;
        accessible(&c, &axe, "signin").await;
        type_into(&c, "#api-key", &acme).await;
        click_button(&c, "Sign in").await;
        wait_css(&c, "#runs tbody tr").await;
        assert_eq!(heading(&c).await, "Runs");
        let who = c
            .find(Locator::Css("#who"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            who.contains("acme") && who.contains("tenant_admin"),
            "{who}"
        );
        let listed = c
            .find(Locator::Css("#runs"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(listed.contains(&failing[..8]), "{listed}");
        assert!(
            !listed.contains(&theirs[..8]),
            "another tenant's run listed: {listed}"
        );
        shot(&c, "runs").await;
        accessible(&c, &axe, "runs").await;

        // The workflows, then one drawn as a graph with its generated input form.
        c.goto(&format!("{base}/#/workflows")).await.unwrap();
        wait_css(&c, "a[href='#/workflows/greet']").await;
        shot(&c, "workflows").await;
        accessible(&c, &axe, "workflows").await;
        let text = c
            .find(Locator::Css("main"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains("globex-only"), "{text}");
        click_css(&c, "a[href='#/workflows/greet']").await;
        wait_css(&c, "#graph svg").await;
        let graph = c.find(Locator::Css("#graph svg")).await.unwrap();
        assert!(graph.text().await.unwrap().contains("hello"));
        // The form follows the schema: a text field, a number, a yes/no; a missing
        // required field is named, and nothing starts.
        wait_css(&c, "#run-input-name").await;
        assert_eq!(
            c.find(Locator::Css("#run-input-times"))
                .await
                .unwrap()
                .attr("type")
                .await
                .unwrap()
                .as_deref(),
            Some("number")
        );
        shot(&c, "workflow").await;
        accessible(&c, &axe, "workflow").await;
        c.find(Locator::Css("#run-input-name"))
            .await
            .unwrap()
            .clear()
            .await
            .unwrap();
        c.execute(
            "document.getElementById('run-input-name').removeAttribute('required')",
            vec![],
        )
        .await
        .unwrap();
        click_button(&c, "Run v1").await;
        let err = wait_css(&c, "#run-now .error").await;
        assert!(err.text().await.unwrap().contains("Name: required"));
        type_into(&c, "#run-input-name", "Ada").await;
        type_into(&c, "#run-input-times", "2").await;
        click_button(&c, "Run v1").await;
        // The run's page: it succeeds on the timeline.
        wait_css(&c, "#run-status[data-status='succeeded']").await;
        wait_css(
            &c,
            "#timeline tr[data-step='hello'][data-status='succeeded']",
        )
        .await;
        shot(&c, "run").await;
        accessible(&c, &axe, "run").await;
        let url = c.current_url().await.unwrap();
        let run = url
            .fragment()
            .unwrap()
            .trim_start_matches("/runs/")
            .to_owned();
        let (_, detail) = d.call("GET", &format!("/v1/runs/{run}"), &acme, None);
        assert_eq!(
            detail["input"],
            json!({"name": "Ada", "times": 2, "loud": false})
        );
        assert_eq!(detail["output"]["greeting"], "hello Ada");
        assert_eq!(detail["trigger_source"], "manual", "{detail}");

        // The failed run, redriven from its page once the target is fixed.
        c.goto(&format!("{base}/#/runs/{failing}")).await.unwrap();
        wait_css(&c, "#run-status[data-status='failed']").await;
        wait_css(&c, "#timeline tr[data-step='call'][data-status='failed']").await;
        shot(&c, "run-failed").await;
        accessible(&c, &axe, "run-failed").await;
        fixed.store(true, Ordering::SeqCst);
        let before = calls.load(Ordering::SeqCst);
        click_button(&c, "Redrive").await;
        wait_css(&c, "#run-status[data-status='succeeded']").await;
        assert_eq!(calls.load(Ordering::SeqCst), before + 1, "one call again");
        assert_eq!(
            d.call("GET", &format!("/v1/runs/{failing}"), &acme, None).1["status"],
            "succeeded"
        );

        // The builder: a two-step workflow (an HTTP call, then an email) from forms.
        c.goto(&format!("{base}/#/workflows")).await.unwrap();
        wait_css(&c, "#new-workflow").await.click().await.unwrap();
        wait_css(&c, "#step-1-url").await;
        let fill = |css: &'static str, text: String| {
            let c = c.clone();
            async move {
                let e = c.find(Locator::Css(css)).await.unwrap();
                e.clear().await.unwrap();
                e.send_keys(&text).await.unwrap();
            }
        };
        fill("#wf-id", "notify-order".into()).await;
        fill("#wf-name", "Order notice".into()).await;
        click_button(&c, "Add an input field").await;
        wait_css(&c, "#in-name-1").await;
        fill("#step-1-url", format!("http://127.0.0.1:{port}/order")).await;
        click_button(&c, "Add a step").await;
        wait_css(&c, "#step-connector-2").await;
        c.find(Locator::Css("#step-connector-2"))
            .await
            .unwrap()
            .select_by_value("email")
            .await
            .unwrap();
        wait_css(&c, "#step-2-smtp-host").await;
        fill("#step-2-smtp-host", "localhost".into()).await;
        fill("#step-2-smtp-port", smtp_port.clone()).await;
        fill("#step-2-smtp-username", smtp_user.clone()).await;
        c.find(Locator::Css("#step-2-smtp-password_secret"))
            .await
            .unwrap()
            .select_by_value("smtp-pw")
            .await
            .unwrap();
        fill("#step-2-from", "AutomateIQ <robot@automateiq.test>".into()).await;
        fill("#step-2-to", "orders@example.test".into()).await;
        fill("#step-2-subject", "Order ${ input.order }".into()).await;
        fill(
            "#step-2-text",
            "Order ${ input.order } was called in.".into(),
        )
        .await;
        // The document beside the form is what will be registered.
        let doc: Value = serde_json::from_str(
            &c.find(Locator::Css("#document"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(doc["id"], "notify-order", "{doc}");
        assert_eq!(doc["input_schema"]["required"], json!(["order"]), "{doc}");
        assert_eq!(doc["steps"][0]["task"]["connector"], "http", "{doc}");
        assert_eq!(doc["steps"][1]["task"]["connector"], "email", "{doc}");
        assert_eq!(
            doc["steps"][1]["task"]["args"]["smtp"]["password_secret"],
            "smtp-pw"
        );
        assert_eq!(
            doc["steps"][1]["task"]["args"]["to"],
            json!(["orders@example.test"])
        );
        assert_eq!(doc["steps"][1]["task"]["retry"]["max_attempts"], 3);
        shot(&c, "build").await;
        accessible(&c, &axe, "build").await;
        click_button(&c, "Register the workflow").await;
        // Registered: its page, drawn, with the form its input asks for.
        wait_css(&c, "#run-input-order").await;
        let graph = c
            .find(Locator::Css("#graph svg"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            graph.contains("step-1") && graph.contains("step-2"),
            "{graph}"
        );
        fill("#run-input-order", "A-17".into()).await;
        click_button(&c, "Run v1").await;
        wait_css(&c, "#run-status[data-status='succeeded']").await;
        wait_css(
            &c,
            "#timeline tr[data-step='step-2'][data-status='succeeded']",
        )
        .await;
        shot(&c, "built-run").await;
        let mut mailed = false;
        wait_until(
            "the order email in the maildir",
            Duration::from_secs(30),
            || {
                mailed = support::texts_under(&maildir)
                    .iter()
                    .any(|t| t.contains("Order A-17") && t.contains("orders@example.test"));
                mailed
            },
        );

        // A decision: an order over 100 goes to `big`, any other to `small`, which
        // ends the run. The builder's first step gives way to the decision.
        let select = |css: &'static str, value: &'static str| {
            let c = c.clone();
            async move {
                c.find(Locator::Css(css))
                    .await
                    .unwrap()
                    .select_by_value(value)
                    .await
                    .unwrap();
            }
        };
        c.goto(&format!("{base}/#/build")).await.unwrap();
        wait_css(&c, "#step-1-url").await;
        fill("#wf-id", "route-order".into()).await;
        click_button(&c, "Add an input field").await;
        fill("#in-name-1", "amount".into()).await;
        select("#in-type-1", "integer").await;
        click_button(&c, "Remove step 1").await;
        click_button(&c, "Add a decision").await;
        wait_css(&c, "#case-1-1-field").await;
        click_button(&c, "Add a step").await;
        select("#step-connector-2", "noop").await;
        fill("#step-id-2", "small".into()).await;
        select("#step-then-2", "end").await;
        click_button(&c, "Add a step").await;
        select("#step-connector-3", "noop").await;
        fill("#step-id-3", "big".into()).await;
        select("#case-1-1-field", "input.amount").await;
        select("#case-1-1-op", ">").await;
        fill("#case-1-1-value", "100".into()).await;
        select("#case-1-1-next", "step:big").await;
        select("#step-otherwise-1", "step:small").await;
        let cel = wait_css(&c, "#case-1-1-cel").await.text().await.unwrap();
        assert_eq!(cel, "Condition: input.amount > 100");
        let doc: Value = serde_json::from_str(
            &c.find(Locator::Css("#document"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            doc["steps"][0],
            json!({"id": "decide-1", "choice": {
                "cases": [{"when": "input.amount > 100", "next": "big"}],
                "default": "small"}}),
            "{doc}"
        );
        assert_eq!(doc["steps"][1]["id"], "small", "{doc}");
        assert_eq!(doc["steps"][1]["end"], true, "{doc}");
        assert_eq!(doc["steps"][2]["id"], "big", "{doc}");
        shot(&c, "build-decision").await;
        accessible(&c, &axe, "build-decision").await;
        click_button(&c, "Register the workflow").await;
        wait_css(&c, "#run-input-amount").await;
        fill("#run-input-amount", "500".into()).await;
        click_button(&c, "Run v1").await;
        wait_css(&c, "#run-status[data-status='succeeded']").await;
        wait_css(&c, "#timeline tr[data-step='big'][data-status='succeeded']").await;
        let timeline = c
            .find(Locator::Css("#timeline"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!timeline.contains("small"), "{timeline}");

        // The text editor: an error marked at its line as it is typed, then fixed and
        // registered.
        c.goto(&format!("{base}/#/editor")).await.unwrap();
        wait_css(&c, "#source").await;
        fill(
            "#source",
            "id: typed\nsteps:\n  - id: a\n    task: { connector: nope }\n".into(),
        )
        .await;
        let marked = wait_css(&c, "#editor-errors li[data-line='4']").await;
        assert!(
            marked
                .text()
                .await
                .unwrap()
                .contains("/steps/0/task/connector")
        );
        shot(&c, "editor").await;
        accessible(&c, &axe, "editor").await;
        fill(
            "#source",
            "id: typed\nsteps:\n  - id: a\n    task: { connector: noop }\n".into(),
        )
        .await;
        wait_css(&c, "#editor-state.ok").await;
        click_button(&c, "Register").await;
        wait_css(&c, "#graph svg").await;
        assert_eq!(heading(&c).await, "Workflow typed");

        // Insights: the ready reports as charts, and SQL answered as a table.
        c.goto(&format!("{base}/#/insights")).await.unwrap();
        wait_css(&c, "section[aria-label='Runs started per hour'] figure svg").await;
        wait_css(
            &c,
            "section[aria-label='Success rate and p95 by workflow'] figure svg",
        )
        .await;
        click_button(&c, "Run the query").await;
        let answer = wait_css(&c, "#sql-result table")
            .await
            .text()
            .await
            .unwrap();
        assert!(
            answer.contains("greet") && answer.contains("succeeded"),
            "{answer}"
        );
        assert!(!answer.contains("globex-only"), "{answer}");
        shot(&c, "insights").await;
        accessible(&c, &axe, "insights").await;

        // Administration: a key made here is shown once and works; the secrets by name.
        c.goto(&format!("{base}/#/admin")).await.unwrap();
        wait_css(&c, "#api-keys").await;
        let names = wait_css(&c, "#secret-names").await.text().await.unwrap();
        assert!(names.contains("smtp-pw"), "{names}");
        fill("#key-label", "made in the console".into()).await;
        click_button(&c, "Make a key").await;
        let made = wait_css(&c, "#new-key").await.text().await.unwrap();
        let (status, me) = d.call("GET", "/v1/me", made.trim(), None);
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["tenant"], "acme");
        assert_eq!(me["role"], "user");
        shot(&c, "admin").await;
        accessible(&c, &axe, "admin").await;
        // Who is told when greet's runs end: saved as greet's next version.
        fill("#notify-url-greet", format!("http://127.0.0.1:{port}/told")).await;
        click_button(&c, "Save for greet").await;
        let mut told = Value::Null;
        wait_until("greet's notify saved", Duration::from_secs(20), || {
            told = d
                .call("GET", "/v1/workflows/greet/versions/2", &acme, None)
                .1;
            told["definition"]["notify"]["webhook"]["url"].is_string()
        });
        assert_eq!(
            told["definition"]["notify"]["webhook"]["url"],
            format!("http://127.0.0.1:{port}/told")
        );
        assert_eq!(told["definition"]["notify"]["on"], json!(["failed"]));
        assert_eq!(told["definition"]["steps"][0]["id"], "hello", "{told}");

        // Another tenant's run and workflow by URL: nothing, as the API says.
        c.goto(&format!("{base}/#/runs/{theirs}")).await.unwrap();
        wait_css(&c, "#not-found").await;
        let page = c.source().await.unwrap();
        assert!(!page.contains(&secret_name), "another tenant's input shown");
        c.goto(&format!("{base}/#/workflows/globex-only"))
            .await
            .unwrap();
        wait_css(&c, "#not-found").await;

        c.goto(&format!("{base}/#/dead-letters")).await.unwrap();
        wait_css(&c, "main table").await;
        assert_eq!(heading(&c).await, "Dead letters");
        shot(&c, "dead-letters").await;
        accessible(&c, &axe, "dead-letters").await;

        // Signing out forgets the key: the next view asks again.
        click_button(&c, "Sign out").await;
        wait_css(&c, "#api-key").await;
        c.goto(&format!("{base}/#/runs")).await.unwrap();
        wait_css(&c, "#api-key").await;

        // A platform admin, signed in with a token: makes a tenant (its first key shown
        // once, and working) and changes its plan.
        type_into(&c, "#token", &d.token("ops", "platform_admin")).await;
        click_button(&c, "Sign in").await;
        wait_css(&c, "#runs").await;
        c.goto(&format!("{base}/#/admin")).await.unwrap();
        wait_css(&c, "#new-tenant-id").await;
        fill("#new-tenant-id", "initech".into()).await;
        fill("#new-tenant-name", "Initech".into()).await;
        click_button(&c, "Make the tenant").await;
        let first = wait_css(&c, "#new-tenant-key").await.text().await.unwrap();
        let (status, me) = d.call("GET", "/v1/me", first.trim(), None);
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["tenant"], "initech");
        assert_eq!(me["role"], "tenant_admin");
        wait_css(&c, "#plan-initech-trigger_per_second").await;
        fill("#plan-initech-trigger_per_second", "7".into()).await;
        fill("#plan-initech-allowed_connectors", "http, noop".into()).await;
        click_button(&c, "Save the plan of initech").await;
        let ops = d.token("ops", "platform_admin");
        let mut plan = Value::Null;
        wait_until("initech's plan saved", Duration::from_secs(20), || {
            plan = d.call("GET", "/v1/tenants/initech", &ops, None).1["plan"].clone();
            plan["trigger_per_second"] == 7
        });
        assert_eq!(
            plan["allowed_connectors"],
            json!(["http", "noop"]),
            "{plan}"
        );
        shot(&c, "admin-platform").await;
        accessible(&c, &axe, "admin-platform").await;
        c.close().await.unwrap();
    });
}

/// A person signs in at the deployment's OpenID provider (issuer a of `scripts/services
/// up oidc`, its development login and consent pages) and comes back signed in as the
/// tenant and role the provider's claims name; a sign-in that comes back with a forged
/// state is refused by name.
#[test]
fn a_person_signs_in_at_the_deployments_openid_provider() {
    let brokers = require_service!(KAFKA);
    let contact_points = require_service!(CQL);
    let webdriver = require_service!("AIQ_WEBDRIVER_URL");
    let issuer = require_service!(OIDC_A);
    let axe = std::fs::read_to_string(require_service!("AIQ_AXE_JS")).unwrap();
    let jwks = format!("{issuer}/jwks");
    let d = Deployment::start_with_env(
        "consoleoidc",
        &brokers,
        &contact_points,
        DEV_SECRET,
        r#"
[ingest.jwt_claims]
tenant = "org"
tenants = { "org-acme" = "acme" }
role = "groups"
roles = { "aiq-admins" = "tenant_admin", "everyone" = "user" }
"#,
        &[
            ("AIQ_INGEST_JWKS", &jwks),
            ("AIQ_INGEST_JWT_ISSUER", &issuer),
            ("AIQ_INGEST_ALLOW_DEV_TOKENS_WITH_JWKS", "true"),
            ("AIQ_INGEST_CONSOLE_CLIENT_ID", "aiq-console"),
            ("AIQ_INGEST_CONSOLE_SCOPE", "openid api"),
            ("AIQ_INGEST_CONSOLE_RESOURCE", "urn:aiq:api"),
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = browser(&webdriver).await;
        let base = d.api.clone();
        c.goto(&format!("{base}/")).await.unwrap();
        wait_css(&c, "#sign-in-provider").await;
        shot(&c, "signin-provider").await;
        accessible(&c, &axe, "signin-provider").await;
        click_css(&c, "#sign-in-provider").await;
        // The provider's own login page, then its consent page.
        let login = wait_css(&c, "input[name='login']").await;
        assert!(c.current_url().await.unwrap().as_str().starts_with(&issuer));
        login.send_keys("ada@acme").await.unwrap();
        type_into(&c, "input[name='password']", "any password").await;
        click_css(&c, "button[type='submit']").await;
        wait_css(&c, "input[name='prompt'][value='consent']").await;
        click_css(&c, "button[type='submit']").await;
        // Back in the console, signed in as the claims say, with the code gone from
        // the address bar.
        wait_css(&c, "#runs").await;
        let who = c
            .find(Locator::Css("#who"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            who.contains("acme") && who.contains("tenant_admin"),
            "{who}"
        );
        let url = c.current_url().await.unwrap();
        assert!(url.query().is_none(), "{url}");
        assert_eq!(url.fragment(), Some("/runs"));
        // The token works for what the role may do.
        wait_css(&c, "a[href='#/admin']").await;
        // A credential that stops working (here: the token replaced by one nobody
        // signed) sends the page back to signing in, saying why.
        c.execute(
            "sessionStorage.setItem('aiq.credential', JSON.stringify({kind: 'token', value: 'e30.e30.not-signed'}));",
            vec![],
        )
        .await
        .unwrap();
        c.goto(&format!("{base}/#/workflows")).await.unwrap();
        let ended = wait_text(&c, ".error", "Your sign-in ended").await;
        assert!(ended.contains("Your sign-in ended"), "{ended}");
        assert_eq!(heading(&c).await, "Sign in");
        wait_css(&c, "#sign-in-provider").await;

        // A return with a state this tab did not start is refused, and nobody is
        // signed in by it.
        c.goto(&format!("{base}/?code=forged&state=forged"))
            .await
            .unwrap();
        let refused = wait_text(&c, ".error", "not started from this tab").await;
        assert!(refused.contains("not started from this tab"), "{refused}");
        wait_css(&c, "#sign-in-provider").await;
        c.close().await.unwrap();
    });
}
