//! `aiq serve`: runs the stages named by `serve.roles` in this process.

use std::process::ExitCode;

use crate::config::Config;
use crate::roles::Role;

/// The issue that brings each stage; `serve` refuses a role whose stage is not in this
/// build rather than pretending to run it.
fn missing_stage(role: Role) -> Option<&'static str> {
    match role {
        Role::Ingest => Some("#4 (ingest)"),
        Role::Orchestrator => Some("#5 (orchestrator)"),
        Role::Worker => Some("#6 (workers)"),
        Role::Sink => Some("#7 (sink)"),
    }
}

pub async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let missing: Vec<String> = config
        .serve
        .roles
        .iter()
        .filter_map(|r| missing_stage(r).map(|issue| format!("{} (issue {issue})", r.as_str())))
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "this build has no stage yet for role(s): {}; `aiq topics apply`, `aiq schema apply` \
             and `aiq check` work today",
            missing.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
