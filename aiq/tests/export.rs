//! Exporting a tenant with 10,000 runs through a real `aiq serve`: the archive's
//! manifest checksums verify, every run is in it with its (opened) payload, the secret's
//! name is there and its value nowhere, and nothing of another tenant is in it. Bad
//! requests are clear problems that change nothing.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use aiq_testkit::{CQL, KAFKA, require_service};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{Value, json};
use support::{Deployment, wait_until};

const DEV_SECRET: &str = "export-test-secret-not-for-production";
const JSON: &str = "application/json";
const RUNS: usize = 10_000;

const ECHO: &str = r#"
id: echo
steps:
  - id: echo
    task: { connector: noop, args: { output: { n: "${ input.n }", who: "${ input.who }" } } }
"#;

#[test]
fn a_tenant_with_ten_thousand_runs_exports_to_a_verified_archive_of_its_own_data_only() {
    let brokers = require_service!(KAFKA);
    let contact_points = require_service!(CQL);
    let d = Deployment::start_with_env(
        "export",
        &brokers,
        &contact_points,
        DEV_SECRET,
        "",
        &[
            ("AIQ_INGEST_OPEN_TENANTS", "false"),
            // One export at a time: the second one asked for meanwhile is refused.
            ("AIQ_INGEST_MAX_CONCURRENT_EXPORTS", "1"),
        ],
    );
    let root = d.token("ops", "platform_admin");
    let onboard = |id: &str| {
        let body = json!({"id": id, "display_name": id}).to_string();
        let (status, created) = d.call("POST", "/v1/tenants", &root, Some((JSON, &body)));
        assert_eq!(status, 201, "{created}");
        let key = created["api_key"]["key"].as_str().unwrap().to_owned();
        let (status, body) = d.call(
            "POST",
            "/v1/workflows",
            &key,
            Some(("application/yaml", ECHO)),
        );
        assert_eq!(status, 201, "{body}");
        key
    };
    let acme = onboard("acme");
    let globex = onboard("globex");
    let secret_value = format!("secret-value-{}", uuid::Uuid::new_v4().simple());
    let body = json!({"value": secret_value}).to_string();
    let (status, _) = d.call("PUT", "/v1/secrets/crm-token", &acme, Some((JSON, &body)));
    assert_eq!(status, 200);

    // 10,000 runs for acme straight into the triggers topic (an outside producer), and
    // one for globex carrying a marker that must not reach acme's archive.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let topic = format!("{}triggers", d.prefix);
    for n in 0..RUNS {
        let t = json!({"schema": "aiq.trigger.v1", "tenant": "acme", "workflow": "echo",
                       "source": "kafka", "input": {"n": n, "who": "acme"}})
        .to_string();
        loop {
            match producer.send(BaseRecord::to(&topic).key("acme").payload(&t)) {
                Ok(()) => break,
                Err(_) => producer.poll(Duration::from_millis(10)),
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    let marker = format!("globex-marker-{}", uuid::Uuid::new_v4().simple());
    let body = json!({"input": {"n": -1, "who": marker}}).to_string();
    let (status, _) = d.call(
        "POST",
        "/v1/workflows/echo/runs",
        &globex,
        Some((JSON, &body)),
    );
    assert_eq!(status, 202);
    let done = |key: &str| d.all_pages("/v1/runs?status=succeeded", key, "runs").len();
    // Counted every few seconds: each count pages through the whole list.
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while done(&acme) < RUNS {
        assert!(
            std::time::Instant::now() < deadline,
            "10,000 runs not written in 10 min"
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    wait_until("globex's run written", Duration::from_secs(60), || {
        done(&globex) == 1
    });

    // Bad requests: an unknown tenant, another tenant's admin.
    let (status, body) = d.call("POST", "/v1/tenants/nobody/exports", &root, None);
    assert_eq!(status, 404, "{body}");
    let (status, body) = d.call("POST", "/v1/tenants/acme/exports", &globex, None);
    assert_eq!(status, 403, "{body}");

    // The export, by acme's own admin.
    let (status, started) = d.call("POST", "/v1/tenants/acme/exports", &acme, None);
    assert_eq!(status, 202, "{started}");
    let url = started["status_url"].as_str().unwrap().to_owned();
    // Building 10,000 runs takes seconds: a second export now is past the bound.
    let (status, busy) = d.call("POST", "/v1/tenants/globex/exports", &root, None);
    assert_eq!(status, 429, "{busy}");
    assert!(
        busy["type"].as_str().unwrap().ends_with("too-many-exports"),
        "{busy}"
    );
    let mut view = Value::Null;
    wait_until("the export succeeding", Duration::from_secs(300), || {
        view = d.call("GET", &url, &acme, None).1;
        assert_ne!(view["state"], "failed", "{view}");
        view["state"] == "succeeded"
    });
    assert_eq!(view["runs"], RUNS as u64, "{view}");
    // Its slot is free again.
    let (status, other) = d.call("POST", "/v1/tenants/globex/exports", &root, None);
    assert_eq!(status, 202, "{other}");
    // Another tenant does not see it.
    assert_eq!(d.call("GET", &url, &globex, None).0, 404);
    let download = view["download_url"].as_str().unwrap();
    let mut r = d
        .agent
        .get(&format!("{}{download}", d.api))
        .header("x-api-key", &acme)
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let tar = r
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();

    let (manifest, files) = aiq_ingest::export::archive::verify(&tar).unwrap();
    assert_eq!(manifest.tenant, "acme");
    assert_eq!(
        manifest
            .files
            .iter()
            .find(|f| f.name == "runs.jsonl")
            .unwrap()
            .rows,
        Some(RUNS as u64)
    );
    let runs: Vec<Value> = String::from_utf8(files["runs.jsonl"].clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut ns: Vec<i64> = runs
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "succeeded", "{r}");
            assert_eq!(r["output"]["who"], "acme", "payloads opened: {r}");
            r["input"]["n"].as_i64().unwrap()
        })
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..RUNS as i64).collect::<Vec<_>>());
    let secrets = String::from_utf8(files["secrets.jsonl"].clone()).unwrap();
    assert!(secrets.contains("crm-token"), "{secrets}");
    let workflows = String::from_utf8(files["workflows.jsonl"].clone()).unwrap();
    assert!(workflows.contains("\"echo\""), "{workflows}");
    assert!(
        files
            .keys()
            .any(|n| n.starts_with("parquet/warm/runs/tenant=acme/"))
    );
    let finder = |needle: &str| memchr::memmem::find(&tar, needle.as_bytes()).is_some();
    assert!(!finder(&secret_value), "a secret's value in the archive");
    assert!(!finder(&marker), "another tenant's data in the archive");
    assert!(
        !finder("tenant=globex"),
        "another tenant's files in the archive"
    );
    assert!(
        !finder("aiq_sealed"),
        "a payload left sealed in the archive"
    );
    // The history the archive holds was written by the sink on threads of its own at a
    // lower priority than the run path's (`sink.thread_nice`, 10 by default).
    #[cfg(target_os = "linux")]
    {
        let threads = aiq_testkit::threads_of(Some(d.serve_pid()));
        let sink: Vec<_> = threads.iter().filter(|(n, ..)| n == "aiq-sink").collect();
        assert!(!sink.is_empty(), "no aiq-sink thread: {threads:?}");
        assert!(sink.iter().all(|(_, _, nice)| *nice == 10), "{sink:?}");
        assert!(
            sink.iter().map(|(_, cpu, _)| cpu).sum::<u64>() > 0,
            "{sink:?}"
        );
        let run_path: Vec<_> = threads
            .iter()
            .filter(|(n, ..)| n == "tokio-rt-worker")
            .collect();
        assert!(!run_path.is_empty(), "{threads:?}");
        assert!(
            run_path.iter().all(|(_, _, nice)| *nice == 0),
            "{run_path:?}"
        );
    }
}
