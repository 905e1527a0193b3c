//! Records of the tenants topic (compacted, key = tenant id): the registry of tenants,
//! each with its plan and state. Every stage follows the topic into memory, so a plan
//! change or a suspension takes effect in every process within seconds, without a
//! restart. A plan field left unset falls back to the static configuration's default.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::TenantId;

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 200;
/// Most connectors a plan may list.
pub const MAX_ALLOWED_CONNECTORS: usize = 64;
/// Most claim values a tenant's provider may map to roles.
pub const MAX_IDENTITY_ROLES: usize = 64;
/// Longest URL, issuer or claim name or value in a tenant's provider.
const MAX_IDENTITY_TEXT: usize = 512;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRecord {
    pub id: TenantId,
    pub display_name: String,
    #[serde(default)]
    pub plan: Plan,
    #[serde(default)]
    pub state: TenantState,
    /// When the tenant was last suspended: triggers accepted before it still run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_at: Option<DateTime<Utc>>,
    /// When the erasure of the tenant's data finished (state `erased`); unset while it
    /// has not, so a confirmed erasure that failed half-way can be finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Who made the last change (a token's subject or an API key id).
    #[serde(default)]
    pub updated_by: String,
    /// The tenant's own OpenID provider: its tokens act for this tenant only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityProvider>,
}

/// A tenant's own OpenID provider. Its tokens (RS256/ES256, keys from `jwks_uri`) must
/// name `issuer` and the deployment's audience (or `audience`); they act for the tenant
/// that registered it, with the role `role_claim` maps to through `roles`, at most
/// `tenant_admin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProvider {
    pub issuer: String,
    pub jwks_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// The claim holding the role: a string or an array (`roles`, `groups`).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Claim value → `user` or `tenant_admin`; empty: the value is the role name.
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, String>,
}

fn default_role_claim() -> String {
    "roles".into()
}

impl IdentityProvider {
    /// The first field that breaks a rule, named by its path under `identity`.
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, r: &str| Err((format!("identity.{f}"), r.to_owned()));
        if self.issuer.trim().is_empty() || self.issuer.len() > MAX_IDENTITY_TEXT {
            return bad("issuer", "must be 1 to 512 characters");
        }
        if self.jwks_uri.len() > MAX_IDENTITY_TEXT {
            return bad("jwks_uri", "must be at most 512 characters");
        }
        if !(self.jwks_uri.starts_with("https://") || is_loopback_http(&self.jwks_uri)) {
            return bad(
                "jwks_uri",
                "must be an https URL (plain http only for a loopback host)",
            );
        }
        if self.audience.as_ref().is_some_and(|a| a.is_empty()) {
            return bad("audience", "must not be empty");
        }
        if self.role_claim.is_empty() || self.role_claim.len() > MAX_IDENTITY_TEXT {
            return bad("role_claim", "must be 1 to 512 characters");
        }
        if self
            .audience
            .as_ref()
            .is_some_and(|a| a.len() > MAX_IDENTITY_TEXT)
        {
            return bad("audience", "must be at most 512 characters");
        }
        if self.roles.len() > MAX_IDENTITY_ROLES {
            return bad("roles", "at most 64 claim values");
        }
        if let Some(value) = self.roles.keys().find(|v| v.len() > MAX_IDENTITY_TEXT) {
            return Err((
                format!(
                    "identity.roles.{}",
                    value.chars().take(32).collect::<String>()
                ),
                "a claim value must be at most 512 characters".into(),
            ));
        }
        if let Some((value, role)) = self
            .roles
            .iter()
            .find(|(_, r)| !matches!(r.as_str(), "user" | "tenant_admin"))
        {
            return Err((
                format!("identity.roles.{value}"),
                format!(
                    "{role:?} is not a role a tenant's provider may grant (user, tenant_admin)"
                ),
            ));
        }
        Ok(())
    }
}

/// `http://` to 127.0.0.1, localhost or [::1]: a provider on this machine.
pub fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    #[default]
    Active,
    /// New triggers and webhooks are refused (403 `tenant_suspended`), cron is paused,
    /// triggers from other sources are dead-lettered; runs already in flight go on
    /// unless the suspension cancelled them.
    Suspended,
    /// The tenant's data was erased: its data keys are destroyed, its history deleted,
    /// its definitions and secrets removed. Refused like a suspended tenant, for good.
    Erased,
}

impl TenantState {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Active => "active",
            TenantState::Suspended => "suspended",
            TenantState::Erased => "erased",
        }
    }
}

/// A tenant's limits. Each field left unset is the deployment's default for every
/// tenant (the static configuration's `[ingest]`, `[orchestrator]`, `[sink]` and
/// `[analytics]` sections).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Sustained triggers per second accepted by ingest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_per_second: Option<u32>,
    /// Triggers accepted at once on top of the sustained rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_runs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_inflight_tasks: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_runs: Option<u32>,
    /// A retention class of the sink's `retention.classes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_class: Option<String>,
    /// The connectors (`http`, `email`, ...) the tenant's steps may use; unset: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_connectors: Option<Vec<String>>,
    /// Most rows one SQL query returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_max_rows: Option<u32>,
    /// Longest one SQL query may run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_timeout_ms: Option<u32>,
}

impl Plan {
    /// Whether the plan lets the tenant's steps use `connector`.
    pub fn allows_connector(&self, connector: &str) -> bool {
        self.allowed_connectors
            .as_ref()
            .is_none_or(|list| list.iter().any(|c| c == connector))
    }

    /// Every field `other` sets replaces this plan's (a PATCH).
    pub fn merge(&mut self, other: &Plan) {
        macro_rules! take {
            ($($f:ident),*) => {$(
                if other.$f.is_some() {
                    self.$f.clone_from(&other.$f);
                }
            )*};
        }
        take!(
            trigger_per_second,
            trigger_burst,
            max_concurrent_runs,
            max_inflight_tasks,
            max_queued_runs,
            retention_class,
            allowed_connectors,
            sql_max_rows,
            sql_timeout_ms
        );
    }

    /// The first field that breaks a rule, named by its path under `plan`.
    pub fn check(&self) -> Result<(), (String, String)> {
        let positive = [
            ("trigger_per_second", self.trigger_per_second),
            ("trigger_burst", self.trigger_burst),
            ("max_concurrent_runs", self.max_concurrent_runs),
            ("max_inflight_tasks", self.max_inflight_tasks),
            ("max_queued_runs", self.max_queued_runs),
            ("sql_max_rows", self.sql_max_rows),
            ("sql_timeout_ms", self.sql_timeout_ms),
        ];
        for (field, value) in positive {
            if value == Some(0) {
                return Err((format!("plan.{field}"), "must be at least 1".into()));
            }
        }
        if let Some(c) = &self.retention_class
            && (c.is_empty() || c.len() > 64)
        {
            return Err((
                "plan.retention_class".into(),
                "must be 1 to 64 characters".into(),
            ));
        }
        if let Some(list) = &self.allowed_connectors {
            if list.len() > MAX_ALLOWED_CONNECTORS {
                return Err((
                    "plan.allowed_connectors".into(),
                    format!("at most {MAX_ALLOWED_CONNECTORS} connectors"),
                ));
            }
            if let Some((i, _)) = list
                .iter()
                .enumerate()
                .find(|(_, c)| c.is_empty() || c.len() > 64)
            {
                return Err((
                    format!("plan.allowed_connectors[{i}]"),
                    "must be 1 to 64 characters".into(),
                ));
            }
        }
        Ok(())
    }
}

impl TenantRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("tenant record encodes: {e}"))
    }

    /// Decodes a record; the error names the field.
    pub fn decode(payload: &[u8]) -> Result<Self, String> {
        let de = &mut serde_json::Deserializer::from_slice(payload);
        serde_path_to_error::deserialize(de).map_err(|e| {
            format!(
                "tenant record is not valid: at `{}`: {}",
                e.path(),
                e.inner()
            )
        })
    }

    /// Whether new work is refused: suspended, or erased for good.
    pub fn is_suspended(&self) -> bool {
        matches!(self.state, TenantState::Suspended | TenantState::Erased)
    }

    pub fn is_erased(&self) -> bool {
        self.state == TenantState::Erased
    }

    /// Whether a trigger that occurred at `at` (unknown: `None`) is refused because the
    /// tenant was suspended by then.
    pub fn refuses_trigger_at(&self, at: Option<DateTime<Utc>>) -> bool {
        self.is_erased()
            || self.is_suspended()
                && match (at, self.suspended_at) {
                    (Some(at), Some(since)) => at >= since,
                    _ => true,
                }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TenantRecord {
        TenantRecord {
            id: TenantId::new("acme").unwrap(),
            display_name: "Acme".into(),
            plan: Plan {
                trigger_per_second: Some(5),
                allowed_connectors: Some(vec!["http".into()]),
                ..Plan::default()
            },
            state: TenantState::Suspended,
            suspended_at: Some(Utc::now()),
            erased_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            updated_by: "admin".into(),
            identity: None,
        }
    }

    #[test]
    fn round_trips_and_names_a_bad_field() {
        let r = record();
        assert_eq!(TenantRecord::decode(&r.encode()).unwrap(), r);
        let e = TenantRecord::decode(
            br#"{"id":"acme","display_name":"A","plan":{"max_queued_runs":"x"},"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap_err();
        assert!(e.contains("plan.max_queued_runs"), "{e}");
    }

    #[test]
    fn a_patch_replaces_only_the_fields_it_sets() {
        let mut plan = record().plan;
        plan.merge(&Plan {
            max_concurrent_runs: Some(3),
            ..Plan::default()
        });
        assert_eq!(plan.trigger_per_second, Some(5));
        assert_eq!(plan.max_concurrent_runs, Some(3));
        assert!(plan.allows_connector("http"));
        assert!(!plan.allows_connector("email"));
        assert!(Plan::default().allows_connector("email"));
    }

    #[test]
    fn zero_limits_and_empty_names_are_refused_by_path() {
        let p = Plan {
            max_inflight_tasks: Some(0),
            ..Plan::default()
        };
        assert_eq!(p.check().unwrap_err().0, "plan.max_inflight_tasks");
        let p = Plan {
            allowed_connectors: Some(vec!["http".into(), String::new()]),
            ..Plan::default()
        };
        assert_eq!(p.check().unwrap_err().0, "plan.allowed_connectors[1]");
        let p = Plan {
            allowed_connectors: Some(vec!["http".into(); MAX_ALLOWED_CONNECTORS + 1]),
            ..Plan::default()
        };
        assert_eq!(p.check().unwrap_err().0, "plan.allowed_connectors");
        assert!(record().plan.check().is_ok());
    }

    #[test]
    fn a_tenants_provider_is_checked_by_field() {
        let idp = IdentityProvider {
            issuer: "https://login.acme.example/".into(),
            jwks_uri: "https://login.acme.example/jwks".into(),
            audience: None,
            role_claim: "groups".into(),
            roles: [("admins".to_owned(), "tenant_admin".to_owned())].into(),
        };
        assert!(idp.check().is_ok());
        let e = IdentityProvider {
            roles: [("root".to_owned(), "platform_admin".to_owned())].into(),
            ..idp.clone()
        }
        .check()
        .unwrap_err();
        assert_eq!(e.0, "identity.roles.root");
        let e = IdentityProvider {
            jwks_uri: "http://login.acme.example/jwks".into(),
            ..idp.clone()
        }
        .check()
        .unwrap_err();
        assert_eq!(e.0, "identity.jwks_uri");
        assert!(is_loopback_http("http://127.0.0.1:9480/jwks"));
        // Past the bounds that keep a tenant record small.
        let many: std::collections::BTreeMap<String, String> = (0..=MAX_IDENTITY_ROLES)
            .map(|i| (format!("g{i}"), "user".to_owned()))
            .collect();
        let e = IdentityProvider {
            roles: many,
            ..idp.clone()
        }
        .check()
        .unwrap_err();
        assert_eq!(e.0, "identity.roles");
        let e = IdentityProvider {
            jwks_uri: format!("https://x.example/{}", "a".repeat(600)),
            ..idp
        }
        .check()
        .unwrap_err();
        assert_eq!(e.0, "identity.jwks_uri");
    }
}
