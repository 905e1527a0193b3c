//! Who is calling. Handlers take a [`Caller`]; how it is established (bearer JWT, API
//! key) is the [`Authenticate`] implementation's business, so every route is
//! authenticated the same way and the tenant never comes from a request body.

use std::future::Future;
use std::pin::Pin;

use aiq_topics::TenantId;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

use crate::http::App;
use crate::problem::Problem;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    PlatformAdmin,
    TenantAdmin,
    User,
}

/// An authenticated caller, acting for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: TenantId,
    pub role: Role,
    /// Who, for the audit trail: a token's `sub` or an API key's id.
    pub subject: String,
}

pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Caller, Problem>> + Send + 'a>>;

pub trait Authenticate: Send + Sync {
    /// Establishes the caller from the request headers, or refuses with 401/403.
    fn authenticate<'a>(&'a self, headers: &'a HeaderMap) -> AuthFuture<'a>;
}

impl FromRequestParts<App> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        app.auth.authenticate(&parts.headers).await
    }
}

/// What a route does, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    RegisterWorkflow,
    ReadWorkflows,
    StartRun,
    ManageWebhooks,
}

impl Role {
    /// The one table of who may do what in ingest (README "Roles").
    pub fn permits(self, op: Op) -> bool {
        match self {
            Role::PlatformAdmin => true,
            Role::TenantAdmin => true,
            Role::User => matches!(op, Op::ReadWorkflows | Op::StartRun),
        }
    }
}

impl Caller {
    pub fn require(&self, op: Op) -> Result<(), Problem> {
        if self.role.permits(op) {
            Ok(())
        } else {
            Err(Problem::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                format!("role {:?} may not {op:?}", self.role),
            ))
        }
    }
}
