//! [`Caller`]: who a request acts as, once authenticated — a tenant, a role, and the
//! subject the audit trail names. Kept apart from `http` (which establishes it from the
//! request headers), so that `audit` can take one without importing the HTTP layer
//! whose handlers record audit events.

use aiq_auth::{Action, Role};
use aiq_topics::TenantId;
use axum::http::StatusCode;

use crate::problem::Problem;

/// An authenticated caller, acting for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: TenantId,
    pub role: Role,
    /// Who, for the audit trail: a token's `sub` or an API key's id.
    pub subject: String,
    /// The caller's own tenant when it acts for another (a platform admin naming one in
    /// `X-AIQ-Tenant`).
    pub own_tenant: Option<TenantId>,
}

impl Caller {
    pub fn require(&self, action: Action) -> Result<(), Problem> {
        if aiq_auth::permits(self.role, action) {
            Ok(())
        } else {
            Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("role {} may not {action}", self.role),
            ))
        }
    }
}
