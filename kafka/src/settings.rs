//! How to reach the brokers. Defaults live in `config/aiq.toml`.

use std::collections::BTreeMap;
use std::fmt;

use aiq_topics::TopicSet;
use rdkafka::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka setting `{field}`: {reason}")]
    Setting { field: &'static str, reason: String },
    #[error("cannot create a Kafka {what} for {brokers}: {source}")]
    Client {
        what: &'static str,
        brokers: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("Kafka admin request `{op}` failed: {source}")]
    Admin {
        op: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("Kafka admin request `{op}` for {resource} failed: {code}")]
    AdminItem {
        op: &'static str,
        resource: String,
        code: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn as_librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// The `[kafka]` section of the configuration.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    /// Prepended to every topic name, e.g. `aiq.` gives `aiq.triggers`.
    pub topic_prefix: String,
    /// Partitions of the tenant-keyed, co-partitioned topics; fixed once topics exist.
    pub tenant_partitions: u32,
    /// Partitions of the run-keyed and sink-facing topics.
    pub work_partitions: u32,
    pub replication_factor: u16,
    /// Whether `aiq topics apply` may create and alter topics; off where the service has
    /// no admin API (Azure Event Hubs creates event hubs in its own portal).
    pub manage_topics: bool,
    pub client_id: String,
    pub security_protocol: SecurityProtocol,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` when a SASL protocol is chosen.
    #[serde(default)]
    pub sasl_mechanism: Option<String>,
    #[serde(default)]
    pub sasl_username: Option<String>,
    #[serde(default)]
    pub sasl_password: Option<String>,
    /// A CA bundle file; the system store when absent.
    #[serde(default)]
    pub ssl_ca_location: Option<String>,
    /// Any further librdkafka property, passed through as is.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

// Hand-written so that the SASL password never reaches a log line.
impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("tenant_partitions", &self.tenant_partitions)
            .field("work_partitions", &self.work_partitions)
            .field("replication_factor", &self.replication_factor)
            .field("manage_topics", &self.manage_topics)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field(
                "sasl_password",
                &self.sasl_password.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl KafkaSettings {
    /// Plain-text settings for a local or test cluster, replication factor 1.
    pub fn plaintext(
        brokers: impl Into<String>,
        topic_prefix: impl Into<String>,
        tenant_partitions: u32,
        work_partitions: u32,
    ) -> Self {
        Self {
            brokers: brokers.into(),
            topic_prefix: topic_prefix.into(),
            tenant_partitions,
            work_partitions,
            replication_factor: 1,
            manage_topics: true,
            client_id: "aiq".into(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            extra: BTreeMap::new(),
        }
    }

    /// Checks what librdkafka would only reject later, with less helpful words.
    pub fn validate(&self) -> Result<(), KafkaError> {
        let bad = |field, reason: &str| {
            Err(KafkaError::Setting {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.brokers.split(',').any(|b| b.trim().is_empty()) {
            return bad(
                "brokers",
                "must be a comma-separated list of host:port, none empty",
            );
        }
        if self.tenant_partitions == 0 {
            return bad("tenant_partitions", "must be at least 1");
        }
        if self.work_partitions == 0 {
            return bad("work_partitions", "must be at least 1");
        }
        if self.replication_factor == 0 {
            return bad("replication_factor", "must be at least 1");
        }
        if self.security_protocol.uses_sasl() {
            match self.sasl_mechanism.as_deref() {
                Some("PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") => {}
                Some(other) => {
                    return Err(KafkaError::Setting {
                        field: "sasl_mechanism",
                        reason: format!(
                            "{other:?} is not supported; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                        ),
                    });
                }
                None => {
                    return bad(
                        "sasl_mechanism",
                        "is required with a SASL security_protocol",
                    );
                }
            }
            if self.sasl_username.as_deref().is_none_or(str::is_empty) {
                return bad("sasl_username", "is required with a SASL security_protocol");
            }
            if self.sasl_password.as_deref().is_none_or(str::is_empty) {
                return bad("sasl_password", "is required with a SASL security_protocol");
            }
        }
        Ok(())
    }

    pub fn topics(&self) -> TopicSet {
        TopicSet::new(
            &self.topic_prefix,
            self.tenant_partitions,
            self.work_partitions,
        )
    }

    /// The properties every client shares: address, identity, security.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            .set("security.protocol", self.security_protocol.as_librdkafka());
        if self.security_protocol.uses_sasl() {
            if let Some(m) = &self.sasl_mechanism {
                c.set("sasl.mechanism", m);
            }
            if let Some(u) = &self.sasl_username {
                c.set("sasl.username", u);
            }
            if let Some(p) = &self.sasl_password {
                c.set("sasl.password", p);
            }
        }
        if let Some(ca) = &self.ssl_ca_location {
            c.set("ssl.ca.location", ca);
        }
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    /// A consumer group member's properties: the common ones, and a member that stops
    /// heartbeating (a killed process) leaves the group after 10 s. librdkafka's default
    /// is 45 s, and until a dead member leaves, the rebalance that would hand its
    /// partitions to the restarted process cannot finish: every run waiting on those
    /// partitions waited the 45 s.
    pub fn group_member_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        c.set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
        c
    }

    /// A client that only answers watermark queries and never fetches. A broker answers
    /// one connection's requests in order, so a watermark query sent on a fetching
    /// consumer's connection waits behind the fetch the broker holds (up to
    /// `fetch.wait.max.ms`); the orchestrator's restore waited ~500 ms per partition
    /// that way. `group_id` only names the client: it never joins the group.
    pub fn watermark_client(
        &self,
        group_id: &str,
        isolation: Isolation,
    ) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
        self.client_config()
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("isolation.level", isolation.as_librdkafka())
            .create()
    }

    /// A producer's properties: acknowledged by all in-sync replicas, idempotent, and
    /// partitioning keys as Java clients do (see `aiq_topics::partition`).
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random");
        c
    }
}

/// Which offsets a watermark query reports as the end of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// The last stable offset: the end of what committed transactions wrote.
    ReadCommitted,
    /// The high watermark: everything written, open transactions included.
    ReadUncommitted,
}

impl Isolation {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> KafkaSettings {
        KafkaSettings::plaintext("127.0.0.1:9092", "aiq.", 12, 12)
    }

    #[test]
    fn event_hubs_settings_map_to_librdkafka_properties() {
        let mut s = local();
        s.brokers = "myns.servicebus.windows.net:9093".into();
        s.security_protocol = SecurityProtocol::SaslSsl;
        s.sasl_mechanism = Some("PLAIN".into());
        s.sasl_username = Some("$ConnectionString".into());
        s.sasl_password = Some("Endpoint=sb://myns/;SharedAccessKey=secret".into());
        s.validate().unwrap();
        let c = s.producer_config();
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(c.get("sasl.username"), Some("$ConnectionString"));
        assert_eq!(c.get("partitioner"), Some("murmur2_random"));
        assert!(
            !format!("{s:?}").contains("secret"),
            "password leaked into Debug"
        );
    }

    #[test]
    fn a_group_member_that_stops_heartbeating_leaves_within_ten_seconds() {
        let mut s = local();
        s.extra.insert("linger.ms".into(), "7".into());
        let c = s.group_member_config();
        assert_eq!(c.get("session.timeout.ms"), Some("10000"));
        assert_eq!(c.get("heartbeat.interval.ms"), Some("1000"));
        assert_eq!(c.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(c.get("linger.ms"), Some("7"), "the common properties stay");
    }

    #[test]
    fn incomplete_sasl_settings_name_the_missing_field() {
        let mut s = local();
        s.security_protocol = SecurityProtocol::SaslSsl;
        let e = s.validate().unwrap_err().to_string();
        assert_eq!(
            e,
            "kafka setting `sasl_mechanism`: is required with a SASL security_protocol"
        );
        s.sasl_mechanism = Some("GSSAPI".into());
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("\"GSSAPI\" is not supported"), "{e}");
        s.sasl_mechanism = Some("PLAIN".into());
        let e = s.validate().unwrap_err().to_string();
        assert_eq!(
            e,
            "kafka setting `sasl_username`: is required with a SASL security_protocol"
        );
    }

    #[test]
    fn empty_broker_entries_are_refused() {
        let mut s = local();
        s.brokers = "a:1,,b:2".into();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .starts_with("kafka setting `brokers`")
        );
    }
}
