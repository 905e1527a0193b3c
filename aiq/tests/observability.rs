//! Every Grafana panel and every Prometheus rule in `ops/` returns data from a real
//! `aiq serve` under load: Kafka, Cassandra and a Prometheus of the test's own, scraping
//! the process every second with `ops/prometheus/rules.yml` loaded; and the alerts that
//! load makes fire reach a receiver through a real Alertmanager routed by
//! `ops/alertmanager/alertmanager.yml`.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiq_testkit::{CQL, KAFKA, require_service, unique};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use support::{Processes, free_port, http, wait_until};

/// The tenant whose name replaces `$tenant`: it has every kind of trouble.
const TENANT: &str = "acme";
const OTHER_TENANTS: [&str; 2] = ["globex", "initech"];
const DEV_SECRET: &str = "observability-test-secret-not-for-production";

fn ops() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops")
}

fn aiq_command(config: &Path, args: &[&str]) -> Command {
    support::aiq_command(config, DEV_SECRET, args)
}

fn aiq(config: &Path, args: &[&str]) -> Output {
    support::aiq(config, DEV_SECRET, args)
}

fn get(agent: &ureq::Agent, url: &str) -> Option<(u16, String)> {
    let mut r = agent.get(url).call().ok()?;
    Some((r.status().as_u16(), r.body_mut().read_to_string().ok()?))
}

fn post(agent: &ureq::Agent, url: &str, token: &str, content_type: &str, body: &str) -> u16 {
    agent
        .post(url)
        .header("authorization", &format!("Bearer {token}"))
        .header("content-type", content_type)
        .send(body)
        .unwrap()
        .status()
        .as_u16()
}

/// Answers every request with 500, so that the `flaky` workflow's calls fail and its
/// tenant's breaker for this host opens.
fn failing_http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\noops",
            );
        }
    });
    port
}

/// Alertmanager's webhook notifications as they arrive: the path and the JSON body.
type Notifications = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver on loopback that keeps every notification.
fn alert_receiver() -> (u16, Notifications) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Notifications = Arc::default();
    let kept = Arc::clone(&got);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            if let Some(n) = read_post(&mut s) {
                kept.lock().unwrap().push(n);
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, got)
}

fn read_post(s: &mut TcpStream) -> Option<(String, Value)> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut len = 0;
    loop {
        let mut header = String::new();
        r.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((path, serde_json::from_slice(&body).ok()?))
}

/// Whether a notification to `path` carried `alertname` firing with `label`.
fn delivered(got: &Notifications, path: &str, alertname: &str, label: (&str, &str)) -> bool {
    got.lock().unwrap().iter().any(|(p, body)| {
        p == path
            && body["alerts"].as_array().is_some_and(|alerts| {
                alerts.iter().any(|a| {
                    a["status"] == "firing"
                        && a["labels"]["alertname"] == alertname
                        && a["labels"][label.0] == label.1
                })
            })
    })
}

const FLAKY: &str = r#"
id: flaky
steps:
  - id: call
    task:
      connector: http
      args: { method: GET, url: "http://127.0.0.1:PORT/orders" }
      retry: { max_attempts: 2, initial_backoff: 100ms }
"#;

const SLOW: &str = r#"
id: slow
timeout: 1s
steps:
  - id: nap
    wait: { duration: 30s }
  - id: done
    succeed: {}
"#;

const TICKER: &str = r#"
id: ticker
triggers:
  cron:
    - schedule: "*/2 * * * * *"
      timezone: UTC
      overlap: skip
steps:
  - id: tick
    task: { connector: noop, args: { output: tick } }
"#;

/// Prometheus's answer to an instant query: its result vector.
fn query(agent: &ureq::Agent, prometheus: &str, expr: &str) -> Vec<Value> {
    let mut r = agent
        .get(&format!("{prometheus}/api/v1/query"))
        .query("query", expr)
        .call()
        .unwrap();
    let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["status"], "success", "query {expr}: {body}");
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Every target expression of a dashboard, rows' nested panels included.
fn exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((p["title"].as_str().unwrap_or("?").to_owned(), e.to_owned()));
                }
            }
            if let Some(nested) = p["panels"].as_array() {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dashboard["panels"].as_array().unwrap(), &mut out);
    out
}

#[test]
fn every_dashboard_panel_and_rule_returns_data() {
    let brokers = require_service!(KAFKA);
    let contact_points = require_service!(CQL);
    let prometheus_bin = which("prometheus");
    let rules = ops().join("prometheus/rules.yml");
    passes("promtool", &["check", "rules"], &rules);

    let name = unique("obs");
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = format!("{name}.");
    let api_port = free_port();
    let api = format!("http://127.0.0.1:{api_port}");
    // Prometheus scrapes the operations listener; the API serves no metrics.
    let ops_port = free_port();
    let ops_url = format!("http://127.0.0.1:{ops_port}");
    let target_port = failing_http_server();
    let config = dir.join("aiq.toml");
    let history = dir.join("history").display().to_string();
    std::fs::write(
        &config,
        support::config_text(
            &name,
            &brokers,
            &contact_points,
            (api_port, ops_port),
            &history,
            &format!(
                r#"
# A small allowance, so that a burst of run starts is partly refused.
[ingest.tenants.{TENANT}.trigger_quota]
per_second = 20
burst = 40

[connectors.outbound]
allow = ["127.0.0.0/8"]

# Opens after a few failures and stays open for the whole test.
[connectors.breaker]
window = 10
min_calls = 4
failure_rate = 0.5
open_ms = 600000
"#
            ),
        ),
    )
    .unwrap();
    aiq(&config, &["topics", "apply"]);
    aiq(&config, &["schema", "apply"]);

    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let serve = aiq_command(&config, &["serve"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut procs = Processes(vec![("aiq serve", serve)]);
    let agent = http();
    wait_until("aiq serve ready", Duration::from_secs(120), || {
        get(&agent, &format!("{api}/readyz")).is_some_and(|(s, _)| s == 200)
    });

    // Alertmanager with the shipped routing; only its receivers' address is the test's.
    let routing = ops().join("alertmanager/alertmanager.yml");
    passes("amtool", &["check-config"], &routing);
    let shipped = std::fs::read_to_string(&routing).unwrap();
    assert!(
        shipped.contains("http://127.0.0.1:9096/"),
        "the receivers moved"
    );
    let (receiver_port, notifications) = alert_receiver();
    let am_config = dir.join("alertmanager.yml");
    std::fs::write(
        &am_config,
        shipped.replace(
            "http://127.0.0.1:9096/",
            &format!("http://127.0.0.1:{receiver_port}/"),
        ),
    )
    .unwrap();
    let am_port = free_port();
    start_ready(
        &mut procs,
        &agent,
        ("alertmanager", &which("prometheus-alertmanager")),
        &[
            format!("--config.file={}", am_config.display()),
            format!("--storage.path={}", dir.join("am").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
        &dir.join("alertmanager.log"),
        &format!("http://127.0.0.1:{am_port}"),
    );

    let prom_port = free_port();
    let prometheus = format!("http://127.0.0.1:{prom_port}");
    let prom_config = dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:{am_port}\"]\nscrape_configs:\n  - job_name: aiq\n    static_configs:\n      - targets: [\"127.0.0.1:{ops_port}\"]\n",
            rules.canonicalize().unwrap().display()
        ),
    )
    .unwrap();
    start_ready(
        &mut procs,
        &agent,
        ("prometheus", &prometheus_bin),
        &[
            format!("--config.file={}", prom_config.display()),
            format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            "--log.level=warn".into(),
        ],
        &dir.join("prometheus.log"),
        &prometheus,
    );
    // Scraped once before the load: `increase()`, which the dead-letter alert uses, sees
    // a counter's first steps only against a sample taken before them.
    wait_until("first scrape", Duration::from_secs(60), || {
        !query(&agent, &prometheus, "up{job=\"aiq\"} == 1").is_empty()
    });

    // Workflows: every tenant runs hello-pipeline; acme also has calls that fail, runs
    // that time out and a schedule.
    let token = |tenant: &str, role: &str| {
        let o = aiq(&config, &["token", "--tenant", tenant, "--role", role]);
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    let hello = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/workflows/hello-pipeline.yaml"),
    )
    .unwrap();
    let flaky = FLAKY.replace("PORT", &target_port.to_string());
    let mut users = Vec::new();
    for tenant in std::iter::once(TENANT).chain(OTHER_TENANTS) {
        let admin = token(tenant, "tenant_admin");
        let mut docs = vec![hello.as_str()];
        if tenant == TENANT {
            docs.extend([flaky.as_str(), SLOW, TICKER]);
        }
        for doc in docs {
            let status = post(
                &agent,
                &format!("{api}/v1/workflows"),
                &admin,
                "application/yaml",
                doc,
            );
            assert!(status == 201 || status == 200, "registering: HTTP {status}");
        }
        users.push((tenant, token(tenant, "user")));
    }

    // acme's troubled runs first, within its burst allowance.
    let acme = &users[0].1;
    for (wf, n) in [("flaky", 12), ("slow", 3)] {
        for _ in 0..n {
            let status = post(
                &agent,
                &format!("{api}/v1/workflows/{wf}/runs"),
                acme,
                "application/json",
                "{}",
            );
            assert_eq!(status, 202, "starting {wf}");
        }
    }
    // Then a few hundred run starts from a few threads at once.
    let started = Instant::now();
    let mut plan: Vec<(String, &str, String)> = Vec::new();
    for (tenant, tok) in &users {
        let n = if *tenant == TENANT { 160 } else { 60 };
        for i in 0..n {
            plan.push((
                tok.clone(),
                "hello-pipeline",
                format!("{{\"input\": {{\"n\": {i}}}}}"),
            ));
        }
    }
    let total = plan.len();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let chunks: Vec<_> = plan.chunks(plan.len().div_ceil(8)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let agent = agent.clone();
                let api = api.clone();
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|(tok, wf, body)| {
                            post(
                                &agent,
                                &format!("{api}/v1/workflows/{wf}/runs"),
                                tok,
                                "application/json",
                                body,
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    println!(
        "{total} run starts in {:.1}s: {accepted} accepted, {limited} rate-limited",
        started.elapsed().as_secs_f64()
    );
    assert!(accepted > 100, "statuses: {statuses:?}");
    assert!(limited > 0, "acme's small allowance refused nothing");

    // Records no stage can read: one for the orchestrator, one for the worker.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for topic in ["triggers", "tasks"] {
        producer
            .send(
                BaseRecord::to(&format!("{prefix}{topic}"))
                    .key(TENANT)
                    .payload("not json"),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    // Until what the panels show has happened and been scraped.
    let ready = [
        "sum(aiq_orchestrator_runs_total{status=\"timed_out\"}) > 0",
        "sum(aiq_orchestrator_runs_total{status=\"failed\"}) > 0",
        "sum(aiq_orchestrator_cron_lag_seconds_count) > 0",
        "max(aiq_connector_circuit_state) == 1",
        "sum(aiq_orchestrator_dead_letters_total) > 0",
        "sum(aiq_worker_dead_letters_total) > 0",
        "count(aiq_consumer_lag{stage=\"orchestrator\"}) > 0",
        "count(aiq_consumer_lag{stage=\"worker\"}) > 0",
        "sum(aiq_orchestrator_runs_total{status=\"succeeded\"}) > 100",
    ];
    let mut missing = Vec::new();
    wait_until("load scraped", Duration::from_secs(180), || {
        missing = ready
            .iter()
            .filter(|e| query(&agent, &prometheus, e).is_empty())
            .collect();
        missing.is_empty()
    });
    // Rates need two samples of a series in their window, and every rule a few rounds.
    std::thread::sleep(Duration::from_secs(5));

    let metrics_text = get(&agent, &format!("{ops_url}/metrics")).unwrap().1;
    assert_eq!(
        get(&agent, &format!("{api}/metrics")).map(|(s, _)| s),
        Some(404),
        "the API listener serves no metrics"
    );
    let has_sink = metrics_text.contains("aiq_sink_");
    if !has_sink {
        println!("this build's `aiq serve` has no sink stage: aiq_sink_* expressions are skipped");
    }
    let applies = |expr: &str| has_sink || !expr.contains("aiq_sink_");

    // Every panel of every dashboard.
    let mut checked = 0;
    let mut empty = Vec::new();
    for file in ["platform.json", "tenant.json", "cost.json"] {
        let text = std::fs::read_to_string(ops().join("grafana/dashboards").join(file)).unwrap();
        let dashboard: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(dashboard["schemaVersion"], 39, "{file}");
        for var in dashboard["templating"]["list"].as_array().unwrap() {
            let def = var["definition"].as_str().unwrap();
            let metric = def
                .strip_prefix("label_values(")
                .and_then(|r| r.split(',').next())
                .unwrap();
            let mut r = agent
                .get(&format!("{prometheus}/api/v1/label/tenant/values"))
                .query("match[]", metric)
                .call()
                .unwrap();
            let values: Value =
                serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
            assert!(
                values["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v == TENANT),
                "{file}: variable {def} lacks {TENANT}: {values}"
            );
        }
        let targets = exprs(&dashboard);
        assert!(targets.len() >= 5, "{file} has {} targets", targets.len());
        for (panel, expr) in targets {
            if !applies(&expr) {
                continue;
            }
            let concrete = expr
                .replace("$tenant", TENANT)
                .replace("$__rate_interval", "1m");
            checked += 1;
            if query(&agent, &prometheus, &concrete).is_empty() {
                empty.push(format!("{file} / {panel}: {concrete}"));
            }
        }
    }
    println!("{checked} panel expressions queried");
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );

    // Every rule: evaluated without error; recording rules produce series; each alert's
    // signal (its expression without the threshold) returns data.
    let mut r = agent
        .get(&format!("{prometheus}/api/v1/rules"))
        .call()
        .unwrap();
    let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let mut names = BTreeSet::new();
    let mut problems = Vec::new();
    for group in body["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["name"].as_str().unwrap().to_owned();
            let expr = rule["query"].as_str().unwrap();
            names.insert(name.clone());
            if rule["health"] != "ok" {
                problems.push(format!(
                    "{name}: health {} {}",
                    rule["health"], rule["lastError"]
                ));
            }
            let probe = match rule["type"].as_str().unwrap() {
                "recording" => name.clone(),
                _ => match rule["annotations"]["signal"].as_str() {
                    Some(s) => s.to_owned(),
                    None => {
                        problems.push(format!("alert {name} has no signal annotation"));
                        continue;
                    }
                },
            };
            if !applies(expr) {
                continue;
            }
            if query(&agent, &prometheus, &probe).is_empty() {
                problems.push(format!("{name}: {probe} returned no series"));
            }
        }
    }
    println!("{} rules evaluated: {names:?}", names.len());
    assert!(names.len() >= 15, "rules loaded: {names:?}");
    assert!(problems.is_empty(), "rules:\n{}", problems.join("\n"));

    // A few values that must be what the load made them.
    let limited_seen: f64 = query(
        &agent,
        &prometheus,
        &format!("sum(aiq_ingest_triggers_total{{tenant=\"{TENANT}\",outcome=\"rate_limited\"}})"),
    )
    .iter()
    .map(value)
    .sum();
    assert_eq!(limited_seen as usize, limited, "rate-limited run starts");
    let breaker = query(
        &agent,
        &prometheus,
        &format!("aiq_connector_circuit_state{{tenant=\"{TENANT}\"}}"),
    );
    assert_eq!(breaker.len(), 1, "{breaker:?}");
    assert_eq!(
        breaker[0]["metric"]["host"],
        format!("127.0.0.1:{target_port}")
    );
    let retries: f64 = query(
        &agent,
        &prometheus,
        "sum(aiq_orchestrator_steps_total{status=\"retrying\"})",
    )
    .iter()
    .map(value)
    .sum();
    assert!(retries > 0.0, "no retries counted");
    let lag = query(&agent, &prometheus, "aiq:consumer_lag:sum");
    let stages: BTreeSet<_> = lag
        .iter()
        .filter_map(|s| s["metric"]["stage"].as_str())
        .collect();
    assert!(
        stages.contains("orchestrator") && stages.contains("worker"),
        "{stages:?}"
    );
    println!("consumer lag now: {lag:?}");

    // The alerts the load raised, delivered by Alertmanager as routed: dead letters
    // (warning) to the operators, one per stage; the open breaker (info, after its 1 min
    // `for`) to the tenant notices, never to the operators.
    let all_delivered = || {
        delivered(
            &notifications,
            "/alerts/operators",
            "AiqDeadLetters",
            ("stage", "orchestrator"),
        ) && delivered(
            &notifications,
            "/alerts/operators",
            "AiqDeadLetters",
            ("stage", "worker"),
        ) && delivered(
            &notifications,
            "/alerts/tenant-notices",
            "AiqCircuitBreakerOpen",
            ("tenant", TENANT),
        )
    };
    let waiting = Instant::now();
    while !all_delivered() {
        if waiting.elapsed() > Duration::from_secs(240) {
            let firing = query(&agent, &prometheus, "ALERTS");
            let at_am = get(&agent, &format!("http://127.0.0.1:{am_port}/api/v2/alerts"));
            panic!(
                "alerts not all delivered; received {:?}\nPrometheus ALERTS: {firing:?}\nAlertmanager: {at_am:?}",
                notifications.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("alerts delivered: {:.1}s", waiting.elapsed().as_secs_f64());
    assert!(
        !delivered(
            &notifications,
            "/alerts/operators",
            "AiqCircuitBreakerOpen",
            ("tenant", TENANT)
        ),
        "an info alert reached the operators"
    );
    let n = notifications.lock().unwrap();
    let first = &n[0].1;
    assert_eq!(first["version"], "4", "{first}");
    assert!(
        first["alerts"][0]["annotations"]["summary"].is_string(),
        "{first}"
    );
    println!(
        "{} notifications: {:?}",
        n.len(),
        n.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    drop(n);
    drop(procs);
    // Kept when the test fails: serve.log and prometheus.log say why.
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts a server with its errors in `log`, kept in `procs`, and waits until `{url}/-/ready`
/// answers 200 (Prometheus and Alertmanager both serve it).
fn start_ready(
    procs: &mut Processes,
    agent: &ureq::Agent,
    (name, bin): (&'static str, &Path),
    args: &[String],
    log: &Path,
    url: &str,
) {
    let child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    procs.0.push((name, child));
    wait_until(&format!("{name} ready"), Duration::from_secs(60), || {
        get(agent, &format!("{url}/-/ready")).is_some_and(|(s, _)| s == 200)
    });
}

/// `tool args file` exits 0 (a checker: promtool, amtool).
fn passes(tool: &str, args: &[&str], file: &Path) {
    let check = Command::new(which(tool))
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{tool} {args:?} {}: {}{}",
        file.display(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

fn which(binary: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{binary} is not on PATH"))
}
