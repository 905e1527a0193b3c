//! The `[ingest]` section of the configuration.

use std::collections::HashMap;
use std::time::Duration;

use aiq_topics::TenantId;
use serde::{Deserialize, Serialize};

use crate::limits::TriggerQuota;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Largest run input accepted (its JSON encoding), in bytes; larger ones get 413
    /// and nothing is published. Well under Kafka's record limit (1 MB by default), so a
    /// trigger always fits, and run state built from the input stays small.
    #[serde(default = "default_max_trigger_input_bytes")]
    pub max_trigger_input_bytes: usize,
    /// How long a request waits for Kafka's acknowledgement before it gets 503.
    pub ack_timeout_ms: u64,
    /// How far a webhook's timestamp may be from now, in seconds.
    pub webhook_replay_window_secs: u64,
    /// A pending idempotency claim older than this belongs to a request that died.
    pub idempotency_stale_after_ms: u64,
    /// The `aud` every bearer token must carry.
    pub jwt_audience: String,
    #[serde(default)]
    pub jwt_issuer: Option<String>,
    /// A JWKS file or URL with the OIDC provider's RS256/ES256 keys.
    #[serde(default)]
    pub jwks: Option<String>,
    /// A JWKS URL is fetched again this often, so that rotated keys are picked up.
    pub jwks_refresh_secs: u64,
    /// With `jwks` set, HS256 development tokens (`AIQ_DEV_JWT_SECRET`) are refused
    /// unless this is true.
    #[serde(default)]
    pub allow_dev_tokens_with_jwks: bool,
    /// Every tenant's trigger allowance unless `tenants.<id>` says otherwise.
    pub trigger_quota: TriggerQuota,
    #[serde(default)]
    pub tenants: HashMap<TenantId, TenantOverrides>,
}

fn default_max_trigger_input_bytes() -> usize {
    256 * 1024
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantOverrides {
    pub trigger_quota: TriggerQuota,
}

impl IngestSettings {
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }

    pub fn quota_overrides(&self) -> HashMap<TenantId, TriggerQuota> {
        self.tenants
            .iter()
            .map(|(t, o)| (t.clone(), o.trigger_quota))
            .collect()
    }
}
