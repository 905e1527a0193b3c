//! The `noop` connector: answers `args.output` (or null) after `args.delay_ms`.

use std::time::Duration;

use aiq_topics::{TaskMessage, TaskOutcome};
use serde_json::Value;

use crate::call::{CallContext, CallFuture, Connector};

pub struct NoopConnector;

impl Connector for NoopConnector {
    fn call<'a>(&'a self, task: &'a TaskMessage, _ctx: &'a CallContext<'a>) -> CallFuture<'a> {
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
