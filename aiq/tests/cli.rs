//! The `aiq` binary as an operator uses it.

use std::process::{Command, Output};

use aiq_testkit::{CQL, KAFKA, require_service, unique};

fn aiq(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aiq"));
    cmd.args(args);
    // The tests choose every address themselves.
    for (k, _) in std::env::vars() {
        if k.starts_with("AIQ_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("aiq runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_says_what_every_command_does() {
    let top = aiq(&["--help"], &[]);
    assert!(top.status.success());
    let text = stdout(&top);
    for (cmd, words) in [
        ("serve", "Run pipeline stages in this process"),
        ("topics", "Kafka topics, declared in code"),
        ("schema", "The CQL schema, as ordered migrations"),
        ("check", "Prove the services work"),
        ("config", "Print the effective configuration"),
        ("workflows", "Workflow definitions"),
        ("token", "short-lived development token"),
    ] {
        assert!(
            text.contains(cmd) && text.contains(words),
            "--help lacks {cmd}: {words}\n{text}"
        );
    }
    for (args, words) in [
        (vec!["serve", "--help"], "--roles"),
        (vec!["topics", "--help"], "apply"),
        (
            vec!["topics", "apply", "--help"],
            "report drift it cannot fix",
        ),
        (
            vec!["topics", "list", "--help"],
            "Print every declared topic",
        ),
        (
            vec!["schema", "apply", "--help"],
            "Apply the migrations not yet applied",
        ),
        (vec!["schema", "status", "--help"], "List every migration"),
        (
            vec!["workflows", "validate", "--help"],
            "one line per error",
        ),
        (
            vec!["check", "--help"],
            "a record through Kafka and a row through the store",
        ),
    ] {
        let o = aiq(&args, &[]);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(
            stdout(&o).contains(words),
            "{args:?} help lacks {words:?}:\n{}",
            stdout(&o)
        );
    }
}

#[test]
fn workflows_validate_prints_one_line_per_error_and_sets_the_exit_status() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/workflows");
    let files: Vec<String> = std::fs::read_dir(examples)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let args: Vec<&str> = std::iter::once("workflows")
        .chain(std::iter::once("validate"))
        .chain(files.iter().map(String::as_str))
        .collect();
    let o = aiq(&args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "", "valid files print no error lines");

    let dir = std::env::temp_dir().join(unique("wf"));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "id: bad\nsteps:\n  - id: a\n    task: { connector: http, retry: { max_attempts: 0 } }\n    next: b\n",
    )
    .unwrap();
    let o = aiq(&["workflows", "validate", bad.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        format!(
            "{0}:/steps/0/task/retry/max_attempts: must be between 1 and 100, got 0\n{0}:/steps/0/next: there is no step \"b\"\n",
            bad.display()
        )
    );
}

#[test]
fn token_needs_the_development_secret_and_mints_a_verifiable_token() {
    let o = aiq(&["token", "--tenant", "acme", "--role", "user"], &[]);
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o).trim(),
        "aiq: AIQ_DEV_JWT_SECRET is not set; development tokens are signed with it (32 bytes or more)"
    );
    let secret = "cli-test-development-secret-0123456789";
    let o = aiq(
        &[
            "token",
            "--tenant",
            "acme",
            "--role",
            "tenant_admin",
            "--ttl",
            "60",
        ],
        &[("AIQ_DEV_JWT_SECRET", secret)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let token = stdout(&o).trim().to_owned();
    let verifier = aiq_auth::JwtVerifier::new(aiq_auth::JwtConfig {
        audience: "automateiq".into(),
        hs256_secret: Some(secret.into()),
        ..aiq_auth::JwtConfig::default()
    })
    .unwrap();
    let p = verifier.verify(&token).unwrap();
    assert_eq!(
        (p.tenant.as_str(), p.role),
        ("acme", aiq_auth::Role::TenantAdmin)
    );
    let o = aiq(
        &["token", "--tenant", "acme", "--role", "root"],
        &[("AIQ_DEV_JWT_SECRET", secret)],
    );
    assert!(stderr(&o).contains("root"), "{}", stderr(&o));
}

#[test]
fn topics_list_prints_the_declaration_under_the_prefix() {
    let o = aiq(&["topics", "list"], &[("AIQ_KAFKA_TOPIC_PREFIX", "demo.")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("demo.triggers") && text.contains("key = tenant id"),
        "{text}"
    );
    assert!(
        text.contains("demo.orchestrator-changelog") && text.contains("compact"),
        "{text}"
    );
}

#[test]
fn config_redacts_secrets_and_bad_config_names_the_key() {
    let o = aiq(
        &["config", "--brokers", "flag:9092"],
        &[
            ("AIQ_KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("AIQ_KAFKA_SASL_MECHANISM", "PLAIN"),
            ("AIQ_KAFKA_SASL_USERNAME", "$ConnectionString"),
            (
                "AIQ_KAFKA_SASL_PASSWORD",
                "Endpoint=sb://x/;SharedAccessKey=topsecret",
            ),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("brokers = \"flag:9092\""), "{text}");
    assert!(
        text.contains("<redacted>") && !text.contains("topsecret"),
        "{text}"
    );

    let o = aiq(&["config"], &[("AIQ_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")]);
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o).trim(),
        "aiq: configuration: kafka setting `sasl_mechanism`: is required with a SASL security_protocol"
    );

    let o = aiq(&["serve", "--roles", "ingest,cron"], &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("\"cron\" is not a role"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn topics_and_schema_apply_twice_change_nothing_the_second_time_and_check_passes() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let prefix = format!("{}.", unique("cli"));
    let keyspace = unique("cli").to_lowercase();
    let env = [
        ("AIQ_KAFKA_BROKERS", brokers.as_str()),
        ("AIQ_KAFKA_TOPIC_PREFIX", prefix.as_str()),
        ("AIQ_KAFKA_TENANT_PARTITIONS", "3"),
        ("AIQ_KAFKA_WORK_PARTITIONS", "2"),
        ("AIQ_CQL_CONTACT_POINTS", cql.as_str()),
        ("AIQ_CQL_KEYSPACE", keyspace.as_str()),
    ];

    let first = aiq(&["topics", "apply"], &env);
    assert!(first.status.success(), "{}", stderr(&first));
    let lines: Vec<String> = stdout(&first).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), aiq_topics::TopicKind::ALL.len(), "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with(&prefix) && l.ends_with(" created")),
        "{lines:?}"
    );
    let second = aiq(&["topics", "apply"], &env);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stdout(&second).lines().all(|l| l.ends_with(" unchanged")),
        "{}",
        stdout(&second)
    );

    let first = aiq(&["schema", "apply"], &env);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).contains("applied 0001_keyspace\napplied 0002_run_history\napplied 0003_service_probes\napplied 0004_registry\napplied 0005_api_keys_by_tenant\napplied 0006_run_indexes\napplied 0007_dead_letters\napplied 0008_replays\napplied 0009_audit_fields\napplied 0010_exports\napplied 0011_run_erasure\n"), "{}", stdout(&first));
    let second = aiq(&["schema", "apply"], &env);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(
        stdout(&second),
        format!(
            "keyspace {keyspace}: 0 migration(s) applied now, {} in all\n",
            aiq_sql::MIGRATIONS.len()
        )
    );
    let status = aiq(&["schema", "status"], &env);
    assert_eq!(
        stdout(&status).matches(" applied ").count(),
        aiq_sql::MIGRATIONS.len(),
        "{}",
        stdout(&status)
    );

    let check = aiq(&["check"], &env);
    assert!(check.status.success(), "{}", stderr(&check));
    let text = stdout(&check);
    assert!(
        text.contains("kafka: read it back") && text.contains("cql:   read it back"),
        "{text}"
    );

    // Serving these topics with another partition count would map tenants to partitions
    // where their state is not: refused before any stage starts, naming the setting.
    let mut other = env.to_vec();
    other.retain(|(k, _)| *k != "AIQ_KAFKA_TENANT_PARTITIONS");
    other.push(("AIQ_KAFKA_TENANT_PARTITIONS", "6"));
    other.push(("AIQ_SERVE_HTTP_LISTEN", "127.0.0.1:0"));
    other.push(("AIQ_SERVE_OPS_LISTEN", "127.0.0.1:0"));
    let o = aiq(&["serve", "--roles", "orchestrator"], &other);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("kafka setting `tenant_partitions`: is 6, but topic")
            && err.contains("has 3 partitions"),
        "{err}"
    );
}

#[test]
fn kafka_down_is_a_clear_error_not_a_hang() {
    // Nothing listens on port 1; the admin request must fail within its timeout.
    let o = aiq(
        &["topics", "apply"],
        &[
            ("AIQ_KAFKA_BROKERS", "127.0.0.1:1"),
            ("AIQ_KAFKA_TOPIC_PREFIX", "nowhere."),
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).starts_with("aiq: Kafka admin request `metadata` failed"),
        "{}",
        stderr(&o)
    );
}

/// A raw HTTP/1.0 GET: the whole answer, or None if nothing answers.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The status line's code of a GET, or None if nothing answers.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    http_get(addr, path)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn serve_becomes_ready_and_stops_cleanly_on_sigterm() {
    let brokers = require_service!(KAFKA);
    let cql = require_service!(CQL);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let ops_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ops = format!("127.0.0.1:{ops_port}");
    let prefix = format!("{}.", unique("serve"));
    let keyspace = unique("serve").to_lowercase();
    let history = std::env::temp_dir()
        .join(unique("serve-history"))
        .display()
        .to_string();
    let env = [
        ("AIQ_SINK_PARQUET__ROOT", history.as_str()),
        ("AIQ_ANALYTICS_ROOT", history.as_str()),
        ("AIQ_KAFKA_BROKERS", brokers.as_str()),
        ("AIQ_KAFKA_TOPIC_PREFIX", prefix.as_str()),
        ("AIQ_KAFKA_TENANT_PARTITIONS", "2"),
        ("AIQ_KAFKA_WORK_PARTITIONS", "2"),
        ("AIQ_CQL_CONTACT_POINTS", cql.as_str()),
        ("AIQ_CQL_KEYSPACE", keyspace.as_str()),
        ("AIQ_SERVE_HTTP_LISTEN", listen.as_str()),
        ("AIQ_SERVE_OPS_LISTEN", ops.as_str()),
        (
            "AIQ_DEV_JWT_SECRET",
            "serve-test-development-secret-0123456789",
        ),
    ];
    assert!(aiq(&["topics", "apply"], &env).status.success());
    assert!(aiq(&["schema", "apply"], &env).status.success());

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aiq"));
    cmd.arg("serve");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while http_status(&listen, "/readyz") != Some(200) {
        assert!(
            std::time::Instant::now() < deadline,
            "aiq serve never became ready"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "aiq serve exited early"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(http_status(&listen, "/openapi.json"), Some(200));
    assert_eq!(http_status(&listen, "/v1/workflows"), Some(401));
    // Metrics are on the operations listener only; health is on both.
    assert_eq!(http_status(&listen, "/metrics"), Some(404));
    assert_eq!(http_status(&ops, "/metrics"), Some(200));
    assert_eq!(http_status(&ops, "/healthz"), Some(200));
    assert_eq!(http_status(&ops, "/readyz"), Some(200));
    assert_eq!(http_status(&ops, "/v1/workflows"), Some(404));
    let metrics = http_get(&ops, "/metrics").unwrap_or_default();
    assert!(
        metrics.contains("content-type: text/plain; version=0.0.4"),
        "{metrics}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "aiq serve ignored SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "exit {status:?}: {err}");
    assert!(err.contains("shutting down"), "{err}");
    // Every stage of the default roles ran and stopped with the process.
    assert!(err.contains("sink started"), "{err}");
    assert!(err.contains("sink stopped"), "{err}");
    // The orchestrator ran beside ingest and stopped with it.
    assert!(err.contains("orchestrator started"), "{err}");
    assert!(err.contains("orchestrator stopped"), "{err}");
    assert!(err.contains("worker stopped"), "{err}");
}
