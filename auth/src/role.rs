//! Roles and what each may do. `permits` is the single source of truth: the docs table
//! is rendered from it, and the tests pin every cell against a literal table.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Who a caller is, as far as permissions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    PlatformAdmin,
    TenantAdmin,
    User,
}

impl Role {
    /// Column order of the permission table.
    pub const ALL: [Role; 3] = [Role::PlatformAdmin, Role::TenantAdmin, Role::User];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform_admin",
            Role::TenantAdmin => "tenant_admin",
            Role::User => "user",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; expected platform_admin, tenant_admin or user")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// Every API operation that needs a permission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    RegisterWorkflow,
    ReadWorkflows,
    /// API or manual trigger.
    StartRun,
    SendSignal,
    CancelRun,
    /// History API.
    ReadRuns,
    /// SQL over the caller's own tenant.
    QuerySql,
    QuerySqlAllTenants,
    ManageApiKeys,
    ManageWebhooks,
    /// Connector credentials: set and delete the tenant's secrets (never read them).
    ManageSecrets,
    /// Quotas and tenant configuration.
    ManageTenants,
    ReadAudit,
    ExportTenantData,
    EraseTenantData,
    /// Erase one ended run's payloads (its input, output and error messages).
    EraseRunData,
    /// List and read the tenant's dead letters.
    ReadDeadLetters,
    /// Replay or resolve the tenant's dead letters.
    ManageDeadLetters,
    /// Dead letters of every tenant, and those whose tenant is unknown.
    ReadDeadLettersAllTenants,
}

impl Action {
    /// Row order of the permission table.
    pub const ALL: [Action; 19] = [
        Action::RegisterWorkflow,
        Action::ReadWorkflows,
        Action::StartRun,
        Action::SendSignal,
        Action::CancelRun,
        Action::ReadRuns,
        Action::QuerySql,
        Action::QuerySqlAllTenants,
        Action::ManageApiKeys,
        Action::ManageWebhooks,
        Action::ManageSecrets,
        Action::ManageTenants,
        Action::ReadAudit,
        Action::ExportTenantData,
        Action::EraseTenantData,
        Action::EraseRunData,
        Action::ReadDeadLetters,
        Action::ManageDeadLetters,
        Action::ReadDeadLettersAllTenants,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::RegisterWorkflow => "register_workflow",
            Action::ReadWorkflows => "read_workflows",
            Action::StartRun => "start_run",
            Action::SendSignal => "send_signal",
            Action::CancelRun => "cancel_run",
            Action::ReadRuns => "read_runs",
            Action::QuerySql => "query_sql",
            Action::QuerySqlAllTenants => "query_sql_all_tenants",
            Action::ManageApiKeys => "manage_api_keys",
            Action::ManageWebhooks => "manage_webhooks",
            Action::ManageSecrets => "manage_secrets",
            Action::ManageTenants => "manage_tenants",
            Action::ReadAudit => "read_audit",
            Action::ExportTenantData => "export_tenant_data",
            Action::EraseTenantData => "erase_tenant_data",
            Action::EraseRunData => "erase_run_data",
            Action::ReadDeadLetters => "read_dead_letters",
            Action::ManageDeadLetters => "manage_dead_letters",
            Action::ReadDeadLettersAllTenants => "read_dead_letters_all_tenants",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policy. One match so that a new action cannot compile without a decision.
pub fn permits(role: Role, action: Action) -> bool {
    use Action::*;
    match (role, action) {
        // Platform admins run the platform: everything, across tenants.
        (Role::PlatformAdmin, _) => true,
        // Tenant admins configure their tenant but cannot touch others or erase it.
        (
            Role::TenantAdmin,
            RegisterWorkflow | ReadWorkflows | StartRun | SendSignal | CancelRun | ReadRuns
            | QuerySql | ManageApiKeys | ManageWebhooks | ManageSecrets | ReadAudit
            | ExportTenantData | EraseRunData | ReadDeadLetters | ManageDeadLetters,
        ) => true,
        (
            Role::TenantAdmin,
            QuerySqlAllTenants | ManageTenants | EraseTenantData | ReadDeadLettersAllTenants,
        ) => false,
        // Users operate existing workflows of their tenant.
        (
            Role::User,
            ReadWorkflows | StartRun | SendSignal | CancelRun | ReadRuns | QuerySql
            | ReadDeadLetters,
        ) => true,
        (
            Role::User,
            RegisterWorkflow
            | QuerySqlAllTenants
            | ManageApiKeys
            | ManageWebhooks
            | ManageSecrets
            | ManageTenants
            | ReadAudit
            | ExportTenantData
            | EraseTenantData
            | EraseRunData
            | ManageDeadLetters
            | ReadDeadLettersAllTenants,
        ) => false,
    }
}

/// The permission table as Markdown (rows = actions, columns = roles); deterministic so
/// the docs can be checked against it byte for byte.
pub fn permission_table_markdown() -> String {
    let mut out = String::from("| Action |");
    for r in Role::ALL {
        out.push_str(&format!(" `{r}` |"));
    }
    out.push_str("\n|---|");
    for _ in Role::ALL {
        out.push_str(":---:|");
    }
    out.push('\n');
    for a in Action::ALL {
        out.push_str(&format!("| `{a}` |"));
        for r in Role::ALL {
            out.push_str(if permits(r, a) { " ✓ |" } else { " — |" });
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cell_matches_the_literal_table() {
        // (action, platform_admin, tenant_admin, user)
        let expected = [
            (Action::RegisterWorkflow, true, true, false),
            (Action::ReadWorkflows, true, true, true),
            (Action::StartRun, true, true, true),
            (Action::SendSignal, true, true, true),
            (Action::CancelRun, true, true, true),
            (Action::ReadRuns, true, true, true),
            (Action::QuerySql, true, true, true),
            (Action::QuerySqlAllTenants, true, false, false),
            (Action::ManageApiKeys, true, true, false),
            (Action::ManageWebhooks, true, true, false),
            (Action::ManageSecrets, true, true, false),
            (Action::ManageTenants, true, false, false),
            (Action::ReadAudit, true, true, false),
            (Action::ExportTenantData, true, true, false),
            (Action::EraseTenantData, true, false, false),
            (Action::EraseRunData, true, true, false),
            (Action::ReadDeadLetters, true, true, true),
            (Action::ManageDeadLetters, true, true, false),
            (Action::ReadDeadLettersAllTenants, true, false, false),
        ];
        assert_eq!(expected.len(), Action::ALL.len());
        for (a, pa, ta, u) in expected {
            assert_eq!(permits(Role::PlatformAdmin, a), pa, "platform_admin {a}");
            assert_eq!(permits(Role::TenantAdmin, a), ta, "tenant_admin {a}");
            assert_eq!(permits(Role::User, a), u, "user {a}");
        }
    }

    #[test]
    fn roles_roundtrip_through_names() {
        for r in Role::ALL {
            assert_eq!(r.to_string().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn table_is_deterministic() {
        let t = permission_table_markdown();
        assert_eq!(t, permission_table_markdown());
        assert!(t.contains("| `erase_tenant_data` | ✓ | — | — |"));
    }
}
