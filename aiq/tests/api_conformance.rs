//! The API document tells the truth. A property-based API tester (schemathesis, installed
//! by `scripts/api-tester install`, its path in `AIQ_SCHEMATHESIS`) reads `/openapi.json`
//! of a real `aiq serve` (Kafka, Cassandra, every stage, sealed secrets, SQL) and runs
//! every phase its version has — examples, coverage, fuzzing, stateful — with every check
//! on and a real tenant_admin token. It must find no failure and the server must answer
//! no request with a 5xx.
//!
//! Alone: `scripts/api-tester run`. The allowances the tester gets (answers that depend
//! on what a request means, not on its shape) are in `api_conformance/schemathesis.toml`;
//! this test adds the ids of what it registered and started, so that generated requests
//! also reach real workflows and runs.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aiq_testkit::{CQL, KAFKA, require_service, unique};
use serde_json::Value;
use support::{Processes, free_port, http};

const DEV_SECRET: &str = "api-conformance-test-secret-not-for-production";
const TENANT: &str = "acme";
/// A fixed seed, so that two runs generate the same requests (the server's timing still
/// varies); AIQ_API_TESTER_SEED picks another.
const DEFAULT_SEED: &str = "20261205";
const DEFAULT_SECONDS: u64 = 150;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn aiq_command(config: &Path, args: &[&str]) -> Command {
    support::aiq_command(config, DEV_SECRET, args)
}

fn aiq(config: &Path, args: &[&str]) -> Output {
    support::aiq(config, DEV_SECRET, args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn send(
    agent: &ureq::Agent,
    url: &str,
    token: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let mut r = agent
        .post(url)
        .header("authorization", &format!("Bearer {token}"))
        .header("content-type", content_type)
        .send(body)
        .unwrap();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (
        r.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn ready(agent: &ureq::Agent, url: &str) -> bool {
    agent
        .get(url)
        .call()
        .is_ok_and(|r| r.status().as_u16() == 200)
}

/// The tester's executable, or None when this run may skip the test.
fn tester() -> Option<PathBuf> {
    let required = std::env::var("AIQ_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true");
    match std::env::var_os("AIQ_SCHEMATHESIS").map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        other => {
            let why = match other {
                Some(p) => format!("AIQ_SCHEMATHESIS={} is not a file", p.display()),
                None => "AIQ_SCHEMATHESIS is not set".to_owned(),
            };
            assert!(
                !required,
                "{why}: `scripts/api-tester install` installs the API tester and prints its path"
            );
            eprintln!("skipped: {why} (scripts/api-tester install)");
            None
        }
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Responses by status, read from the tester's NDJSON event stream.
fn statuses(ndjson: &Path) -> BTreeMap<u16, u64> {
    let mut counts = BTreeMap::new();
    let file = std::fs::File::open(ndjson).unwrap();
    let needle = "\"status_code\":";
    for line in BufReader::new(file).lines() {
        let line = line.unwrap();
        let mut rest = line.as_str();
        while let Some(i) = rest.find(needle) {
            rest = rest[i + needle.len()..].trim_start();
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(status) = digits.parse::<u16>() {
                *counts.entry(status).or_default() += 1;
            }
        }
    }
    counts
}

fn report_file(dir: &Path, prefix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no {prefix}* report in {}", dir.display()))
}

#[test]
fn the_api_document_matches_the_server_under_a_property_based_tester() {
    let brokers = require_service!(KAFKA);
    let contact_points = require_service!(CQL);
    let Some(tester) = tester() else { return };

    let name = unique("apidoc");
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let api_port = free_port();
    let api = format!("http://127.0.0.1:{api_port}");
    let history = dir.join("history").display().to_string();
    let keys = dir.join("secret-keys");
    let base = dir.join("base.toml");
    std::fs::write(&base, "").unwrap();
    std::fs::write(&keys, stdout(&aiq(&base, &["secrets", "new-key"])) + "\n").unwrap();
    // The operations listener (metrics, health) gets a port of its own where this build
    // has one, so that the test never collides with another `aiq serve` on this machine.
    let ops = if stdout(&aiq(&base, &["config"])).contains("ops_listen") {
        format!("ops_listen = \"127.0.0.1:{}\"", free_port())
    } else {
        String::new()
    };
    let config = dir.join("aiq.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{brokers}"
topic_prefix = "{name}."
tenant_partitions = 2
work_partitions = 2

[cql]
contact_points = "{contact_points}"
keyspace = "{name}"

[serve]
roles = "ingest,orchestrator,worker,sink"
http_listen = "127.0.0.1:{api_port}"
{ops}

[ingest]
open_tenants = true

[secrets]
key_file = "{keys}"

[sink.parquet]
root = "{history}"

[analytics]
root = "{history}"
"#,
            keys = keys.display(),
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
    let _procs = Processes(vec![("aiq serve", serve)]);
    let agent = http();
    let start = Instant::now();
    while !ready(&agent, &format!("{api}/readyz")) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "aiq serve not ready; log: {}",
            dir.join("serve.log").display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Something to find: a workflow and a few runs of it.
    let token = stdout(&aiq(
        &config,
        &[
            "token",
            "--tenant",
            TENANT,
            "--role",
            "tenant_admin",
            "--ttl",
            "7200",
        ],
    ));
    let hello =
        std::fs::read_to_string(manifest().join("../examples/workflows/hello-pipeline.yaml"))
            .unwrap();
    let (status, registered) = send(
        &agent,
        &format!("{api}/v1/workflows"),
        &token,
        "application/yaml",
        &hello,
    );
    assert!(status == 201 || status == 200, "registering: {status}");
    let workflow = registered["workflow"].as_str().unwrap().to_owned();
    let version = registered["version"].as_u64().unwrap();
    let mut runs = Vec::new();
    for n in 0..3 {
        let (status, started) = send(
            &agent,
            &format!("{api}/v1/workflows/{workflow}/runs"),
            &token,
            "application/json",
            &format!("{{\"input\": {{\"n\": {n}}}}}"),
        );
        assert_eq!(status, 202, "starting a run: {started}");
        runs.push(started["run_id"].as_str().unwrap().to_owned());
    }

    // The checked-in configuration, plus the ids above: half of the generated path
    // parameters of these names take a real one.
    let quoted = |v: &[String]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut st_config =
        std::fs::read_to_string(manifest().join("tests/api_conformance/schemathesis.toml"))
            .unwrap();
    st_config.push_str(&format!(
        r#"
[dictionaries.workflows]
values = [{workflows}]
[dictionaries.versions]
values = [{version}]
[dictionaries.runs]
values = [{runs}]
[dictionaries.tenants]
values = ["{TENANT}"]

[parameters]
"path.id" = {{ dictionary = "workflows", probability = 0.5 }}
"path.version" = {{ dictionary = "versions", probability = 0.5 }}
"path.run_id" = {{ dictionary = "runs", probability = 0.5 }}
"path.tenant" = {{ dictionary = "tenants", probability = 0.5 }}
"header.X-AIQ-Tenant" = {{ dictionary = "tenants", probability = 0.5 }}
"#,
        workflows = quoted(std::slice::from_ref(&workflow)),
        runs = quoted(&runs),
    ));
    let st_config_path = dir.join("schemathesis.toml");
    std::fs::write(&st_config_path, st_config).unwrap();

    let seconds = env_or("AIQ_API_TESTER_SECONDS", &DEFAULT_SECONDS.to_string());
    let seed = env_or("AIQ_API_TESTER_SEED", DEFAULT_SEED);
    // One thread: with more, hypothesis's lambda parsing on CPython 3.11 can fail with
    // "AST constructor recursion depth mismatch", a tester error that is no API mismatch.
    let workers = env_or("AIQ_API_TESTER_WORKERS", "1");
    let reports = dir.join("reports");
    let output = dir.join("schemathesis.txt");
    println!(
        "schemathesis against {api}/openapi.json for {seconds} s, seed {seed}; output: {}",
        output.display()
    );
    let started = Instant::now();
    let run = Command::new(&tester)
        .current_dir(&dir)
        .arg("--config-file")
        .arg(&st_config_path)
        .arg("run")
        .arg(format!("{api}/openapi.json"))
        .args([
            "--max-time",
            &seconds,
            "--seed",
            &seed,
            "--workers",
            &workers,
        ])
        .args(["--request-timeout", "30", "--report", "json,ndjson"])
        .arg("--report-dir")
        .arg(&reports)
        .env("AIQ_API_TESTER_TOKEN", &token)
        .env("NO_COLOR", "1")
        .stdout(std::fs::File::create(&output).unwrap())
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    let text = std::fs::read_to_string(&output).unwrap_or_default();
    let summary: Value =
        serde_json::from_slice(&std::fs::read(report_file(&reports, "json")).unwrap()).unwrap();
    let by_status = statuses(&report_file(&reports, "ndjson"));
    let requests: u64 = by_status.values().sum();
    let server_errors: u64 = by_status.range(500..).map(|(_, n)| n).sum();
    let cases = &summary["test_cases"];
    println!(
        "schemathesis {}: {} test cases, {} with failures ({} unique), {requests} responses \
         ({server_errors} 5xx) in {:.0} s; by status {by_status:?}; phases {}",
        summary["schemathesis_version"],
        cases["generated"],
        cases["with_failures"],
        cases["unique_failures"],
        started.elapsed().as_secs_f64(),
        summary["phases"],
    );
    let failed =
        !run.success() || cases["with_failures"] != 0 || cases["errored"] != 0 || server_errors > 0;
    if failed {
        // The tester's own account: each failure with a curl command that reproduces it.
        let from = text
            .find("== FAILURES ==")
            .or_else(|| text.find("== ERRORS =="));
        let tail: String = match from {
            Some(i) => text[i..].chars().take(30_000).collect(),
            None => text
                .chars()
                .rev()
                .take(8000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect(),
        };
        panic!(
            "the API tester found mismatches or server errors (exit {run}, {server_errors} 5xx); \
             serve log {}, reports {}:\n{tail}",
            dir.join("serve.log").display(),
            reports.display()
        );
    }
    for phase in ["examples", "coverage", "fuzzing", "stateful"] {
        assert_eq!(
            summary["phases"][phase]["status"], "success",
            "phase {phase}: {}",
            summary["phases"]
        );
    }
    assert!(requests > 1000, "only {requests} requests were made");
    // The NDJSON stream is large; a passing run keeps nothing.
    let _ = std::fs::remove_dir_all(&dir);
}
