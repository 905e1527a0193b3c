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
