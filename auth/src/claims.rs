//! How a provider's token names its caller's tenant and role. Our own tokens carry
//! `tenant` and `role`; an identity provider's carry what it was set up to carry: a
//! directory id (`tid` in Entra ID), a custom claim, `roles` or `groups` as arrays, names
//! of its own. A [`ClaimMapping`] reads those, so a provider needs no customising:
//!
//! - the tenant is `fixed_tenant` (a provider that is one tenant's own), or the value of
//!   `tenant_claim`, translated by `tenants` when that table is not empty (a directory
//!   GUID to a tenant id);
//! - the role is read from `role_claim`, a string or an array of strings, each value
//!   translated by `roles` when that table is not empty (a group name to a role); of
//!   several, the most privileged wins, and a token none of whose values maps is refused.

use std::collections::BTreeMap;

use aiq_topics::TenantId;
use serde_json::{Map, Value};

use crate::error::AuthError;
use crate::role::Role;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    pub tenant_claim: String,
    pub fixed_tenant: Option<TenantId>,
    /// Claim value → tenant id; empty: the value is the tenant id.
    pub tenants: BTreeMap<String, TenantId>,
    pub role_claim: String,
    /// Claim value → role; empty: the value is the role's name.
    pub roles: BTreeMap<String, Role>,
    /// The most a token of this provider may be: a tenant's own provider makes tenant
    /// admins at most, whatever its tokens claim.
    pub ceiling: Option<Role>,
}

impl Default for ClaimMapping {
    /// Our own tokens' claims: `tenant` and `role`, as they are.
    fn default() -> Self {
        Self {
            tenant_claim: "tenant".into(),
            fixed_tenant: None,
            tenants: BTreeMap::new(),
            role_claim: "role".into(),
            roles: BTreeMap::new(),
            ceiling: None,
        }
    }
}

/// Privilege order: a caller with several roles acts with the highest.
fn rank(r: Role) -> u8 {
    match r {
        Role::User => 0,
        Role::TenantAdmin => 1,
        Role::PlatformAdmin => 2,
    }
}

impl ClaimMapping {
    /// The tenant and role the verified `claims` name.
    pub fn read(&self, claims: &Map<String, Value>) -> Result<(TenantId, Role), AuthError> {
        let tenant = self.tenant(claims)?;
        let role = self.role(claims)?;
        let role = match self.ceiling {
            Some(max) if rank(role) > rank(max) => max,
            _ => role,
        };
        Ok((tenant, role))
    }

    fn tenant(&self, claims: &Map<String, Value>) -> Result<TenantId, AuthError> {
        if let Some(t) = &self.fixed_tenant {
            return Ok(t.clone());
        }
        let value = claims
            .get(&self.tenant_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError::MissingClaim {
                claim: self.tenant_claim.clone(),
                what: "the tenant",
            })?;
        if self.tenants.is_empty() {
            return TenantId::new(value).map_err(|e| AuthError::BadTenant(e.to_string()));
        }
        self.tenants.get(value).cloned().ok_or_else(|| {
            AuthError::BadTenant(format!(
                "claim `{}` = {value:?} is not mapped to a tenant",
                self.tenant_claim
            ))
        })
    }

    fn role(&self, claims: &Map<String, Value>) -> Result<Role, AuthError> {
        let missing = || AuthError::MissingClaim {
            claim: self.role_claim.clone(),
            what: "the role",
        };
        let values: Vec<&str> = match claims.get(&self.role_claim).ok_or_else(missing)? {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return Err(missing()),
        };
        let mapped = values.iter().filter_map(|v| {
            if self.roles.is_empty() {
                v.parse::<Role>().ok()
            } else {
                self.roles.get(*v).copied()
            }
        });
        mapped
            .max_by_key(|r| rank(*r))
            .ok_or_else(|| match values.as_slice() {
                // One role name of our own that is not one: say which.
                [one] if self.roles.is_empty() => AuthError::UnknownRole((*one).to_owned()),
                _ => AuthError::UnknownRole(format!(
                    "claim `{}` = {values:?} names no role this deployment maps",
                    self.role_claim
                )),
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn our_own_claims_read_as_they_are() {
        let m = ClaimMapping::default();
        let (t, r) = m
            .read(&claims(json!({"tenant": "acme", "role": "user"})))
            .unwrap();
        assert_eq!((t.as_str(), r), ("acme", Role::User));
    }

    #[test]
    fn a_providers_claims_are_translated_and_the_highest_role_wins() {
        let m = ClaimMapping {
            tenant_claim: "tid".into(),
            tenants: [("9f1c-guid".to_owned(), TenantId::new("acme").unwrap())].into(),
            role_claim: "groups".into(),
            roles: [
                ("aiq-users".to_owned(), Role::User),
                ("aiq-admins".to_owned(), Role::TenantAdmin),
            ]
            .into(),
            ..ClaimMapping::default()
        };
        let c = claims(json!({"tid": "9f1c-guid", "groups": ["staff", "aiq-users", "aiq-admins"]}));
        assert_eq!(
            m.read(&c).unwrap(),
            (TenantId::new("acme").unwrap(), Role::TenantAdmin)
        );
        // Refusals name the claim.
        let e = m
            .read(&claims(json!({"groups": ["aiq-users"]})))
            .unwrap_err();
        assert!(e.to_string().contains("`tid`"), "{e}");
        let e = m
            .read(&claims(json!({"tid": "other", "groups": ["aiq-users"]})))
            .unwrap_err();
        assert!(matches!(e, AuthError::BadTenant(_)), "{e}");
        let e = m
            .read(&claims(json!({"tid": "9f1c-guid", "groups": ["staff"]})))
            .unwrap_err();
        assert!(matches!(e, AuthError::UnknownRole(_)), "{e}");
        // A provider that is one tenant's own: the tenant claim is not read.
        let own = ClaimMapping {
            fixed_tenant: Some(TenantId::new("globex").unwrap()),
            ..m
        };
        let c = claims(json!({"groups": "aiq-users"}));
        assert_eq!(
            own.read(&c).unwrap(),
            (TenantId::new("globex").unwrap(), Role::User)
        );
        // A tenant's own provider never makes a platform admin.
        let capped = ClaimMapping {
            roles: [("root".to_owned(), Role::PlatformAdmin)].into(),
            ceiling: Some(Role::TenantAdmin),
            ..own
        };
        let c = claims(json!({"groups": ["root"]}));
        assert_eq!(capped.read(&c).unwrap().1, Role::TenantAdmin);
    }
}
