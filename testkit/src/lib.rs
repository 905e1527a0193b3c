//! Finds the real services integration tests run against.
//!
//! Tests read the addresses that `scripts/services env` prints. A local `cargo test`
//! without services skips those tests with a message; under CI (`CI` set) or with
//! `AIQ_REQUIRE_SERVICES=1` a missing address fails the test instead, so a CI run can
//! never pass by skipping.
//!
//! With the `containers` feature and `AIQ_TESTCONTAINERS=1`, a missing address is filled
//! by starting the official Docker image through testcontainers instead (a machine with
//! a Docker engine; these build machines have none).

#[cfg(feature = "containers")]
mod containers;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub const KAFKA: &str = "AIQ_KAFKA_BROKERS";
pub const CQL: &str = "AIQ_CQL_CONTACT_POINTS";
pub const PROMETHEUS: &str = "AIQ_PROMETHEUS_URL";
/// The `sql` connector's peer: a `postgres://` URL.
pub const PG: &str = "AIQ_PG_URL";
/// The `email` connector's peer; `AIQ_SMTP_USER`, `_PASSWORD`, `_CA` and `_MAILDIR` go
/// with it.
pub const SMTP: &str = "AIQ_SMTP_PORT";
/// Azurite's blob endpoint (`scripts/services up azurite`); `AZURE_STORAGE_*` and
/// `AIQ_AZURITE_CONTAINER` go with it.
pub const AZURITE: &str = "AZURITE_BLOB_STORAGE_URL";
/// The two OpenID providers (`scripts/services up oidc`): issuer a and issuer b, with
/// the clients `scripts/oidc-provider.mjs` lists.
pub const OIDC_A: &str = "AIQ_OIDC_A_URL";
pub const OIDC_B: &str = "AIQ_OIDC_B_URL";

/// A history root of its own in Azurite's container (`az://<container>/<unique>`), or
/// `None` when the test should skip (see [`service`]).
pub fn azurite_root(label: &str) -> Option<String> {
    service(AZURITE)?;
    let container = std::env::var("AIQ_AZURITE_CONTAINER").unwrap_or_else(|_| "aiq".to_owned());
    Some(format!("az://{container}/{}", unique(label)))
}

/// The address in `var`, or `None` (after saying why) when the test should skip.
///
/// # Panics
/// When the address is missing but services are required (CI).
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        #[cfg(feature = "containers")]
        _ if std::env::var("AIQ_TESTCONTAINERS").is_ok_and(|v| v == "1")
            && containers::defined(var) =>
        {
            Some(containers::address(var))
        }
        _ => {
            let required = std::env::var_os("CI").is_some()
                || std::env::var("AIQ_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{var} is not set, but services are required here: start them with \
                 `scripts/services up` and export `scripts/services env`"
            );
            eprintln!(
                "skipping: {var} is not set; run `scripts/services up` and \
                 `eval \"$(scripts/services env)\"` to run this test"
            );
            None
        }
    }
}

/// Returns early from a test when the service is not configured.
#[macro_export]
macro_rules! require_service {
    ($var:expr) => {
        match $crate::service($var) {
            Some(addr) => addr,
            None => return,
        }
    };
}

/// A name no other test run uses, for topics, keyspaces and groups: tests share one
/// broker and one Cassandra and must not see each other's data.
pub fn unique(label: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{label}_{:x}_{}_{n}",
        nanos & 0xffff_ffff_ffff,
        std::process::id()
    )
}

/// Per thread of process `pid` (`None`: this process), by name: CPU time in clock ticks
/// and the nice value, read from `/proc`. Panics where `/proc` cannot be read: a test
/// that asks is a test of thread placement on Linux.
#[cfg(target_os = "linux")]
#[allow(clippy::unwrap_used)]
pub fn threads_of(pid: Option<u32>) -> Vec<(String, u64, i64)> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}/task"),
        None => "/proc/self/task".to_owned(),
    };
    let mut out = Vec::new();
    for task in std::fs::read_dir(dir).unwrap() {
        let dir = task.unwrap().path();
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue; // ended meanwhile
        };
        // The name is in parentheses and may hold spaces; fields follow the last ')'.
        let (head, tail) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_owned();
        let f: Vec<&str> = tail.split_whitespace().collect();
        // Fields 14, 15 (utime, stime) and 19 (nice), counted from 1 with pid and name.
        let cpu = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        out.push((name, cpu, f[16].parse().unwrap()));
    }
    out
}
