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

/// A running `aiq serve` with topics and schema applied, a platform admin token, and
/// its API's base URL.
pub struct Served {
    pub serve: Serve,
    pub token: String,
    pub api: String,
}

/// Applies topics and schema for `env`, mints a platform admin token, starts
/// `aiq serve` and waits (90 s at most) until its API at `listen` is ready.
pub async fn serve_ready(env: &[(&str, String)], listen: &str) -> Served {
    serve_ready_in(env, listen, None).await
}

/// [`serve_ready`] with `aiq serve` in the working folder `cwd`.
pub async fn serve_ready_in(
    env: &[(&str, String)],
    listen: &str,
    cwd: Option<&std::path::Path>,
) -> Served {
    let mut topics = aiq(env);
    topics.args(["topics", "apply"]);
    ok(topics);
    let mut schema = aiq(env);
    schema.args(["schema", "apply"]);
    ok(schema);
    let mut token = aiq(env);
    token.args(["token", "--tenant", "ops", "--role", "platform_admin"]);
    let token = ok(token).trim().to_owned();

    let mut serve = aiq(env);
    serve
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    if let Some(dir) = cwd {
        serve.current_dir(dir);
    }
    let mut serve = Serve(serve.spawn().unwrap());
    let api = format!("http://{listen}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        if let Ok(r) = client.get(format!("{api}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(serve.0.try_wait().unwrap().is_none(), "aiq serve exited");
        assert!(std::time::Instant::now() < deadline, "aiq serve not ready");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    Served { serve, token, api }
}
