//! The effective configuration: `config/aiq.toml` (compiled in), then `--config FILE`,
//! then `AIQ_<SECTION>_<KEY>` variables, then flags.

use std::path::Path;

use aiq_analytics::AnalyticsSettings;
use aiq_connectors::ConnectorSettings;
use aiq_ingest::settings::IngestSettings;
use aiq_kafka::KafkaSettings;
use aiq_orchestrator::OrchestratorSettings;
use aiq_secrets::SecretsSettings;
use aiq_sink::SinkSettings;
use aiq_sql::CqlSettings;
use aiq_worker::WorkerSettings;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::roles::Roles;

/// The checked-in defaults; the docs quote this file.
pub const DEFAULTS: &str = include_str!("../../config/aiq.toml");

/// Top-level sections; an `AIQ_` variable outside them (`AIQ_DEV_JWT_SECRET`,
/// `AIQ_PROMETHEUS_URL`) is not configuration and is left alone.
const SECTIONS: [&str; 11] = [
    "kafka",
    "cql",
    "serve",
    "ingest",
    "orchestrator",
    "worker",
    "connectors",
    "secrets",
    "sink",
    "analytics",
    "log",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaSettings,
    pub cql: CqlSettings,
    pub serve: ServeSettings,
    pub ingest: IngestSettings,
    pub orchestrator: OrchestratorSettings,
    pub worker: WorkerSettings,
    pub connectors: ConnectorSettings,
    pub secrets: SecretsSettings,
    pub sink: SinkSettings,
    pub analytics: AnalyticsSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    pub roles: Roles,
    /// The ingest API's address (with the ingest role).
    pub http_listen: String,
    /// The operations listener's address: `/metrics`, `/healthz`, `/readyz`, whatever
    /// the roles. Kept off the API listener, so that metrics are not public with it.
    pub ops_listen: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: not found")]
    Missing { path: String },
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Maps `AIQ_KAFKA_TOPIC_PREFIX` to `kafka.topic_prefix`, and a double underscore to a
/// nested key (`AIQ_INGEST_TRIGGER_QUOTA__PER_SECOND` to
/// `ingest.trigger_quota.per_second`); `None` for variables outside the sections.
fn env_key(var: &str) -> Option<String> {
    let lower = var.to_ascii_lowercase();
    let (section, key) = lower.split_once('_')?;
    SECTIONS
        .contains(&section)
        .then(|| format!("{section}.{}", key.replace("__", ".")))
}

/// Loads the configuration. `flags` holds the values given on the command line, as a
/// partial document (`{"kafka": {"brokers": ...}}`).
pub fn load(file: Option<&Path>, flags: serde_json::Value) -> Result<Config, ConfigError> {
    let mut fig = Figment::from(Toml::string(DEFAULTS));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::Missing {
                path: path.display().to_string(),
            });
        }
        fig = fig.merge(Toml::file(path));
    }
    let env = Env::prefixed("AIQ_")
        .filter_map(|k| env_key(k.as_str()).map(Into::into))
        .split(".");
    fig = fig.merge(env).merge(Serialized::defaults(flags));
    let config: Config = fig.extract().map_err(|e| {
        // figment's errors name the key path and where the value came from.
        ConfigError::Invalid(e.to_string())
    })?;
    config
        .kafka
        .validate()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    config
        .cql
        .validate()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    config
        .sink
        .validate()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    config
        .analytics
        .validate()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok(config)
}

#[cfg(test)]
// figment::Jail fixes the closures' error type to figment::Error, a large one.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn variables_map_to_section_keys() {
        assert_eq!(
            env_key("KAFKA_TOPIC_PREFIX").as_deref(),
            Some("kafka.topic_prefix")
        );
        assert_eq!(
            env_key("CQL_CONTACT_POINTS").as_deref(),
            Some("cql.contact_points")
        );
        assert_eq!(env_key("DEV_JWT_SECRET"), None);
        assert_eq!(env_key("PROMETHEUS_URL"), None);
        assert_eq!(
            env_key("INGEST_TRIGGER_QUOTA__PER_SECOND").as_deref(),
            Some("ingest.trigger_quota.per_second")
        );
    }

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "site.toml",
                "[kafka]\nbrokers = \"file:1\"\ntopic_prefix = \"site.\"\n",
            )?;
            jail.set_env("AIQ_KAFKA_BROKERS", "env:1");
            jail.set_env("AIQ_DEV_JWT_SECRET", "not-config");
            let c = load(Some(Path::new("site.toml")), json!({})).map_err(|e| e.to_string())?;
            assert_eq!(c.kafka.brokers, "env:1");
            assert_eq!(c.kafka.topic_prefix, "site.");
            assert_eq!(c.cql.keyspace, "aiq");
            let c = load(
                Some(Path::new("site.toml")),
                json!({"kafka": {"brokers": "flag:1"}}),
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(c.kafka.brokers, "flag:1");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("AIQ_KAFKA_TENANT_PARTITIONS", "many");
            let e = load(None, json!({})).unwrap_err().to_string();
            assert!(
                e.to_lowercase().contains("kafka.tenant_partitions") && e.contains("\"many\""),
                "{e}"
            );
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[kafka]\nbrokerz = \"x\"\n")?;
            let e = load(Some(Path::new("bad.toml")), json!({}))
                .unwrap_err()
                .to_string();
            assert!(e.contains("brokerz"), "{e}");
            Ok(())
        });
        let e = load(Some(Path::new("/nonexistent/aiq.toml")), json!({})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration file /nonexistent/aiq.toml: not found"
        );
    }

    #[test]
    fn the_defaults_file_parses_and_validates() {
        figment::Jail::expect_with(|_| {
            let c = load(None, json!({})).map_err(|e| e.to_string())?;
            assert_eq!(c.kafka.topic_prefix, "aiq.");
            assert_eq!(c.serve.roles.to_string(), "ingest,orchestrator,worker,sink");
            // The embedded defaults and the file must say the same.
            assert_eq!(c.orchestrator, OrchestratorSettings::default());
            assert_eq!(c.worker, WorkerSettings::default());
            assert_eq!(c.connectors, ConnectorSettings::default());
            assert_eq!(c.secrets, SecretsSettings::default());
            assert_eq!(c.sink, SinkSettings::default());
            assert_eq!(c.analytics, AnalyticsSettings::default());
            assert_eq!(c.ingest.trigger_quota.per_second.get(), 100);
            assert!(c.ingest.tenants.is_empty());
            Ok(())
        });
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod example_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_event_hubs_example_loads_and_maps_to_sasl_ssl() {
        figment::Jail::expect_with(|_| {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../config/examples/azure-event-hubs.toml"
            );
            let c = load(Some(Path::new(path)), json!({})).map_err(|e| e.to_string())?;
            assert!(!c.kafka.manage_topics);
            let rd = c.kafka.producer_config();
            assert_eq!(rd.get("security.protocol"), Some("sasl_ssl"));
            assert_eq!(rd.get("sasl.mechanism"), Some("PLAIN"));
            assert_eq!(rd.get("sasl.username"), Some("$ConnectionString"));
            assert_eq!(rd.get("connections.max.idle.ms"), Some("180000"));
            Ok(())
        });
    }
}
