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
    redact_store_options(&mut shown.sink.parquet.store_options);
    redact_store_options(&mut shown.analytics.store_options);
    print!("{}", toml::to_string_pretty(&shown)?);
    Ok(ExitCode::SUCCESS)
}

/// Object-store options that are credentials (account keys, SAS, tokens, secrets).
fn redact_store_options(options: &mut std::collections::BTreeMap<String, String>) {
    for (k, v) in options.iter_mut() {
        let k = k.to_ascii_lowercase();
        if ["key", "secret", "token", "sas", "password", "signature"]
            .iter()
            .any(|w| k.contains(w))
        {
            *v = REDACTED.into();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_credentials_are_redacted_and_the_rest_shown() {
        let mut o: std::collections::BTreeMap<String, String> = [
            ("azure_storage_account_key", "c2VjcmV0"),
            ("azure_storage_sas_key", "sv=1&sig=abc"),
            ("aws_secret_access_key", "s"),
            ("azure_storage_account_name", "prodhistory"),
            ("aws_endpoint", "http://minio:9000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        super::redact_store_options(&mut o);
        assert_eq!(o["azure_storage_account_key"], super::REDACTED);
        assert_eq!(o["azure_storage_sas_key"], super::REDACTED);
        assert_eq!(o["aws_secret_access_key"], super::REDACTED);
        assert_eq!(o["azure_storage_account_name"], "prodhistory");
        assert_eq!(o["aws_endpoint"], "http://minio:9000");
    }
}
