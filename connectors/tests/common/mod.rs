//! What the connector tests share: a task, and a secret store holding given values.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use aiq_connectors::SecretStore;
use aiq_secrets::{Keyring, SecretName, SecretString};
use aiq_topics::{RunId, StepId, TaskMessage, TenantId};
use serde_json::Value;

/// A first attempt of step `call` of a fresh run.
pub fn task(tenant: &str, connector: &str, args: Value, timeout_ms: u64) -> TaskMessage {
    TaskMessage {
        tenant: TenantId::new(tenant).unwrap(),
        run: RunId::random(),
        step: StepId::new("call").unwrap(),
        attempt: 1,
        connector: connector.into(),
        args,
        timeout_ms,
        dispatched_at: chrono::Utc::now(),
        expires_at: None,
    }
}

/// A store holding `(tenant, name, value)` secrets, sealed as ingest seals them.
pub fn store(secrets: &[(&str, &str, &str)]) -> Arc<SecretStore> {
    let keyring = Arc::new(Keyring::generate("k1").unwrap());
    let records = secrets
        .iter()
        .map(|(tenant, name, value)| {
            keyring
                .seal(
                    &TenantId::new(*tenant).unwrap(),
                    &SecretName::new(name).unwrap(),
                    &SecretString::from(*value),
                    chrono::Utc::now(),
                )
                .unwrap()
        })
        .collect();
    Arc::new(SecretStore::fixed(Some(keyring), records))
}
