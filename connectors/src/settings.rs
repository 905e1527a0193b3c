//! [`ConnectorSettings`]: the `[connectors]` section of the configuration, which the
//! connector table and the connectors it builds (HTTP, SOAP, SQL) read. Kept apart from
//! `table`, so that a connector can read its settings without importing the table
//! that builds it.

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerSettings;
use crate::outbound::OutboundSettings;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSettings {
    /// The file connector's folder; each tenant gets `<file_root>/<tenant>`.
    pub file_root: String,
    /// PEM files of CAs trusted besides the compiled-in Mozilla roots (HTTP, SOAP, SMTP,
    /// PostgreSQL over TLS).
    pub extra_ca_files: Vec<String>,
    /// Response bodies larger than this fail the step (HTTP, SOAP).
    pub max_response_bytes: usize,
    /// Rows beyond this fail a SQL step rather than flooding the run state.
    pub sql_max_rows: usize,
    pub outbound: OutboundSettings,
    pub breaker: BreakerSettings,
}

impl Default for ConnectorSettings {
    /// The values of `config/aiq.toml`.
    fn default() -> Self {
        Self {
            file_root: "data/files".into(),
            extra_ca_files: Vec::new(),
            max_response_bytes: 1 << 20,
            sql_max_rows: 1000,
            outbound: OutboundSettings::default(),
            breaker: BreakerSettings::default(),
        }
    }
}
