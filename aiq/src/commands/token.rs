//! `aiq token`: a short-lived development token.

use std::process::ExitCode;

use aiq_auth::{Role, mint_dev_token};
use aiq_topics::TenantId;

use crate::auth::{DEV_SECRET_VAR, dev_secret};
use crate::config::Config;

pub fn run(
    config: &Config,
    tenant: &TenantId,
    role: Role,
    ttl_secs: u64,
) -> anyhow::Result<ExitCode> {
    let Some(secret) = dev_secret() else {
        anyhow::bail!(
            "{DEV_SECRET_VAR} is not set; development tokens are signed with it (32 bytes or more)"
        );
    };
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    println!(
        "{}",
        mint_dev_token(
            &secret,
            tenant,
            role,
            &config.ingest.jwt_audience,
            ttl_secs,
            now
        )?
    );
    Ok(ExitCode::SUCCESS)
}
