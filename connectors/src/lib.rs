//! The connectors worker steps call, each behind [`Connector`], and the table a worker
//! looks them up in. Every call gets a [`CallContext`]: the tenant's secrets (resolved by
//! name at the moment of the call and scrubbed from the answer), the outbound guard, the
//! tenant's circuit breakers and the step's deadline.

mod breaker;
mod call;
mod email;
mod error;
mod file;
pub mod forms;
mod http;
mod kafka;
mod noop;
mod outbound;
mod outcome;
mod secrets;
mod settings;
mod sign;
mod soap;
mod sql;
mod table;
mod tls;
mod xml;

pub use breaker::{Admission, Breaker, BreakerSettings, BreakerState, Breakers};
pub use call::{CallContext, CallFuture, Connector};
pub use error::ConnectorError;
pub use file::FileConnector;
pub use noop::NoopConnector;
pub use outbound::{Outbound, OutboundError, OutboundSettings};
pub use outcome::{fatal, parse_args, retryable};
pub use secrets::{SecretFuture, SecretLookupError, SecretSource, SecretStore};
pub use settings::ConnectorSettings;
pub use sign::{SIGNATURE_HEADER, TIMESTAMP_HEADER, signature};
pub use table::{Connectors, KafkaTarget};
pub use tls::TlsError;

/// Checks a task's `args` against the shape its connector takes, before any template is
/// filled in; `Ok` for connectors whose arguments are checked only when they run.
pub fn check_args(
    connector: &str,
    args: &serde_json::Value,
) -> Result<(), aiq_topics::TaskOutcome> {
    match connector {
        "http" => http::check_args(args),
        "soap" => soap::check_args(args),
        "sql" => sql::check_args(args),
        "email" => email::check_args(args),
        "kafka" => kafka::check_args(args),
        _ => Ok(()),
    }
}
