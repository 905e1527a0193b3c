//! The answers a connector gives when a call does not succeed: a fatal or retryable
//! failure, a step past its timeout, and arguments that do not parse (naming the
//! field). Kept apart from `call`, so that the outbound guard and every connector can
//! build them without importing the call context.

use aiq_topics::{ErrorClass, TaskOutcome};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub fn fatal(message: impl Into<String>) -> TaskOutcome {
    TaskOutcome::Error {
        class: ErrorClass::Fatal,
        message: message.into(),
    }
}

pub fn retryable(message: impl Into<String>) -> TaskOutcome {
    TaskOutcome::Error {
        class: ErrorClass::Retryable,
        message: message.into(),
    }
}

pub(crate) fn timeout_outcome(timeout_ms: u64) -> TaskOutcome {
    TaskOutcome::Error {
        class: ErrorClass::Timeout,
        message: format!("step ran past its timeout of {timeout_ms} ms"),
    }
}

/// A connector's `args` as its typed form; the error names the connector, the field path
/// and the reason.
pub fn parse_args<T: DeserializeOwned>(connector: &str, args: &Value) -> Result<T, TaskOutcome> {
    serde_path_to_error::deserialize(args).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "args".to_owned()
        } else {
            format!("args.{path}")
        };
        fatal(format!(
            "{connector} connector: `{path}`: {}",
            e.into_inner()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn argument_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct A {
            url: String,
            retries: Option<u8>,
        }
        let TaskOutcome::Error { message, class } =
            parse_args::<A>("http", &json!({"url": "x", "retries": 300})).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(class, ErrorClass::Fatal);
        assert!(
            message.starts_with("http connector: `args.retries`: invalid value: integer `300`"),
            "{message}"
        );
        let TaskOutcome::Error { message, .. } =
            parse_args::<A>("http", &json!({"url": "x", "verb": 1})).unwrap_err()
        else {
            panic!()
        };
        assert!(message.contains("unknown field `verb`"), "{message}");
    }
}
