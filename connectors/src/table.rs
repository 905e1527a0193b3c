//! The connector table: name → connector, and what every call goes through.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aiq_topics::{ErrorClass, TaskMessage, TaskOutcome};
use prometheus::Registry;
use rdkafka::producer::FutureProducer;
use tokio::time::Instant;

use crate::breaker::Breakers;
use crate::call::{CallContext, Connector};
use crate::email::EmailConnector;
use crate::error::ConnectorError;
use crate::file::FileConnector;
use crate::http::{HttpClient, HttpConnector};
use crate::kafka::KafkaConnector;
use crate::noop::NoopConnector;
use crate::outbound::Outbound;
use crate::outcome::timeout_outcome;
use crate::secrets::SecretSource;
use crate::settings::ConnectorSettings;
use crate::soap::SoapConnector;
use crate::sql::SqlConnector;

/// The cluster the Kafka connector publishes to, and the producer it uses.
pub struct KafkaTarget {
    pub producer: FutureProducer,
    pub topic_prefix: String,
}

#[derive(Clone)]
pub struct Connectors {
    by_name: HashMap<String, Arc<dyn Connector>>,
    secrets: Arc<dyn SecretSource>,
    outbound: Outbound,
    breakers: Arc<Breakers>,
    /// Whether a tenant may use a connector (its plan's `allowed_connectors`); unset:
    /// every tenant every connector.
    allowed: Option<Allowed>,
}

/// Answers whether `tenant` may use the connector `name`.
pub type Allowed = Arc<dyn Fn(&aiq_topics::TenantId, &str) -> bool + Send + Sync>;

impl Connectors {
    /// Every connector this build has. `kafka` is None where no cluster is at hand; the
    /// kafka connector then answers that it is unavailable.
    pub fn builtin(
        settings: &ConnectorSettings,
        secrets: Arc<dyn SecretSource>,
        kafka: Option<KafkaTarget>,
        registry: &Registry,
    ) -> Result<Self, ConnectorError> {
        let outbound = Outbound::new(&settings.outbound)?;
        let extra = crate::tls::extra_cas(&settings.extra_ca_files)?;
        let http = HttpClient::new(settings, &outbound, &extra)?;
        let mut c = Self {
            by_name: HashMap::new(),
            secrets,
            outbound,
            breakers: Arc::new(Breakers::new(settings.breaker.clone(), registry)),
            allowed: None,
        };
        c.insert("noop", Arc::new(NoopConnector));
        c.insert("file", Arc::new(FileConnector::new(&settings.file_root)));
        c.insert("http", Arc::new(HttpConnector::new(http.clone())));
        c.insert("soap", Arc::new(SoapConnector::new(http)));
        c.insert("sql", Arc::new(SqlConnector::new(settings, &extra)));
        c.insert("email", Arc::new(EmailConnector::new(&extra)));
        if let Some(k) = kafka {
            c.insert(
                "kafka",
                Arc::new(KafkaConnector::new(k.producer, k.topic_prefix)),
            );
        }
        Ok(c)
    }

    pub fn insert(&mut self, name: &str, connector: Arc<dyn Connector>) {
        self.by_name.insert(name.to_owned(), connector);
    }

    /// Refuses a task whose tenant may not use its connector (a fatal error naming
    /// both), asked at every call, so a plan change applies to the next task.
    pub fn restrict(mut self, allowed: Allowed) -> Self {
        self.allowed = Some(allowed);
        self
    }

    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    pub async fn call(&self, task: &TaskMessage) -> TaskOutcome {
        self.call_opening(task).await.0
    }

    /// As [`Connectors::call`], with the names of the tenant's secrets the call opened
    /// (never their values), for the audit trail.
    pub async fn call_opening(&self, task: &TaskMessage) -> (TaskOutcome, Vec<String>) {
        if let Some(allowed) = &self.allowed
            && !allowed(&task.tenant, &task.connector)
        {
            let refused = TaskOutcome::Error {
                class: ErrorClass::Fatal,
                message: format!(
                    "connector `{}` is not in tenant {:?}'s plan (allowed_connectors)",
                    task.connector,
                    task.tenant.as_str()
                ),
            };
            return (refused, Vec::new());
        }
        let Some(c) = self.by_name.get(&task.connector) else {
            let missing = TaskOutcome::Error {
                class: ErrorClass::Fatal,
                message: format!(
                    "connector `{}` is not available in this worker (this build has: {})",
                    task.connector,
                    self.names().join(", ")
                ),
            };
            return (missing, Vec::new());
        };
        let limit = Duration::from_millis(task.timeout_ms.max(1));
        let deadline = Instant::now() + limit;
        let ctx = CallContext::new(
            task,
            deadline,
            self.secrets.as_ref(),
            &self.outbound,
            &self.breakers,
        );
        // Connectors stop at the deadline themselves (so a hang counts against the
        // host's breaker); this outer bound, a little later, backs them up.
        let outcome =
            match tokio::time::timeout_at(deadline + Duration::from_millis(50), c.call(task, &ctx))
                .await
            {
                Ok(outcome) => outcome,
                Err(_) => timeout_outcome(task.timeout_ms),
            };
        (ctx.scrub(outcome), ctx.opened())
    }

    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.by_name.keys().cloned().collect();
        n.sort();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretStore;
    use aiq_topics::{RunId, StepId, TenantId, WorkflowId};
    use serde_json::{Value, json};

    pub(crate) fn task(connector: &str, args: Value, timeout_ms: u64) -> TaskMessage {
        let tenant = TenantId::new("acme").unwrap();
        TaskMessage {
            run: RunId::from_idempotency_key(&tenant, &WorkflowId::new("w").unwrap(), "k"),
            tenant,
            step: StepId::new("s").unwrap(),
            attempt: 1,
            connector: connector.into(),
            args,
            timeout_ms,
            dispatched_at: chrono::Utc::now(),
            expires_at: None,
        }
    }

    #[tokio::test]
    async fn noop_answers_its_output_and_timeouts_and_unknown_connectors_are_errors() {
        let c = Connectors::builtin(
            &ConnectorSettings::default(),
            Arc::new(SecretStore::fixed(None, vec![])),
            None,
            &Registry::new(),
        )
        .unwrap();
        assert_eq!(
            c.call(&task("noop", json!({"output": 7}), 1000)).await,
            TaskOutcome::Ok { output: json!(7) }
        );
        match c.call(&task("noop", json!({"delay_ms": 200}), 20)).await {
            TaskOutcome::Error { class, .. } => assert_eq!(class, ErrorClass::Timeout),
            other => panic!("{other:?}"),
        }
        match c.call(&task("kafka", json!({}), 1000)).await {
            TaskOutcome::Error { class, message } => {
                assert_eq!(class, ErrorClass::Fatal);
                assert!(
                    message.contains("connector `kafka` is not available"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_tenant_restricted_from_a_connector_gets_a_fatal_error_naming_it() {
        let c = Connectors::builtin(
            &ConnectorSettings::default(),
            Arc::new(SecretStore::fixed(None, vec![])),
            None,
            &Registry::new(),
        )
        .unwrap()
        .restrict(Arc::new(|tenant, connector| {
            tenant.as_str() != "acme" || connector == "http"
        }));
        match c.call(&task("noop", json!({"output": 7}), 1000)).await {
            TaskOutcome::Error { class, message } => {
                assert_eq!(class, ErrorClass::Fatal);
                assert!(
                    message.contains("not in tenant \"acme\"'s plan"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        let mut other = task("noop", json!({"output": 7}), 1000);
        other.tenant = TenantId::new("zeta").unwrap();
        assert_eq!(c.call(&other).await, TaskOutcome::Ok { output: json!(7) });
    }
}
