//! What the tests that drive a real `aiq` process share: its command line with only the
//! test's configuration, an HTTP client, free ports, and processes killed however the
//! test ends.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills its processes however the test ends.
pub struct Processes(pub Vec<(&'static str, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (name, child) in &mut self.0 {
            if let Err(e) = child.kill() {
                eprintln!("stopping {name}: {e}");
            }
            let _ = child.wait();
        }
    }
}

/// `aiq` with only the test's configuration: inherited AIQ_* variables (the services'
/// addresses among them) are not this deployment's configuration. `dev_secret` signs
/// the tokens `aiq token` prints.
pub fn aiq_command(config: &Path, dev_secret: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aiq"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AIQ_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("AIQ_DEV_JWT_SECRET", dev_secret);
    cmd
}

/// Runs `aiq args` to its end; it must succeed.
pub fn aiq(config: &Path, dev_secret: &str, args: &[&str]) -> Output {
    let o = aiq_command(config, dev_secret, args).output().unwrap();
    assert!(
        o.status.success(),
        "aiq {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A client that reports every status as an answer, not an error.
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

pub fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("{what}: {:.1}s", start.elapsed().as_secs_f64());
}

/// The configuration of a deployment named `name` (its topic prefix and keyspace)
/// with every stage, the API and operations listeners on `ports`, the Parquet history
/// under `history`, and `extra` appended.
pub fn config_text(
    name: &str,
    brokers: &str,
    contact_points: &str,
    (api_port, ops_port): (u16, u16),
    history: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
topic_prefix = "{name}."
tenant_partitions = 4
work_partitions = 4

[cql]
contact_points = "{contact_points}"
keyspace = "{name}"

[serve]
roles = "ingest,orchestrator,worker,sink"
http_listen = "127.0.0.1:{api_port}"
ops_listen = "127.0.0.1:{ops_port}"

[ingest]
# Tests name tenants freely; the registry's own test sets AIQ_INGEST_OPEN_TENANTS=false.
open_tenants = true

[sink.parquet]
root = "{history}"

[analytics]
root = "{history}"
{extra}
"#
    )
}

/// A whole `aiq serve` of the test's own: fresh topics (prefix) and keyspace, every
/// stage, the API on a free port; stopped when dropped.
pub struct Deployment {
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub api: String,
    pub agent: ureq::Agent,
    pub brokers: String,
    pub prefix: String,
    dev_secret: &'static str,
    _procs: Processes,
}

impl Deployment {
    /// Starts one; `extra` is appended to its configuration file.
    pub fn start(
        label: &str,
        brokers: &str,
        contact_points: &str,
        dev_secret: &'static str,
        extra: &str,
    ) -> Self {
        Self::start_with_env(label, brokers, contact_points, dev_secret, extra, &[])
    }

    /// As [`Deployment::start`], with `env` set for `aiq serve` (configuration
    /// variables such as `AIQ_INGEST_OPEN_TENANTS`).
    pub fn start_with_env(
        label: &str,
        brokers: &str,
        contact_points: &str,
        dev_secret: &'static str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let name = aiq_testkit::unique(label);
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = format!("{name}.");
        let config = dir.join("aiq.toml");
        let history = dir.join("history").display().to_string();
        // Every deployment seals its tenants' payloads under a deployment key of its
        // own, unless the test configures its own key.
        let mut extra = extra.to_owned();
        if !extra.contains("[secrets]") {
            let key_file = dir.join("deployment.key");
            let line = aiq_secrets::Keyring::new_key_line("test-1").unwrap();
            std::fs::write(&key_file, format!("{line}\n")).unwrap();
            extra.push_str(&format!(
                "\n[secrets]\nkey_file = \"{}\"\n",
                key_file.display()
            ));
        }
        let write_config = |ports: (u16, u16)| {
            std::fs::write(
                &config,
                config_text(&name, brokers, contact_points, ports, &history, &extra),
            )
            .unwrap();
        };
        write_config((free_port(), free_port()));
        aiq(&config, dev_secret, &["topics", "apply"]);
        aiq(&config, dev_secret, &["schema", "apply"]);
        let agent = http();
        let log = dir.join("serve.log");
        // A free port is free when asked, not when `aiq serve` binds it: a client's
        // outgoing connection can take it meanwhile. Then the process ends at once
        // ("Address already in use") and is started again on other ports.
        let mut attempt = 0;
        let (api, procs) = loop {
            attempt += 1;
            let api_port = free_port();
            write_config((api_port, free_port()));
            let serve = aiq_command(&config, dev_secret, &["serve"])
                .envs(env.iter().copied())
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let mut procs = Processes(vec![("aiq serve", serve)]);
            let api = format!("http://127.0.0.1:{api_port}");
            let mut exited = false;
            wait_until("aiq serve ready", Duration::from_secs(120), || {
                exited = procs.0[0].1.try_wait().unwrap().is_some();
                exited
                    || agent
                        .get(&format!("{api}/readyz"))
                        .call()
                        .is_ok_and(|r| r.status().as_u16() == 200)
            });
            if !exited {
                break (api, procs);
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                attempt < 3 && text.contains("Address already in use"),
                "aiq serve ended while starting (attempt {attempt}):\n{text}"
            );
        };
        Self {
            name,
            dir,
            config,
            api,
            agent,
            brokers: brokers.to_owned(),
            prefix,
            dev_secret,
            _procs: procs,
        }
    }

    /// The process id of its `aiq serve`.
    pub fn serve_pid(&self) -> u32 {
        self._procs.0[0].1.id()
    }

    /// Runs `aiq args` against this deployment; it must succeed.
    pub fn aiq(&self, args: &[&str]) -> Output {
        aiq(&self.config, self.dev_secret, args)
    }

    /// A development token for `tenant` in `role`.
    pub fn token(&self, tenant: &str, role: &str) -> String {
        let o = self.aiq(&["token", "--tenant", tenant, "--role", role]);
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    }

    /// `method path` on the API with `token`; the status and the JSON answer (null when
    /// there is none).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<(&str, &str)>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.api);
        // An API key (`aiq_...`) goes in its own header; anything else is a bearer token.
        let (header, auth) = if token.starts_with("aiq_") {
            ("x-api-key", token.to_owned())
        } else {
            ("authorization", format!("Bearer {token}"))
        };
        let a = &self.agent;
        let mut r = match (method, body) {
            ("GET", _) => a.get(&url).header(header, &auth).call(),
            ("DELETE", _) => a.delete(&url).header(header, &auth).call(),
            ("PUT", Some((ct, b))) => a
                .put(&url)
                .header(header, &auth)
                .header("content-type", ct)
                .send(b),
            ("PATCH", Some((ct, b))) => a
                .patch(&url)
                .header(header, &auth)
                .header("content-type", ct)
                .send(b),
            (_, Some((ct, b))) => a
                .post(&url)
                .header(header, &auth)
                .header("content-type", ct)
                .send(b),
            (_, None) => a.post(&url).header(header, &auth).send_empty(),
        }
        .unwrap();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (
            r.status().as_u16(),
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    /// Every item under `field` of a paged list, following `next_page_token`.
    pub fn all_pages(&self, path: &str, token: &str, field: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        let sep = if path.contains('?') { '&' } else { '?' };
        loop {
            let page = match &next {
                Some(t) => format!("{path}{sep}limit=500&page_token={t}"),
                None => format!("{path}{sep}limit=500"),
            };
            let (status, body) = self.call("GET", &page, token, None);
            assert_eq!(status, 200, "{page}: {body}");
            out.extend(body[field].as_array().cloned().unwrap_or_default());
            match body["next_page_token"].as_str() {
                Some(t) => next = Some(t.to_owned()),
                None => return out,
            }
        }
    }
}

/// Every file's text below `dir` (a mail server's maildir, say); unreadable files and a
/// missing folder give nothing.
pub fn texts_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(texts_under(&p));
        } else if let Ok(t) = std::fs::read_to_string(&p) {
            out.push(t);
        }
    }
    out
}
