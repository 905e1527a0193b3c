//! Dead letters end to end, in a real `aiq serve` on Kafka and Cassandra: triggers that
//! name a workflow nobody registered are set aside by the orchestrator, indexed by the
//! sink, listed by the API to their tenant only, and once the workflow is registered,
//! replayed: each becomes exactly one successful run, and a second replay is refused
//! and starts nothing. The operator's `aiq dead-letters` sees the same letters.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use aiq_testkit::{CQL, KAFKA, require_service, unique};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{Value, json};
use support::{Processes, free_port, http, wait_until};

const DEV_SECRET: &str = "dead-letters-test-secret-not-for-production";
const TENANT: &str = "acme";
const LETTERS: usize = 100;

const LATER: &str = r#"
id: later
steps:
  - id: greet
    task: { connector: noop, args: { output: "${input.n}" } }
"#;

fn aiq(config: &Path, args: &[&str]) -> Output {
    support::aiq(config, DEV_SECRET, args)
}

fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: &str,
    body: Option<(&str, &str)>,
) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let mut r = match (method, body) {
        ("GET", _) => agent.get(url).header("authorization", &auth).call(),
        ("DELETE", _) => agent.delete(url).header("authorization", &auth).call(),
        (_, Some((ct, b))) => agent
            .post(url)
            .header("authorization", &auth)
            .header("content-type", ct)
            .send(b),
        (_, None) => agent.post(url).header("authorization", &auth).send_empty(),
    }
    .unwrap();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (
        r.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// Every item of a paged list, following `next_page_token`.
fn all_pages(agent: &ureq::Agent, url: &str, token: &str, field: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let sep = if url.contains('?') { '&' } else { '?' };
        let page_url = match &next {
            Some(t) => format!("{url}{sep}limit=500&page_token={t}"),
            None => format!("{url}{sep}limit=500"),
        };
        let (status, body) = call(agent, "GET", &page_url, token, None);
        assert_eq!(status, 200, "{page_url}: {body}");
        out.extend(body[field].as_array().cloned().unwrap_or_default());
        match body["next_page_token"].as_str() {
            Some(t) => next = Some(t.to_owned()),
            None => return out,
        }
    }
}

#[test]
fn unknown_workflow_letters_replay_once_into_exactly_one_run_each() {
    let brokers = require_service!(KAFKA);
    let contact_points = require_service!(CQL);
    let name = unique("dlq");
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = format!("{name}.");
    let api_port = free_port();
    let api = format!("http://127.0.0.1:{api_port}");
    let config = dir.join("aiq.toml");
    let history = dir.join("history").display().to_string();
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{brokers}"
topic_prefix = "{prefix}"
tenant_partitions = 4
work_partitions = 4

[cql]
contact_points = "{contact_points}"
keyspace = "{name}"

[serve]
roles = "ingest,orchestrator,worker,sink"
http_listen = "127.0.0.1:{api_port}"
ops_listen = "127.0.0.1:{ops}"

[sink.parquet]
root = "{history}"

[analytics]
root = "{history}"
"#,
            ops = free_port()
        ),
    )
    .unwrap();
    aiq(&config, &["topics", "apply"]);
    aiq(&config, &["schema", "apply"]);
    let serve = support::aiq_command(&config, DEV_SECRET, &["serve"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let _procs = Processes(vec![("aiq serve", serve)]);
    let agent = http();
    wait_until("aiq serve ready", Duration::from_secs(120), || {
        agent
            .get(&format!("{api}/readyz"))
            .call()
            .is_ok_and(|r| r.status().as_u16() == 200)
    });
    let token = |tenant: &str, role: &str| {
        let o = aiq(&config, &["token", "--tenant", tenant, "--role", role]);
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    let admin = token(TENANT, "tenant_admin");
    let user = token(TENANT, "user");
    let other = token("globex", "tenant_admin");
    let platform = token("ops", "platform_admin");

    // Straight to the triggers topic, as an outside producer may: a workflow nobody
    // registered, and one record whose key names no tenant.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let topic = format!("{prefix}triggers");
    for n in 0..LETTERS {
        let trigger = json!({
            "schema": "aiq.trigger.v1", "tenant": TENANT, "workflow": "later",
            "source": "kafka", "input": {"n": n}
        })
        .to_string();
        producer
            .send(BaseRecord::to(&topic).key(TENANT).payload(&trigger))
            .unwrap();
    }
    producer
        .send(
            BaseRecord::to(&topic)
                .key("no tenant here!")
                .payload("not json"),
        )
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();

    // Indexed, and listed to their tenant.
    let listing = format!("{api}/v1/dead-letters?kind=unknown_workflow");
    let mut letters = Vec::new();
    wait_until("100 letters listed", Duration::from_secs(120), || {
        letters = all_pages(&agent, &listing, &user, "dead_letters");
        letters.len() >= LETTERS
    });
    assert_eq!(letters.len(), LETTERS);
    for l in &letters {
        assert_eq!(l["tenant"], TENANT);
        assert_eq!(l["stage"], "orchestrator");
        assert_eq!(l["topic"], topic);
        assert_eq!(l["state"], "open");
        assert!(l["reason"].as_str().unwrap().contains("later"), "{l}");
    }
    let ids: BTreeSet<String> = letters
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), LETTERS);

    // One whole: the record as it was read.
    let first = ids.iter().next().unwrap();
    let (status, one) = call(
        &agent,
        "GET",
        &format!("{api}/v1/dead-letters/{first}"),
        &user,
        None,
    );
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["record"]["key"], TENANT);
    assert_eq!(one["record"]["value_json"]["workflow"], "later");
    assert!(one["partition"].is_i64() && one["offset"].is_i64(), "{one}");

    // Another tenant sees none of them, and cannot touch one.
    assert!(all_pages(&agent, &listing, &other, "dead_letters").is_empty());
    let (status, _) = call(
        &agent,
        "GET",
        &format!("{api}/v1/dead-letters/{first}"),
        &other,
        None,
    );
    assert_eq!(status, 404);
    let (status, _) = call(
        &agent,
        "POST",
        &format!("{api}/v1/dead-letters/{first}/replay"),
        &other,
        None,
    );
    assert_eq!(status, 404);
    // A user may read but not replay; only a platform admin sees every tenant's.
    let (status, _) = call(
        &agent,
        "POST",
        &format!("{api}/v1/dead-letters/{first}/replay"),
        &user,
        None,
    );
    assert_eq!(status, 403);
    let (status, _) = call(
        &agent,
        "GET",
        &format!("{api}/v1/dead-letters?all_tenants=true"),
        &admin,
        None,
    );
    assert_eq!(status, 403);
    let everyone = all_pages(
        &agent,
        &format!("{api}/v1/dead-letters?all_tenants=true"),
        &platform,
        "dead_letters",
    );
    let nobodys: Vec<&Value> = everyone.iter().filter(|l| l["tenant"].is_null()).collect();
    assert_eq!(everyone.len(), LETTERS + 1, "{everyone:?}");
    assert_eq!(nobodys.len(), 1);
    assert_eq!(nobodys[0]["kind"], "undecodable");

    // The workflow arrives; every letter is replayed once.
    let (status, body) = call(
        &agent,
        "POST",
        &format!("{api}/v1/workflows"),
        &admin,
        Some(("application/yaml", LATER)),
    );
    assert!(
        status == 201 || status == 200,
        "registering: {status} {body}"
    );
    for id in &ids {
        let (status, body) = call(
            &agent,
            "POST",
            &format!("{api}/v1/dead-letters/{id}/replay"),
            &admin,
            None,
        );
        assert_eq!(status, 200, "replaying {id}: {body}");
        assert_eq!(body["state"], "replayed");
        assert_eq!(body["topic"], topic);
    }
    // A second replay is refused, by the API and by the operator's command alike.
    for id in &ids {
        let (status, body) = call(
            &agent,
            "POST",
            &format!("{api}/v1/dead-letters/{id}/replay"),
            &admin,
            None,
        );
        assert_eq!(status, 409, "second replay of {id}: {body}");
    }
    let again = aiq(
        &config,
        &[
            "dead-letters",
            "replay",
            "--all",
            "--tenant",
            TENANT,
            "--kind",
            "unknown_workflow",
        ],
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("0 replayed, 100 refused, 0 failed"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Exactly one successful run per letter, each with its letter's input.
    let runs_url = format!("{api}/v1/runs?workflow=later");
    let mut runs = Vec::new();
    wait_until("100 runs succeeded", Duration::from_secs(120), || {
        runs = all_pages(&agent, &runs_url, &user, "runs");
        runs.len() >= LETTERS && runs.iter().all(|r| r["status"] == "succeeded")
    });
    // Late duplicates would show up now.
    std::thread::sleep(Duration::from_secs(5));
    runs = all_pages(&agent, &runs_url, &user, "runs");
    assert_eq!(runs.len(), LETTERS, "{runs:?}");
    let mut inputs = BTreeSet::new();
    for r in &runs {
        assert_eq!(r["status"], "succeeded", "{r}");
        let (status, detail) = call(
            &agent,
            "GET",
            &format!("{api}/v1/runs/{}", r["run_id"].as_str().unwrap()),
            &user,
            None,
        );
        assert_eq!(status, 200);
        inputs.insert(detail["input"]["n"].as_u64().unwrap());
    }
    assert_eq!(inputs, (0..LETTERS as u64).collect());

    // Replayed letters say so; the operator lists them, and resolves the one nobody owns.
    let replayed = all_pages(
        &agent,
        &format!("{listing}&state=replayed"),
        &user,
        "dead_letters",
    );
    assert_eq!(replayed.len(), LETTERS);
    let (_, one) = call(
        &agent,
        "GET",
        &format!("{api}/v1/dead-letters/{first}"),
        &user,
        None,
    );
    assert_eq!(one["state"], "replayed");
    assert!(one["replayed_offset"].is_i64(), "{one}");
    let listed = aiq(&config, &["dead-letters", "list", "--state", "replayed"]);
    assert!(String::from_utf8_lossy(&listed.stderr).contains("100 dead letters"));
    let orphan = nobodys[0]["id"].as_str().unwrap();
    let shown = aiq(&config, &["dead-letters", "show", orphan]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("value:     not json"));
    let resolved = aiq(&config, &["dead-letters", "resolve", orphan]);
    assert!(String::from_utf8_lossy(&resolved.stderr).contains("1 resolved"));
    let (status, _) = call(
        &agent,
        "POST",
        &format!("{api}/v1/dead-letters/{orphan}/replay"),
        &platform,
        None,
    );
    assert_eq!(status, 409, "a resolved letter is not replayed");
}
