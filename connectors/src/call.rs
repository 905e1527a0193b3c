//! What one connector call gets besides its task: the tenant's secrets, the outbound
//! guard, the breakers and the deadline; and scrubbing the secrets it resolved from its
//! answer. The answers themselves are built with `outcome`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use aiq_secrets::{ExposeSecret, SecretName, SecretString};
use aiq_topics::{ErrorClass, TaskMessage, TaskOutcome};
use serde_json::Value;
use tokio::time::Instant;

use crate::breaker::{Admission, Breakers, is_failure};
use crate::outbound::Outbound;
use crate::outcome::{fatal, timeout_outcome};
use crate::secrets::SecretSource;

pub type CallFuture<'a> = Pin<Box<dyn Future<Output = TaskOutcome> + Send + 'a>>;

pub trait Connector: Send + Sync {
    /// Runs one attempt. The table enforces the deadline around this call, redacts the
    /// secrets it resolved from the answer, and counts it.
    fn call<'a>(&'a self, task: &'a TaskMessage, ctx: &'a CallContext<'a>) -> CallFuture<'a>;
}

pub struct CallContext<'a> {
    pub task: &'a TaskMessage,
    pub deadline: Instant,
    pub(crate) secrets: &'a dyn SecretSource,
    pub(crate) outbound: &'a Outbound,
    pub(crate) breakers: &'a Breakers,
    /// Every value resolved for this call, so the answer can be scrubbed of them.
    /// Kept as secrets, so their memory is zeroed when the call ends.
    resolved: Mutex<Vec<SecretString>>,
    /// The names of the secrets opened, for the audit trail.
    opened: Mutex<Vec<String>>,
}

impl<'a> CallContext<'a> {
    pub(crate) fn new(
        task: &'a TaskMessage,
        deadline: Instant,
        secrets: &'a dyn SecretSource,
        outbound: &'a Outbound,
        breakers: &'a Breakers,
    ) -> Self {
        Self {
            task,
            deadline,
            secrets,
            outbound,
            breakers,
            resolved: Mutex::new(Vec::new()),
            opened: Mutex::new(Vec::new()),
        }
    }

    /// The names of the secrets this call opened, in order.
    pub(crate) fn opened(&self) -> Vec<String> {
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What is left of the step's time (at least 1 ms, so it can bound a call).
    pub fn time_left(&self) -> std::time::Duration {
        self.deadline
            .saturating_duration_since(Instant::now())
            .max(std::time::Duration::from_millis(1))
    }

    /// The tenant's secret `name`; `field` names where the definition referenced it.
    pub async fn secret(&self, field: &str, name: &str) -> Result<SecretString, TaskOutcome> {
        let parsed = SecretName::new(name).map_err(|e| fatal(format!("{field}: {e}")))?;
        let value = self
            .secrets
            .get(&self.task.tenant, &parsed)
            .await
            .map_err(|e| fatal(format!("{field}: {e}")))?;
        self.resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(value.clone());
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(parsed.as_str().to_owned());
        Ok(value)
    }

    /// Runs `call` against `host` through the tenant's breaker for it, cut off at the
    /// deadline (a hang counts against the host).
    pub async fn guarded<F>(&self, host: &str, call: F) -> TaskOutcome
    where
        F: Future<Output = TaskOutcome>,
    {
        let tenant = &self.task.tenant;
        let admission = self.breakers.admit(tenant, host, Instant::now());
        if let Admission::Refused { retry_in } = admission {
            return TaskOutcome::Error {
                class: ErrorClass::CircuitOpen,
                message: format!(
                    "circuit open for {host}: too many recent failures; calls resume in {} ms",
                    retry_in.as_millis()
                ),
            };
        }
        let mut pending = Pending {
            ctx: self,
            host,
            admission,
            done: false,
        };
        let outcome = match tokio::time::timeout_at(self.deadline, call).await {
            Ok(o) => o,
            Err(_) => timeout_outcome(self.task.timeout_ms),
        };
        pending.done = true;
        self.breakers.record(
            tenant,
            host,
            admission,
            is_failure(&outcome),
            Instant::now(),
        );
        outcome
    }

    /// Replaces every resolved secret value in the answer. Values shorter than four
    /// characters are left alone: scrubbing them would shred ordinary output, and a
    /// credential that short protects nothing.
    pub(crate) fn scrub(&self, outcome: TaskOutcome) -> TaskOutcome {
        let resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        let values: Vec<&str> = resolved
            .iter()
            .map(ExposeSecret::expose_secret)
            .filter(|v| v.chars().count() >= 4)
            .collect();
        if values.is_empty() {
            return outcome;
        }
        match outcome {
            TaskOutcome::Ok { mut output } => {
                scrub_value(&mut output, &values);
                TaskOutcome::Ok { output }
            }
            TaskOutcome::Error { class, message } => TaskOutcome::Error {
                class,
                message: scrub_str(&message, &values),
            },
        }
    }
}

/// A call dropped before it ended (the worker stopping) still counts, so a half-open
/// breaker is never left waiting for a probe that will not come back.
struct Pending<'c, 'a> {
    ctx: &'c CallContext<'a>,
    host: &'c str,
    admission: Admission,
    done: bool,
}

impl Drop for Pending<'_, '_> {
    fn drop(&mut self) {
        if !self.done {
            self.ctx.breakers.record(
                &self.ctx.task.tenant,
                self.host,
                self.admission,
                true,
                Instant::now(),
            );
        }
    }
}

pub(crate) const REDACTED: &str = "[redacted]";

fn scrub_str(s: &str, values: &[&str]) -> String {
    let mut out = s.to_owned();
    for v in values {
        if out.contains(v) {
            out = out.replace(v, REDACTED);
        }
    }
    out
}

fn scrub_value(v: &mut Value, values: &[&str]) {
    match v {
        Value::String(s) if values.iter().any(|x| s.contains(x)) => {
            *s = scrub_str(s, values);
        }
        Value::Array(items) => items.iter_mut().for_each(|i| scrub_value(i, values)),
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if let Some(mut inner) = map.remove(&k) {
                    scrub_value(&mut inner, values);
                    map.insert(scrub_str(&k, values), inner);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scrubbing_reaches_nested_strings_keys_and_messages() {
        let values = ["hunter22", "tok-123"];
        let mut v = json!({"a": ["x hunter22 y", {"tok-123": 1}], "n": 5});
        scrub_value(&mut v, &values);
        assert_eq!(
            v,
            json!({"a": ["x [redacted] y", {"[redacted]": 1}], "n": 5})
        );
        assert_eq!(
            scrub_str("auth tok-123 failed", &values),
            "auth [redacted] failed"
        );
    }
}
