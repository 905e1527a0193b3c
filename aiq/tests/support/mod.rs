//! What the tests that drive a real `aiq` process share: its command line with only the
//! test's configuration, an HTTP client, free ports, and processes killed however the
//! test ends.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

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
