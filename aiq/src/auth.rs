//! The token verifier from configuration: the development secret from
//! `AIQ_DEV_JWT_SECRET`, an OIDC provider's keys from `ingest.jwks` (a file, or a URL
//! fetched at start and refreshed), further providers from `[[ingest.issuers]]`, and
//! the providers tenants register as their own (followed from the tenant registry).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiq_auth::{JwtConfig, JwtVerifier};
use aiq_ingest::settings::IngestSettings;
use aiq_stage::StageHandle;
use anyhow::Context;
use jsonwebtoken::jwk::JwkSet;

pub const DEV_SECRET_VAR: &str = "AIQ_DEV_JWT_SECRET";

pub fn dev_secret() -> Option<String> {
    std::env::var(DEV_SECRET_VAR).ok().filter(|s| !s.is_empty())
}

/// A verifier whose keys are fetched again from `url` now and then.
pub struct Refresh {
    pub verifier: JwtVerifier,
    pub url: String,
}

/// A JWKS from a file, or from a URL (then also returned, to be refreshed).
async fn load_jwks(field: &str, src: &str) -> anyhow::Result<(JwkSet, Option<String>)> {
    if src.starts_with("http://") || src.starts_with("https://") {
        let url = src.to_owned();
        let fetched = {
            let url = url.clone();
            tokio::task::spawn_blocking(move || fetch_jwks(&url)).await?
        }
        .with_context(|| field.to_owned())?;
        return Ok((fetched, Some(url)));
    }
    let text = std::fs::read_to_string(src).with_context(|| format!("{field}: reading {src}"))?;
    let set =
        serde_json::from_str(&text).with_context(|| format!("{field}: {src} is not a JWKS"))?;
    Ok((set, None))
}

/// The verifier, and the verifiers whose JWKS URLs to keep refreshing.
pub async fn jwt_verifier(
    settings: &IngestSettings,
) -> anyhow::Result<(JwtVerifier, Vec<Refresh>)> {
    let mut refresh = Vec::new();
    let jwks = match &settings.jwks {
        None => None,
        Some(src) => {
            let (set, url) = load_jwks("ingest.jwks", src).await?;
            Some((set, url))
        }
    };
    let mut issuers = Vec::new();
    for (i, is) in settings.issuers.iter().enumerate() {
        let field = format!("ingest.issuers[{i}]");
        let (set, url) = load_jwks(&format!("{field}.jwks"), &is.jwks).await?;
        let claims = is
            .claims
            .mapping()
            .map_err(|e| anyhow::anyhow!("{field}.claims: {e}"))?;
        let audience = is.audience.as_deref().unwrap_or(&settings.jwt_audience);
        let v = JwtVerifier::for_issuer(&is.issuer, audience, set, claims)
            .with_context(|| field.clone())?;
        if let Some(url) = url {
            refresh.push(Refresh {
                verifier: v.clone(),
                url,
            });
        }
        issuers.push(v);
    }
    let (set, url) = jwks.map_or((None, None), |(s, u)| (Some(s), u));
    let v = verifier_from(settings, dev_secret(), set, issuers)?;
    if let Some(url) = url {
        refresh.push(Refresh {
            verifier: v.clone(),
            url,
        });
    }
    Ok((v, refresh))
}

/// The verifier of `settings` with this development secret and provider keys. A JWKS
/// turns development tokens off unless `ingest.allow_dev_tokens_with_jwks`; a development
/// secret that is set but not used is logged, so that it is not mistaken for working.
fn verifier_from(
    settings: &IngestSettings,
    dev_secret: Option<String>,
    jwks: Option<JwkSet>,
    issuers: Vec<JwtVerifier>,
) -> anyhow::Result<JwtVerifier> {
    let had_dev_secret = dev_secret.is_some();
    let verifier = JwtVerifier::new(JwtConfig {
        audience: settings.jwt_audience.clone(),
        issuer: settings.jwt_issuer.clone(),
        leeway_secs: 30,
        hs256_secret: dev_secret,
        jwks,
        allow_hs256_with_jwks: settings.allow_dev_tokens_with_jwks,
        claims: settings
            .jwt_claims
            .mapping()
            .map_err(|e| anyhow::anyhow!(e))?,
        issuers,
    })?;
    if had_dev_secret && !verifier.accepts_hs256() {
        tracing::warn!(
            "{DEV_SECRET_VAR} is set but ingest.jwks is configured: HS256 development tokens \
             are refused (set ingest.allow_dev_tokens_with_jwks = true to accept them)"
        );
    }
    Ok(verifier)
}

/// Keys travel over TLS, except from this machine (a provider in a test or a sidecar).
fn check_url(url: &str) -> anyhow::Result<()> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return Ok(());
    }
    anyhow::bail!("ingest.jwks: {url} must be https (plain http only for a loopback host)")
}

/// Fetches and parses a JWKS (blocking; at most 10 s).
pub fn fetch_jwks(url: &str) -> anyhow::Result<JwkSet> {
    check_url(url)?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let body = agent
        .get(url)
        .call()
        .with_context(|| format!("ingest.jwks: fetching {url}"))?
        .body_mut()
        .read_to_string()
        .with_context(|| format!("ingest.jwks: reading {url}"))?;
    serde_json::from_str(&body).with_context(|| format!("ingest.jwks: {url} is not a JWKS"))
}

/// The JWKS refresher as a stage: fetches the key set again every `every`; a failure
/// keeps the keys the verifier has, and never ends the stage.
pub fn spawn_refresh(verifier: JwtVerifier, url: String, every: Duration) -> StageHandle {
    aiq_stage::spawn_task("jwks-refresh", move |stop| async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(10)));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.stopped() => return Ok::<(), std::convert::Infallible>(()),
            }
            let fetched = {
                let url = url.clone();
                tokio::task::spawn_blocking(move || fetch_jwks(&url)).await
            };
            match fetched.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok(set) => match verifier.replace_jwks(set) {
                    Ok(n) => tracing::info!(url, keys = n, "JWKS refreshed"),
                    Err(e) => tracing::warn!(url, error = %e, "JWKS refresh refused; keys kept"),
                },
                Err(e) => tracing::warn!(url, error = %e, "JWKS refresh failed; keys kept"),
            }
        }
    })
}

/// How often the tenant registry is looked at for providers registered, changed or
/// removed.
const TENANT_IDP_POLL: Duration = Duration::from_secs(1);
/// A provider whose keys could not be fetched is tried again after this long.
const TENANT_IDP_RETRY: Duration = Duration::from_secs(10);

/// One tenant's provider as last trusted.
struct Trusted {
    tenant: aiq_topics::TenantId,
    idp: aiq_topics::IdentityProvider,
    fetched: Instant,
}

/// The verifier of a tenant's own provider: its tokens act for `tenant`, at most as
/// tenant admin.
fn tenant_verifier(
    tenant: &aiq_topics::TenantId,
    idp: &aiq_topics::IdentityProvider,
    audience: &str,
    jwks: JwkSet,
) -> anyhow::Result<JwtVerifier> {
    let mut roles = BTreeMap::new();
    for (value, name) in &idp.roles {
        roles.insert(value.clone(), name.parse::<aiq_auth::Role>()?);
    }
    let mapping = aiq_auth::ClaimMapping {
        fixed_tenant: Some(tenant.clone()),
        role_claim: idp.role_claim.clone(),
        roles,
        ceiling: Some(aiq_auth::Role::TenantAdmin),
        ..aiq_auth::ClaimMapping::default()
    };
    let audience = idp.audience.as_deref().unwrap_or(audience);
    Ok(JwtVerifier::for_issuer(
        &idp.issuer,
        audience,
        jwks,
        mapping,
    )?)
}

/// Keeps `verifier` trusting exactly the providers tenants registered (`identity` on
/// the tenant record), each for its own tenant, as a stage: a provider registered or
/// changed is trusted within about a second of its record being read; one removed, or
/// whose tenant is gone, no longer; keys are fetched again every `refresh`. The
/// deployment's own issuers (`reserved`) are never taken over.
pub fn spawn_tenant_issuers(
    verifier: JwtVerifier,
    directory: Arc<aiq_tenants::Directory>,
    audience: String,
    reserved: Vec<String>,
    refresh: Duration,
) -> StageHandle {
    aiq_stage::spawn_task("tenant-issuers", move |stop| async move {
        let mut trusted: BTreeMap<String, Trusted> = BTreeMap::new();
        let mut failed: BTreeMap<String, Instant> = BTreeMap::new();
        let mut seen = None;
        let mut tick = tokio::time::interval(TENANT_IDP_POLL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.stopped() => return Ok::<(), std::convert::Infallible>(()),
            }
            // Nothing changed, nothing failed, no keys due: no need to walk every tenant.
            let changes = directory.changes();
            let due = trusted.values().any(|t| t.fetched.elapsed() >= refresh);
            if seen == Some(changes) && failed.is_empty() && !due {
                continue;
            }
            seen = Some(changes);
            // By issuer; of two tenants naming one (the API refuses it), the first id.
            let mut wanted: BTreeMap<String, (aiq_topics::TenantId, aiq_topics::IdentityProvider)> =
                BTreeMap::new();
            for t in directory.list() {
                if let Some(idp) = t.identity
                    && !reserved.contains(&idp.issuer)
                {
                    wanted.entry(idp.issuer.clone()).or_insert((t.id, idp));
                }
            }
            failed.retain(|iss, _| wanted.contains_key(iss));
            let gone: Vec<String> = trusted
                .iter()
                .filter(|(iss, t)| {
                    wanted
                        .get(*iss)
                        .is_none_or(|(tenant, idp)| *tenant != t.tenant || *idp != t.idp)
                })
                .map(|(iss, _)| iss.clone())
                .collect();
            for iss in gone {
                verifier.remove_issuer(&iss);
                trusted.remove(&iss);
                tracing::info!(issuer = %iss, "no longer trusting a tenant's provider");
            }
            for (iss, (tenant, idp)) in wanted {
                let stale = trusted
                    .get(&iss)
                    .is_none_or(|t| t.fetched.elapsed() >= refresh);
                let waiting = failed
                    .get(&iss)
                    .is_some_and(|at| at.elapsed() < TENANT_IDP_RETRY);
                if !stale || waiting {
                    continue;
                }
                let url = idp.jwks_uri.clone();
                let fetched = tokio::task::spawn_blocking(move || fetch_jwks(&url)).await;
                let built = fetched
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r)
                    .and_then(|set| tenant_verifier(&tenant, &idp, &audience, set));
                match built {
                    // A refresh replaces the provider's verifier whole, new keys and all.
                    Ok(v) => match verifier.add_issuer(v.clone()) {
                        Ok(()) => {
                            if !trusted.contains_key(&iss) {
                                tracing::info!(issuer = %iss, tenant = %tenant, "trusting a tenant's provider");
                            }
                            failed.remove(&iss);
                            trusted.insert(
                                iss,
                                Trusted {
                                    tenant,
                                    idp,
                                    fetched: Instant::now(),
                                },
                            );
                        }
                        Err(e) => {
                            tracing::error!(issuer = %iss, tenant = %tenant, error = %e, "a tenant's provider refused");
                            failed.insert(iss, Instant::now());
                        }
                    },
                    Err(e) => {
                        tracing::warn!(issuer = %iss, tenant = %tenant, error = %format!("{e:#}"), "a tenant's provider's keys could not be fetched; trying again");
                        failed.insert(iss, Instant::now());
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Serves `body` to every request on a loopback port; returns the URL.
    fn serve(body: &'static str) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    #[test]
    fn a_jwks_turns_development_tokens_off_unless_the_setting_allows_them() {
        let config = crate::config::load(None, serde_json::json!({})).unwrap();
        let mut settings = config.ingest;
        let secret = "a-development-secret-of-32-bytes!!";
        let jwks: JwkSet =
            serde_json::from_str(include_str!("../../auth/tests/fixtures/jwks.json")).unwrap();
        let token = aiq_auth::mint_dev_token(
            secret,
            &aiq_topics::TenantId::new("acme").unwrap(),
            aiq_auth::Role::PlatformAdmin,
            &settings.jwt_audience,
            600,
            chrono::Utc::now().timestamp() as u64,
        )
        .unwrap();
        assert!(
            !settings.allow_dev_tokens_with_jwks,
            "the default refuses them"
        );
        let v = verifier_from(
            &settings,
            Some(secret.into()),
            Some(jwks.clone()),
            Vec::new(),
        )
        .unwrap();
        assert_eq!(
            v.verify(&token).unwrap_err(),
            aiq_auth::AuthError::AlgorithmNotAllowed("HS256".into())
        );
        settings.allow_dev_tokens_with_jwks = true;
        let v = verifier_from(&settings, Some(secret.into()), Some(jwks), Vec::new()).unwrap();
        assert!(v.verify(&token).is_ok());
        settings.allow_dev_tokens_with_jwks = false;
        let v = verifier_from(&settings, Some(secret.into()), None, Vec::new()).unwrap();
        assert!(
            v.verify(&token).is_ok(),
            "without a JWKS the secret is the way in"
        );
    }

    #[test]
    fn a_jwks_url_is_fetched_and_plain_http_is_only_for_loopback() {
        let url = serve(include_str!("../../auth/tests/fixtures/jwks.json"));
        let set = fetch_jwks(&url).unwrap();
        let kids: Vec<_> = set
            .keys
            .iter()
            .filter_map(|k| k.common.key_id.clone())
            .collect();
        assert!(kids.contains(&"rsa-1".to_owned()), "{kids:?}");
        let e = fetch_jwks("http://login.example.com/jwks.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be https"), "{e}");
        let not_jwks = serve("{\"hello\": 1}");
        let e = format!("{:#}", fetch_jwks(&not_jwks).unwrap_err());
        assert!(e.contains("is not a JWKS"), "{e}");
    }
}
