//! `aiq config`: the effective configuration, as TOML, with secrets redacted.

use std::process::ExitCode;

use crate::config::Config;

const REDACTED: &str = "<redacted>";

pub fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let mut shown = config.clone();
    if shown.kafka.sasl_password.is_some() {
        shown.kafka.sasl_password = Some(REDACTED.into());
    }
    if shown.cql.password.is_some() {
        shown.cql.password = Some(REDACTED.into());
    }
    print!("{}", toml::to_string_pretty(&shown)?);
    Ok(ExitCode::SUCCESS)
}
