//! How to reach the store, and how the keyspace replicates.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::SchemaError;

/// The `[cql]` section of the configuration.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CqlSettings {
    /// Comma-separated `host:port` list.
    pub contact_points: String,
    pub keyspace: String,
    pub replication_factor: u8,
    /// Data centres for NetworkTopologyStrategy; SimpleStrategy when empty (one DC).
    #[serde(default)]
    pub datacenters: Vec<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

// Hand-written so that the password never reaches a log line.
impl fmt::Debug for CqlSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CqlSettings")
            .field("contact_points", &self.contact_points)
            .field("keyspace", &self.keyspace)
            .field("replication_factor", &self.replication_factor)
            .field("datacenters", &self.datacenters)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl CqlSettings {
    pub fn validate(&self) -> Result<(), SchemaError> {
        let bad = |field: &'static str, reason: String| Err(SchemaError::Setting { field, reason });
        let ks = &self.keyspace;
        let ks_ok = ks.len() <= 48
            && ks.starts_with(|c: char| c.is_ascii_lowercase())
            && ks
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ks_ok {
            return bad(
                "keyspace",
                format!("{ks:?} must be 1 to 48 of a-z, 0-9 and '_', starting with a letter"),
            );
        }
        if self.contact_points.split(',').any(|c| c.trim().is_empty()) {
            return bad(
                "contact_points",
                "must be a comma-separated list of host:port, none empty".into(),
            );
        }
        if self.replication_factor == 0 {
            return bad("replication_factor", "must be at least 1".into());
        }
        if let Some(dc) = self.datacenters.iter().find(|dc| {
            dc.is_empty()
                || !dc
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }) {
            return bad(
                "datacenters",
                format!("{dc:?} is not a data centre name (A-Z, a-z, 0-9, '_', '-')"),
            );
        }
        Ok(())
    }

    /// The replication map of `CREATE KEYSPACE`.
    pub fn replication(&self) -> String {
        if self.datacenters.is_empty() {
            format!(
                "{{'class': 'SimpleStrategy', 'replication_factor': {}}}",
                self.replication_factor
            )
        } else {
            let dcs: Vec<String> = self
                .datacenters
                .iter()
                .map(|dc| format!("'{dc}': {}", self.replication_factor))
                .collect();
            format!("{{'class': 'NetworkTopologyStrategy', {}}}", dcs.join(", "))
        }
    }

    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.contact_points.split(',').map(str::trim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> CqlSettings {
        CqlSettings {
            contact_points: "127.0.0.1:9042".into(),
            keyspace: "aiq".into(),
            replication_factor: 1,
            datacenters: vec![],
            username: None,
            password: Some("hunter2".into()),
        }
    }

    #[test]
    fn replication_follows_the_datacentres() {
        let mut s = local();
        assert_eq!(
            s.replication(),
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
        s.datacenters = vec!["dc1".into(), "dc2".into()];
        s.replication_factor = 3;
        assert_eq!(
            s.replication(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 3}"
        );
    }

    #[test]
    fn bad_settings_name_the_field() {
        let mut s = local();
        s.keyspace = "Aiq; DROP".into();
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("cql setting `keyspace`: \"Aiq; DROP\""),
            "{e}"
        );
        let mut s = local();
        s.datacenters = vec!["dc1'}".into()];
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .starts_with("cql setting `datacenters`")
        );
        assert!(!format!("{:?}", local()).contains("hunter2"));
    }
}
