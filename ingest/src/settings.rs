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
    /// Tenant exports this process builds at once; each holds its archive in memory
    /// (at most 512 MiB), so more are refused with 429 until one ends.
    #[serde(default = "default_max_concurrent_exports")]
    pub max_concurrent_exports: usize,
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
    /// The web console's client id at the provider of `jwt_issuer`: with both set, the
    /// console's sign-in page offers signing in there (authorization code with PKCE, as a
    /// public client whose redirect URI is the console's own address).
    #[serde(default)]
    pub console_client_id: Option<String>,
    /// The scopes the console asks the provider for (default `openid`).
    #[serde(default)]
    pub console_scope: Option<String>,
    /// The resource indicator the console's access tokens are asked for, if the provider
    /// needs one to issue a JWT for this API.
    #[serde(default)]
    pub console_resource: Option<String>,
    /// A JWKS URL is fetched again this often, so that rotated keys are picked up.
    pub jwks_refresh_secs: u64,
    /// With `jwks` set, HS256 development tokens (`AIQ_DEV_JWT_SECRET`) are refused
    /// unless this is true.
    #[serde(default)]
    pub allow_dev_tokens_with_jwks: bool,
    /// How the provider's tokens name tenant and role (`aiq_auth::ClaimMapping`).
    #[serde(default)]
    pub jwt_claims: JwtClaims,
    /// Further OpenID providers trusted at once (`[[ingest.issuers]]`), each for the
    /// tokens naming its issuer. A tenant's own provider is registered on the tenant
    /// instead (`PATCH /v1/tenants/{id}`, `identity`).
    #[serde(default)]
    pub issuers: Vec<IssuerSettings>,
    /// Serve any tenant a valid credential names, registered or not. For development
    /// only: without it a credential for a tenant missing from the registry
    /// (`POST /v1/tenants`) is refused with 403.
    #[serde(default)]
    pub open_tenants: bool,
    /// Every tenant's trigger allowance unless its plan or `tenants.<id>` says otherwise.
    pub trigger_quota: TriggerQuota,
    #[serde(default)]
    pub tenants: HashMap<TenantId, TenantOverrides>,
}

fn default_max_trigger_input_bytes() -> usize {
    256 * 1024
}

fn default_max_concurrent_exports() -> usize {
    2
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

/// One more trusted provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// The `iss` its tokens carry, exactly.
    pub issuer: String,
    /// A JWKS file or URL (https; http only for a loopback host), refreshed like `jwks`.
    pub jwks: String,
    /// The `aud` its tokens must carry; unset: `jwt_audience`.
    #[serde(default)]
    pub audience: Option<String>,
    /// How its tokens name tenant and role.
    #[serde(default)]
    pub claims: JwtClaims,
}

impl IngestSettings {
    /// The issuers of the configured providers: a tenant may not register one of them.
    pub fn configured_issuers(&self) -> Vec<String> {
        self.jwt_issuer
            .iter()
            .cloned()
            .chain(self.issuers.iter().map(|i| i.issuer.clone()))
            .collect()
    }
}

/// `ingest.jwt_claims`: which claims of an OIDC provider's tokens name the tenant and
/// the role, and how their values translate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtClaims {
    /// The claim holding the tenant (`tid` for Entra ID, or a custom one).
    #[serde(default = "tenant_claim")]
    pub tenant: String,
    /// Every token of the provider acts for this tenant (a tenant's own provider).
    #[serde(default)]
    pub fixed_tenant: Option<TenantId>,
    /// Claim value → tenant id; empty: the value is the tenant id.
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, TenantId>,
    /// The claim holding the role, a string or an array (`roles`, `groups`).
    #[serde(default = "role_claim")]
    pub role: String,
    /// Claim value → role name (`platform_admin`, `tenant_admin`, `user`); empty: the
    /// value is the role name.
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, String>,
}

fn tenant_claim() -> String {
    "tenant".into()
}

fn role_claim() -> String {
    "role".into()
}

impl Default for JwtClaims {
    fn default() -> Self {
        Self {
            tenant: tenant_claim(),
            fixed_tenant: None,
            tenants: std::collections::BTreeMap::new(),
            role: role_claim(),
            roles: std::collections::BTreeMap::new(),
        }
    }
}

impl JwtClaims {
    /// The mapping, or the role name that is not one (naming its key).
    pub fn mapping(&self) -> Result<aiq_auth::ClaimMapping, String> {
        let mut roles = std::collections::BTreeMap::new();
        for (value, name) in &self.roles {
            let role = name
                .parse::<aiq_auth::Role>()
                .map_err(|e| format!("ingest.jwt_claims.roles.{value:?}: {e}"))?;
            roles.insert(value.clone(), role);
        }
        Ok(aiq_auth::ClaimMapping {
            tenant_claim: self.tenant.clone(),
            fixed_tenant: self.fixed_tenant.clone(),
            tenants: self.tenants.clone(),
            role_claim: self.role.clone(),
            roles,
            ceiling: None,
        })
    }
}

#[cfg(test)]
mod claim_tests {
    use super::*;

    #[test]
    fn a_role_name_that_is_none_is_refused_naming_its_key() {
        let mut c = JwtClaims::default();
        c.roles.insert("aiq-admins".into(), "tenant_admin".into());
        let m = c.mapping().unwrap();
        assert_eq!(m.roles["aiq-admins"], aiq_auth::Role::TenantAdmin);
        c.roles.insert("ops".into(), "root".into());
        let e = c.mapping().unwrap_err();
        assert!(e.contains("ingest.jwt_claims.roles.\"ops\""), "{e}");
    }
}
