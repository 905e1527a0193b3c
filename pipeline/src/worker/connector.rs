//! One small trait per connector, and the table the worker looks them up in.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aiq_topics::{ErrorClass, TaskMessage, TaskOutcome};
use serde_json::Value;

pub type CallFuture<'a> = Pin<Box<dyn Future<Output = TaskOutcome> + Send + 'a>>;

pub trait Connector: Send + Sync {
    /// Runs one attempt. The worker enforces the task's timeout around this call.
    fn call<'a>(&'a self, task: &'a TaskMessage) -> CallFuture<'a>;
}

/// Answers with `args.output` (or null) after `args.delay_ms` (default 0).
pub struct NoopConnector;

impl Connector for NoopConnector {
    fn call<'a>(&'a self, task: &'a TaskMessage) -> CallFuture<'a> {
        Box::pin(async move {
            let delay = task
                .args
                .get("delay_ms")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            TaskOutcome::Ok {
                output: task.args.get("output").cloned().unwrap_or(Value::Null),
            }
        })
    }
}

#[derive(Clone, Default)]
pub struct Connectors {
    by_name: HashMap<String, Arc<dyn Connector>>,
}

impl Connectors {
    /// The connectors this build has.
    pub fn builtin(settings: &crate::worker::WorkerSettings) -> Self {
        let mut c = Self::default();
        c.insert("noop", Arc::new(NoopConnector));
        c.insert(
            "file",
            Arc::new(crate::worker::FileConnector::new(&settings.file_root)),
        );
        c
    }

    pub fn insert(&mut self, name: &str, connector: Arc<dyn Connector>) {
        self.by_name.insert(name.to_owned(), connector);
    }

    pub async fn call(&self, task: &TaskMessage) -> TaskOutcome {
        let Some(c) = self.by_name.get(&task.connector) else {
            return TaskOutcome::Error {
                class: ErrorClass::Fatal,
                message: format!(
                    "connector `{}` is not available in this worker (this build has: {})",
                    task.connector,
                    self.names().join(", ")
                ),
            };
        };
        let limit = Duration::from_millis(task.timeout_ms.max(1));
        match tokio::time::timeout(limit, c.call(task)).await {
            Ok(outcome) => outcome,
            Err(_) => TaskOutcome::Error {
                class: ErrorClass::Timeout,
                message: format!("step ran past its timeout of {} ms", task.timeout_ms),
            },
        }
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
    use aiq_topics::{RunId, StepId, TenantId, WorkflowId};
    use serde_json::json;

    fn task(connector: &str, args: Value, timeout_ms: u64) -> TaskMessage {
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
        }
    }

    #[tokio::test]
    async fn noop_answers_its_output_and_timeouts_and_unknown_connectors_are_errors() {
        let c = Connectors::builtin(&crate::worker::WorkerSettings::default());
        assert_eq!(
            c.call(&task("noop", json!({"output": 7}), 1000)).await,
            TaskOutcome::Ok { output: json!(7) }
        );
        match c.call(&task("noop", json!({"delay_ms": 200}), 20)).await {
            TaskOutcome::Error { class, .. } => assert_eq!(class, ErrorClass::Timeout),
            other => panic!("{other:?}"),
        }
        match c.call(&task("http", json!({}), 1000)).await {
            TaskOutcome::Error { class, message } => {
                assert_eq!(class, ErrorClass::Fatal);
                assert!(
                    message.contains("connector `http` is not available"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
