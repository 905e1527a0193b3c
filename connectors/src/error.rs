//! [`ConnectorError`]: why the connector table could not be built from its settings (a
//! bad outbound range, an unreadable CA file, an HTTP client that would not start).
//! Kept apart from `table`, so that the HTTP client can report its own failure without
//! importing the table that builds it.

use crate::outbound::OutboundError;
use crate::tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error(transparent)]
    Outbound(#[from] OutboundError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the HTTP client: {0}")]
    Http(String),
}
