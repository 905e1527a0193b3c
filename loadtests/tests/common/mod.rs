//! What the tests that start a real `aiq serve` share: the binary, a clean environment
//! for it, and a guard that stops it however the test ends.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command};

/// `$AIQ_BIN`, or `debug/aiq` under `$CARGO_TARGET_DIR` or the workspace's `target`
/// (`cargo build -p aiq`).
pub fn aiq_bin() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        std::env::var_os("AIQ_BIN").map(PathBuf::from),
        std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("debug/aiq")),
        Some(workspace.join("target/debug/aiq")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .expect("no aiq binary: run `cargo build -p aiq` or set AIQ_BIN")
}

/// `aiq` with only this deployment's configuration: other `AIQ_` variables of the test's
/// environment are not its business.
pub fn aiq(env: &[(&str, String)]) -> Command {
    let mut c = Command::new(aiq_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("AIQ_") {
            c.env_remove(k);
        }
    }
    c.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    c
}

/// Runs `c`, which must succeed, and returns its standard output.
pub fn ok(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Stops `aiq serve` however the test ends.
pub struct Serve(pub Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A chaos test's deployment on the shared Kafka and Cassandra: a topic prefix and a
/// keyspace of its own, an API port, a configuration that lets the connectors call the
/// load generator's target on loopback with a breaker that never opens, and the `AIQ_`
/// environment every `aiq` of the test gets (a test adds its own on top).
pub struct ChaosDeployment {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub prefix: String,
    pub listen: String,
    pub history: PathBuf,
    pub env: Vec<(String, String)>,
}

pub fn chaos_deployment(label: &str, brokers: &str, cql: &str, secret: &str) -> ChaosDeployment {
    let name = aiq_testkit::unique(label);
    let prefix = format!("{}.", name.replace('_', "-"));
    let listen = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aiq.toml");
    std::fs::write(
        &config,
        "[connectors.outbound]\nallow = [\"127.0.0.1/32\"]\n[connectors.breaker]\nwindow = 20\nmin_calls = 1000\n",
    )
    .unwrap();
    let history = dir.path().join("history");
    let env = [
        ("AIQ_CONFIG", config.display().to_string()),
        ("AIQ_KAFKA_BROKERS", brokers.to_owned()),
        ("AIQ_KAFKA_TOPIC_PREFIX", prefix.clone()),
        ("AIQ_CQL_CONTACT_POINTS", cql.to_owned()),
        ("AIQ_CQL_KEYSPACE", name.clone()),
        ("AIQ_SERVE_HTTP_LISTEN", listen.clone()),
        ("AIQ_SINK_PARQUET__ROOT", history.display().to_string()),
        ("AIQ_INGEST_TRIGGER_QUOTA__PER_SECOND", "100000".into()),
        ("AIQ_INGEST_TRIGGER_QUOTA__BURST", "100000".into()),
        ("AIQ_DEV_JWT_SECRET", secret.to_owned()),
        ("AIQ_LOG_FILTER", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    ChaosDeployment {
        dir,
        name,
        prefix,
        listen,
        history,
        env,
    }
}
