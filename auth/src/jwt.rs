//! Bearer JWTs: HS256 with the development secret, RS256/ES256 with keys from a JWKS
//! (an OIDC provider's). `alg: none` and every algorithm not configured are refused
//! before any signature is checked, so a token cannot choose how it is verified. Once a
//! JWKS is configured, HS256 development tokens are refused too unless the deployment
//! allows them explicitly (`allow_hs256_with_jwks`): a development secret left in the
//! environment of a production process must not mint tokens it accepts.
//!
//! Tokens are read as OIDC providers issue them: `aud` a string or an array (one entry
//! must be the audience), `iat` optional.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use aiq_topics::TenantId;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::claims::ClaimMapping;
use crate::error::AuthError;
use crate::principal::{CredentialKind, Principal};
use crate::role::Role;

/// The claims of a development token (`mint_dev_token`); verification reads only
/// `Verified` and leaves `exp`, `nbf`, `aud` and `iss` to the validator, which takes
/// every form the standard allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    pub role: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// What a verified token says about its caller: its subject, and every claim, read
/// through the provider's [`ClaimMapping`].
#[derive(Debug, Deserialize)]
struct Verified {
    sub: String,
    #[serde(flatten)]
    claims: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default)]
pub struct JwtConfig {
    pub audience: String,
    pub issuer: Option<String>,
    pub leeway_secs: u64,
    /// Enables HS256 (development tokens).
    pub hs256_secret: Option<String>,
    /// Enables RS256/ES256 with these keys, and then disables HS256 unless
    /// `allow_hs256_with_jwks`.
    pub jwks: Option<JwkSet>,
    /// Accept HS256 development tokens beside a JWKS (a test deployment of an OIDC
    /// setup); off, a configured JWKS makes HS256 tokens refused.
    pub allow_hs256_with_jwks: bool,
    /// How the provider's tokens (RS256/ES256) name tenant and role; development tokens
    /// always carry `tenant` and `role`.
    pub claims: ClaimMapping,
    /// Further providers, each bound to its issuer ([`JwtVerifier::for_issuer`]).
    pub issuers: Vec<JwtVerifier>,
}

/// Keys by kid, with the one algorithm each may verify.
type KeySet = BTreeMap<String, (Algorithm, DecodingKey)>;

/// Clones share one key set, so that a refresher can replace the provider's keys while
/// requests verify against them.
#[derive(Clone)]
pub struct JwtVerifier {
    audience: String,
    issuer: Option<String>,
    leeway_secs: u64,
    hs256: Option<DecodingKey>,
    keys: Arc<RwLock<KeySet>>,
    claims: ClaimMapping,
    /// Other providers by issuer: a token whose `iss` names one is verified by it alone.
    /// Shared by clones, so providers registered later (a tenant's own) reach every
    /// request handler.
    others: Arc<RwLock<BTreeMap<String, JwtVerifier>>>,
}

/// Names the provider, never its keys.
impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("others", &self.issuers())
            .finish_non_exhaustive()
    }
}

fn key_set(set: JwkSet) -> Result<KeySet, AuthError> {
    let mut keys = BTreeMap::new();
    for jwk in set.keys {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| AuthError::Config("every JWKS key needs a `kid`".into()))?;
        let alg = jwk_algorithm(&jwk).ok_or_else(|| {
            AuthError::Config(format!("JWKS key {kid:?} is neither RSA nor EC P-256"))
        })?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| AuthError::Config(format!("JWKS key {kid:?}: {e}")))?;
        keys.insert(kid, (alg, key));
    }
    Ok(keys)
}

fn jwk_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        _ => None,
    }
}

/// The `alg` a token claims, read without trusting anything else in it.
fn claimed_alg(token: &str) -> Option<String> {
    let head = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_owned)
}

/// The `iss` a token claims, read without trusting it: it only picks the verifier,
/// which checks the signature and the issuer itself.
fn claimed_issuer(token: &str) -> Option<String> {
    let body = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_owned)
}

impl JwtVerifier {
    pub fn new(cfg: JwtConfig) -> Result<Self, AuthError> {
        if cfg.audience.is_empty() {
            return Err(AuthError::Config("the audience must not be empty".into()));
        }
        let hs256_secret = cfg
            .hs256_secret
            .filter(|_| cfg.jwks.is_none() || cfg.allow_hs256_with_jwks);
        let hs256 = match hs256_secret {
            Some(s) if s.len() < 32 => return Err(AuthError::WeakSecret),
            Some(s) => Some(
                DecodingKey::from_secret(s.as_bytes())
                    .map_err(|e| AuthError::Config(e.to_string()))?,
            ),
            None => None,
        };
        let keys = match cfg.jwks {
            Some(set) => key_set(set)?,
            None => BTreeMap::new(),
        };
        if hs256.is_none() && keys.is_empty() && cfg.issuers.is_empty() {
            return Err(AuthError::Config(
                "no way to verify tokens: set AIQ_DEV_JWT_SECRET (development), ingest.jwks or \
                 ingest.issuers"
                    .into(),
            ));
        }
        let v = Self {
            audience: cfg.audience,
            issuer: cfg.issuer,
            leeway_secs: cfg.leeway_secs,
            hs256,
            keys: Arc::new(RwLock::new(keys)),
            claims: cfg.claims,
            others: Arc::default(),
        };
        for other in cfg.issuers {
            v.add_issuer(other)?;
        }
        Ok(v)
    }

    /// A verifier of one provider's RS256/ES256 tokens, which must name `issuer`.
    pub fn for_issuer(
        issuer: &str,
        audience: &str,
        jwks: JwkSet,
        claims: ClaimMapping,
    ) -> Result<Self, AuthError> {
        if issuer.is_empty() {
            return Err(AuthError::Config("an issuer must not be empty".into()));
        }
        let keys = key_set(jwks)?;
        if keys.is_empty() {
            return Err(AuthError::Config(format!(
                "the JWKS of issuer {issuer:?} holds no keys"
            )));
        }
        if audience.is_empty() {
            return Err(AuthError::Config("the audience must not be empty".into()));
        }
        Ok(Self {
            audience: audience.to_owned(),
            issuer: Some(issuer.to_owned()),
            leeway_secs: 30,
            hs256: None,
            keys: Arc::new(RwLock::new(keys)),
            claims,
            others: Arc::default(),
        })
    }

    /// Trusts `other`'s issuer from now on (replacing a verifier of the same issuer).
    /// Refused for an issuer-less verifier and for this verifier's own issuer.
    pub fn add_issuer(&self, other: JwtVerifier) -> Result<(), AuthError> {
        let Some(iss) = other.issuer.clone() else {
            return Err(AuthError::Config(
                "a further provider must name its issuer".into(),
            ));
        };
        if self.issuer.as_deref() == Some(iss.as_str()) {
            return Err(AuthError::Config(format!(
                "issuer {iss:?} is already this deployment's own provider"
            )));
        }
        self.others
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(iss, other);
        Ok(())
    }

    /// Stops trusting `issuer`; true if it was trusted.
    pub fn remove_issuer(&self, issuer: &str) -> bool {
        self.others
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(issuer)
            .is_some()
    }

    /// The further providers' issuers.
    pub fn issuers(&self) -> Vec<String> {
        self.others
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The further provider that verifies `issuer`'s tokens, if one does.
    pub fn issuer(&self, issuer: &str) -> Option<JwtVerifier> {
        self.others
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(issuer)
            .cloned()
    }

    /// Whether HS256 development tokens are accepted.
    pub fn accepts_hs256(&self) -> bool {
        self.hs256.is_some()
    }

    /// Replaces the provider's keys (a JWKS refresh), for this verifier and every clone.
    /// A set that does not parse changes nothing. Returns how many keys it holds.
    pub fn replace_jwks(&self, set: JwkSet) -> Result<usize, AuthError> {
        let keys = key_set(set)?;
        if keys.is_empty() {
            return Err(AuthError::Config("the JWKS holds no keys".into()));
        }
        let n = keys.len();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(n)
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let claimed = claimed_issuer(token);
        if let Some(iss) = &claimed
            && let Some(other) = self.issuer(iss)
        {
            return other.verify_own(token);
        }
        match self.verify_own(token) {
            // A key this provider does not know, in a token of an issuer that is not
            // this one: say it is the issuer that is not trusted.
            Err(AuthError::UnknownKey(_))
                if claimed
                    .as_deref()
                    .is_some_and(|iss| self.issuer.as_deref() != Some(iss)) =>
            {
                Err(AuthError::UnknownIssuer(claimed.unwrap_or_default()))
            }
            other => other,
        }
    }

    fn verify_own(&self, token: &str) -> Result<Principal, AuthError> {
        let alg = claimed_alg(token).ok_or_else(|| AuthError::Malformed("not a JWT".into()))?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::AlgorithmNotAllowed(alg.clone()))?;
        let key = match header.alg {
            Algorithm::HS256 => self
                .hs256
                .clone()
                .ok_or(AuthError::AlgorithmNotAllowed(alg))?,
            Algorithm::RS256 | Algorithm::ES256 => {
                let kid = header.kid.clone().unwrap_or_default();
                let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
                let (key_alg, key) = keys.get(&kid).ok_or(AuthError::UnknownKey(kid))?;
                // A key verifies only the algorithm it was published for.
                if *key_alg != header.alg {
                    return Err(AuthError::AlgorithmNotAllowed(alg));
                }
                key.clone()
            }
            _ => return Err(AuthError::AlgorithmNotAllowed(alg)),
        };
        let mut v = Validation::new(header.alg);
        v.set_audience(&[&self.audience]);
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
        }
        v.leeway = self.leeway_secs;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<Verified>(token, &key, &v).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm => {
                    AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg))
                }
                other => AuthError::Malformed(format!("{other:?}")),
            })?;
        let c = data.claims;
        let own = ClaimMapping::default();
        let mapping = if header.alg == Algorithm::HS256 {
            &own
        } else {
            &self.claims
        };
        let (tenant, role) = mapping.read(&c.claims)?;
        Ok(Principal {
            tenant,
            role,
            subject: c.sub,
            via: CredentialKind::Jwt,
        })
    }
}

/// A short-lived HS256 token for development and tests (`aiq token`).
pub fn mint_dev_token(
    secret: &str,
    tenant: &TenantId,
    role: Role,
    audience: &str,
    ttl_secs: u64,
    now_unix: u64,
) -> Result<String, AuthError> {
    if secret.len() < 32 {
        return Err(AuthError::WeakSecret);
    }
    let claims = Claims {
        sub: format!("dev:{tenant}:{role}"),
        tenant: tenant.to_string(),
        role: role.to_string(),
        aud: audience.to_owned(),
        exp: now_unix + ttl_secs,
        iat: now_unix,
        iss: None,
    };
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())
        .map_err(|e| AuthError::Config(e.to_string()))?;
    jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &claims, &key)
        .map_err(|e| AuthError::Config(e.to_string()))
}
