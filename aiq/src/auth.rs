//! The token verifier from configuration: the development secret from
//! `AIQ_DEV_JWT_SECRET`, an OIDC provider's keys from `ingest.jwks`.

use aiq_auth::{JwtConfig, JwtVerifier};
use aiq_ingest::settings::IngestSettings;
use anyhow::Context;

pub const DEV_SECRET_VAR: &str = "AIQ_DEV_JWT_SECRET";

pub fn dev_secret() -> Option<String> {
    std::env::var(DEV_SECRET_VAR).ok().filter(|s| !s.is_empty())
}

pub fn jwt_verifier(settings: &IngestSettings) -> anyhow::Result<JwtVerifier> {
    let jwks = match &settings.jwks {
        None => None,
        Some(src) if src.starts_with("http://") || src.starts_with("https://") => anyhow::bail!(
            "ingest.jwks: fetching a JWKS over HTTP is not built yet; save the provider's JWKS \
             to a file and give its path"
        ),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("ingest.jwks: reading {path}"))?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("ingest.jwks: {path} is not a JWKS"))?,
            )
        }
    };
    Ok(JwtVerifier::new(JwtConfig {
        audience: settings.jwt_audience.clone(),
        issuer: settings.jwt_issuer.clone(),
        leeway_secs: 30,
        hs256_secret: dev_secret(),
        jwks,
    })?)
}
