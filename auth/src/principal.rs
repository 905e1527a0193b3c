//! Who is calling, after authentication. The tenant comes from the credential, never
//! from the request body.

use aiq_topics::TenantId;

use crate::role::{Action, Role, permits};

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Jwt,
    ApiKey,
}

/// Authorisation refused. Messages name the role and action, never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("role {role} may not {action}")]
    Forbidden { role: Role, action: Action },
    #[error(
        "cross-tenant access refused: credential is for tenant {own}, request names {requested}"
    )]
    CrossTenant { own: TenantId, requested: TenantId },
}

impl AccessError {
    /// Both are authorisation failures: 403.
    pub fn status(&self) -> u16 {
        403
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    pub role: Role,
    pub subject: String,
    pub via: CredentialKind,
}

impl Principal {
    pub fn require(&self, action: Action) -> Result<(), AccessError> {
        if permits(self.role, action) {
            Ok(())
        } else {
            Err(AccessError::Forbidden {
                role: self.role,
                action,
            })
        }
    }

    /// The tenant a request acts on. Platform admins may name any tenant (the HTTP layer
    /// takes it from `X-AIQ-Tenant`); everyone else only their own.
    pub fn acting_tenant(&self, requested: Option<&TenantId>) -> Result<TenantId, AccessError> {
        match requested {
            Some(t) if self.role == Role::PlatformAdmin => Ok(t.clone()),
            Some(t) if *t != self.tenant => Err(AccessError::CrossTenant {
                own: self.tenant.clone(),
                requested: t.clone(),
            }),
            _ => Ok(self.tenant.clone()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(role: Role) -> Principal {
        Principal {
            tenant: TenantId::new("acme").unwrap(),
            role,
            subject: "s".into(),
            via: CredentialKind::Jwt,
        }
    }

    #[test]
    fn acting_tenant_rules() {
        let acme = TenantId::new("acme").unwrap();
        let other = TenantId::new("other").unwrap();
        assert_eq!(
            p(Role::PlatformAdmin).acting_tenant(Some(&other)),
            Ok(other.clone())
        );
        assert_eq!(p(Role::PlatformAdmin).acting_tenant(None), Ok(acme.clone()));
        for r in [Role::TenantAdmin, Role::User] {
            assert_eq!(p(r).acting_tenant(None), Ok(acme.clone()));
            assert_eq!(p(r).acting_tenant(Some(&acme)), Ok(acme.clone()));
            assert!(matches!(
                p(r).acting_tenant(Some(&other)),
                Err(AccessError::CrossTenant { .. })
            ));
        }
    }

    #[test]
    fn require_follows_permits() {
        assert!(p(Role::User).require(Action::StartRun).is_ok());
        let e = p(Role::User).require(Action::ManageTenants).unwrap_err();
        assert_eq!(e.status(), 403);
        assert_eq!(e.to_string(), "role user may not manage_tenants");
    }
}
