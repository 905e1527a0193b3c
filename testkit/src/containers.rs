//! The official images, started once per test binary through testcontainers.
//!
//! Containers live as long as the test process: a static is never dropped, so they are
//! labelled `dev.automateiq.test` and `docker rm -f $(docker ps -q --filter
//! label=dev.automateiq.test)` removes them.

use std::sync::OnceLock;

use testcontainers_modules::kafka::apache;
use testcontainers_modules::scylladb::ScyllaDB;
use testcontainers_modules::testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers_modules::testcontainers::runners::SyncRunner;
use testcontainers_modules::testcontainers::{GenericImage, ImageExt};

const LABEL: &str = "dev.automateiq.test";
const KAFKA_TAG: &str = "4.1.1";
const CASSANDRA_TAG: &str = "5.0";

fn start_kafka() -> Result<String, String> {
    let c = apache::Kafka::default()
        .with_jvm_image()
        .with_tag(KAFKA_TAG)
        .with_label(LABEL, "kafka")
        .start()
        .map_err(|e| e.to_string())?;
    let port = c
        .get_host_port_ipv4(apache::KAFKA_PORT)
        .map_err(|e| e.to_string())?;
    // Kept running until the process exits; see the module docs.
    std::mem::forget(c);
    Ok(format!("127.0.0.1:{port}"))
}

/// Cassandra by default, like `scripts/services`; ScyllaDB itself with
/// `AIQ_TESTCONTAINERS_STORE=scylladb`.
fn start_store() -> Result<String, String> {
    let port = if std::env::var("AIQ_TESTCONTAINERS_STORE").is_ok_and(|v| v == "scylladb") {
        let c = ScyllaDB::default()
            .with_label(LABEL, "scylladb")
            .start()
            .map_err(|e| e.to_string())?;
        let port = c.get_host_port_ipv4(9042).map_err(|e| e.to_string())?;
        std::mem::forget(c);
        port
    } else {
        let c = GenericImage::new("cassandra", CASSANDRA_TAG)
            .with_exposed_port(9042.tcp())
            .with_wait_for(WaitFor::message_on_stdout(
                "Starting listening for CQL clients",
            ))
            .with_label(LABEL, "cassandra")
            .with_env_var("MAX_HEAP_SIZE", "1G")
            .with_env_var("HEAP_NEWSIZE", "200M")
            .start()
            .map_err(|e| e.to_string())?;
        let port = c.get_host_port_ipv4(9042).map_err(|e| e.to_string())?;
        std::mem::forget(c);
        port
    };
    Ok(format!("127.0.0.1:{port}"))
}

/// Whether a container stands in for `var`; other services are found as without Docker.
pub fn defined(var: &str) -> bool {
    matches!(var, crate::KAFKA | crate::CQL)
}

/// The address for `var`, starting its container on first use.
///
/// # Panics
/// When the container cannot start: the test cannot run, and must say why.
pub fn address(var: &str) -> String {
    static KAFKA: OnceLock<Result<String, String>> = OnceLock::new();
    static STORE: OnceLock<Result<String, String>> = OnceLock::new();
    // The blocking runner builds its own runtime, which must not nest inside a test's
    // tokio runtime: start containers on a plain thread.
    let start = |f: fn() -> Result<String, String>| {
        std::thread::spawn(f)
            .join()
            .unwrap_or_else(|_| Err("container start panicked".into()))
    };
    let result = match var {
        crate::KAFKA => KAFKA.get_or_init(|| start(start_kafka)),
        crate::CQL => STORE.get_or_init(|| start(start_store)),
        other => panic!("no container is defined for {other}"),
    };
    match result {
        Ok(addr) => addr.clone(),
        Err(e) => panic!("AIQ_TESTCONTAINERS=1 but the container for {var} did not start: {e}"),
    }
}
