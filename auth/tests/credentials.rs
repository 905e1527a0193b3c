//! Every way a credential is accepted or refused.

// Test support: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aiq_auth::{
    ApiKey, ApiKeyLookup, ApiKeyRecord, AuthError, Authenticator, Claims, CredentialKind,
    JwtConfig, JwtVerifier, LookupFuture, Role, mint_dev_token,
};
use aiq_topics::TenantId;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const SECRET: &str = "a-development-secret-of-32-bytes!!";
const AUD: &str = "automateiq";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwks() -> jsonwebtoken::jwk::JwkSet {
    serde_json::from_str(include_str!("fixtures/jwks.json")).unwrap()
}

/// A verifier; with both `hs` and `jwks_on`, HS256 is allowed beside the JWKS.
fn verifier(hs: bool, jwks_on: bool, issuer: Option<&str>) -> JwtVerifier {
    JwtVerifier::new(JwtConfig {
        audience: AUD.into(),
        issuer: issuer.map(str::to_owned),
        leeway_secs: 5,
        hs256_secret: hs.then(|| SECRET.to_owned()),
        jwks: jwks_on.then(jwks),
        allow_hs256_with_jwks: hs && jwks_on,
        ..JwtConfig::default()
    })
    .unwrap()
}

fn claims(exp_offset: i64) -> Claims {
    Claims {
        sub: "ada".into(),
        tenant: "acme".into(),
        role: "tenant_admin".into(),
        aud: AUD.into(),
        exp: (now() as i64 + exp_offset) as u64,
        iat: now(),
        iss: None,
    }
}

fn sign(alg: Algorithm, kid: Option<&str>, c: &Claims, key: &EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, c, key).unwrap()
}

fn hs_key(secret: &[u8]) -> EncodingKey {
    EncodingKey::from_secret(secret).unwrap()
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(include_bytes!("fixtures/rsa.pem")).unwrap()
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(include_bytes!("fixtures/ec.pem")).unwrap()
}

#[test]
fn a_dev_token_round_trips_into_a_principal() {
    let tenant = TenantId::new("acme").unwrap();
    let token = mint_dev_token(SECRET, &tenant, Role::User, AUD, 600, now()).unwrap();
    let p = verifier(true, false, None).verify(&token).unwrap();
    assert_eq!(
        (p.tenant.as_str(), p.role, p.via),
        ("acme", Role::User, CredentialKind::Jwt)
    );
    assert_eq!(
        mint_dev_token("short", &tenant, Role::User, AUD, 600, now()),
        Err(AuthError::WeakSecret)
    );
}

#[test]
fn rs256_and_es256_verify_with_the_jwks_keys() {
    let v = verifier(false, true, None);
    let p = v
        .verify(&sign(
            Algorithm::RS256,
            Some("rsa-1"),
            &claims(600),
            &rsa_key(),
        ))
        .unwrap();
    assert_eq!(p.role, Role::TenantAdmin);
    let p = v
        .verify(&sign(
            Algorithm::ES256,
            Some("ec-1"),
            &claims(600),
            &ec_key(),
        ))
        .unwrap();
    assert_eq!(p.subject, "ada");
}

#[test]
fn every_bad_token_is_refused_with_its_reason() {
    let v = verifier(true, true, None);
    let hs = hs_key(SECRET.as_bytes());
    assert_eq!(
        v.verify(&sign(Algorithm::HS256, None, &claims(-60), &hs)),
        Err(AuthError::Expired)
    );
    let mut wrong_aud = claims(600);
    wrong_aud.aud = "someone-else".into();
    assert_eq!(
        v.verify(&sign(Algorithm::HS256, None, &wrong_aud, &hs)),
        Err(AuthError::WrongAudience)
    );
    let mut role = claims(600);
    role.role = "root".into();
    assert_eq!(
        v.verify(&sign(Algorithm::HS256, None, &role, &hs)),
        Err(AuthError::UnknownRole("root".into()))
    );
    let mut tenant = claims(600);
    tenant.tenant = "ACME".into();
    assert!(matches!(
        v.verify(&sign(Algorithm::HS256, None, &tenant, &hs)),
        Err(AuthError::BadTenant(_))
    ));
    assert_eq!(
        v.verify(&sign(
            Algorithm::HS256,
            None,
            &claims(600),
            &hs_key(b"another-secret-that-is-32-bytes-long")
        )),
        Err(AuthError::BadSignature)
    );
    // A tampered payload.
    let good = sign(Algorithm::HS256, None, &claims(600), &hs);
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut c = claims(600);
    c.role = "platform_admin".into();
    parts[1] =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
    assert_eq!(v.verify(&parts.join(".")), Err(AuthError::BadSignature));
    assert!(matches!(
        v.verify("not-a-token"),
        Err(AuthError::Malformed(_))
    ));
    assert_eq!(
        v.verify(&sign(
            Algorithm::RS256,
            Some("nope"),
            &claims(600),
            &rsa_key()
        )),
        Err(AuthError::UnknownKey("nope".into()))
    );
    // An RSA token claiming the EC key's kid.
    assert_eq!(
        v.verify(&sign(
            Algorithm::RS256,
            Some("ec-1"),
            &claims(600),
            &rsa_key()
        )),
        Err(AuthError::AlgorithmNotAllowed("RS256".into()))
    );
    let with_issuer = verifier(true, false, Some("https://login.example.com/"));
    let mut iss = claims(600);
    iss.iss = Some("https://evil.example.com/".into());
    assert_eq!(
        with_issuer.verify(&sign(Algorithm::HS256, None, &iss, &hs)),
        Err(AuthError::WrongIssuer)
    );
}

#[test]
fn alg_none_and_algorithm_confusion_are_refused() {
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(&serde_json::to_value(claims(600)).unwrap())
    );
    assert_eq!(
        verifier(true, true, None).verify(&none),
        Err(AuthError::AlgorithmNotAllowed("none".into()))
    );

    // HS256 "signed" with the RSA public key as the secret, against a verifier that has
    // only the JWKS: HS256 is not accepted at all.
    let public_pem = include_bytes!("fixtures/rsa.pub.pem");
    let confused = sign(
        Algorithm::HS256,
        Some("rsa-1"),
        &claims(600),
        &hs_key(public_pem),
    );
    assert_eq!(
        verifier(false, true, None).verify(&confused),
        Err(AuthError::AlgorithmNotAllowed("HS256".into()))
    );
    // With a development secret configured too, the forged token still fails: HS256 is
    // checked only against the development secret, never against a JWKS key.
    assert_eq!(
        verifier(true, true, None).verify(&confused),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn a_deployment_with_an_oidc_provider_refuses_development_tokens_unless_allowed() {
    let oidc = |allow: bool| {
        JwtVerifier::new(JwtConfig {
            audience: AUD.into(),
            leeway_secs: 5,
            hs256_secret: Some(SECRET.to_owned()),
            jwks: Some(jwks()),
            allow_hs256_with_jwks: allow,
            ..JwtConfig::default()
        })
        .unwrap()
    };
    let tenant = TenantId::new("acme").unwrap();
    let dev = mint_dev_token(SECRET, &tenant, Role::PlatformAdmin, AUD, 600, now()).unwrap();
    let strict = oidc(false);
    assert!(!strict.accepts_hs256());
    assert_eq!(
        strict.verify(&dev),
        Err(AuthError::AlgorithmNotAllowed("HS256".into()))
    );
    assert_eq!(
        strict.verify(&dev).unwrap_err().to_string(),
        "tokens signed with HS256 are not accepted here"
    );
    // The provider's tokens still verify.
    let rs = sign(Algorithm::RS256, Some("rsa-1"), &claims(600), &rsa_key());
    assert!(strict.verify(&rs).is_ok());
    // Allowed explicitly, both verify.
    let lenient = oidc(true);
    assert!(lenient.accepts_hs256());
    assert!(lenient.verify(&dev).is_ok());
    assert!(lenient.verify(&rs).is_ok());
    // Without a JWKS, the development secret is the way to verify.
    assert!(verifier(true, false, None).accepts_hs256());
}

/// Claims as OIDC providers write them, given as JSON.
fn provider_token(claims: serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa-1".into());
    jsonwebtoken::encode(&h, &claims, &rsa_key()).unwrap()
}

#[test]
fn standard_tokens_with_an_audience_array_or_without_iat_are_accepted() {
    let v = verifier(false, true, Some("https://login.example.com/"));
    let base = || {
        serde_json::json!({
            "sub": "ada", "tenant": "acme", "role": "user",
            "iss": "https://login.example.com/",
            "exp": now() + 600,
        })
    };
    // `aud` an array holding this audience among others; no `iat`.
    let mut c = base();
    c["aud"] = serde_json::json!(["https://graph.example.com", AUD]);
    let p = v.verify(&provider_token(c)).unwrap();
    assert_eq!((p.tenant.as_str(), p.role), ("acme", Role::User));
    // A single-string `aud` with `iat`, as before.
    let mut c = base();
    c["aud"] = AUD.into();
    c["iat"] = now().into();
    assert!(v.verify(&provider_token(c)).is_ok());
    // An array without this audience, or no `aud` at all, is refused.
    let mut c = base();
    c["aud"] = serde_json::json!(["https://graph.example.com"]);
    assert_eq!(v.verify(&provider_token(c)), Err(AuthError::WrongAudience));
    assert!(matches!(
        v.verify(&provider_token(base())),
        Err(AuthError::Malformed(_))
    ));
    // A token missing the tenant is refused, naming the claim.
    let mut c = base();
    c["aud"] = AUD.into();
    c.as_object_mut().unwrap().remove("tenant");
    assert!(matches!(
        v.verify(&provider_token(c)),
        Err(AuthError::MissingClaim { .. })
    ));
}

#[test]
fn a_verifier_needs_a_way_to_verify_and_a_strong_secret() {
    let none = JwtVerifier::new(JwtConfig {
        audience: AUD.into(),
        ..JwtConfig::default()
    });
    assert!(matches!(none, Err(AuthError::Config(_))));
    let weak = JwtVerifier::new(JwtConfig {
        audience: AUD.into(),
        hs256_secret: Some("short".into()),
        ..JwtConfig::default()
    });
    assert!(matches!(weak, Err(AuthError::WeakSecret)));
}

/// API key records in memory: a test double of the CQL table the ingest stage reads.
#[derive(Default)]
struct Keys(Mutex<BTreeMap<String, ApiKeyRecord>>);

impl ApiKeyLookup for Keys {
    fn find<'a>(&'a self, key_id: &'a str) -> LookupFuture<'a> {
        let found = self.0.lock().unwrap().get(key_id).cloned();
        Box::pin(async move { Ok(found) })
    }
}

#[tokio::test]
async fn api_keys_authenticate_and_refusals_do_not_say_which_part_was_wrong() {
    let keys = Arc::new(Keys::default());
    let (plain, record) =
        ApiKey::generate(TenantId::new("acme").unwrap(), Role::User, "ci", now()).unwrap();
    keys.0
        .lock()
        .unwrap()
        .insert(record.key_id.clone(), record.clone());
    let auth = Authenticator::new(verifier(true, false, None), keys.clone());

    let p = auth.authenticate(None, Some(&plain)).await.unwrap();
    assert_eq!(
        (p.tenant.as_str(), p.role, p.via),
        ("acme", Role::User, CredentialKind::ApiKey)
    );
    let p = auth
        .authenticate(Some(&format!("Bearer {plain}")), None)
        .await
        .unwrap();
    assert_eq!(p.subject, format!("key:{}", record.key_id));

    // A wrong secret for a real id, and an id that does not exist, read the same.
    let (other, _) =
        ApiKey::generate(TenantId::new("acme").unwrap(), Role::User, "x", now()).unwrap();
    let wrong_secret = format!(
        "aiq_{}_{}",
        record.key_id,
        other.rsplit_once('_').unwrap().1
    );
    let a = auth
        .authenticate(None, Some(&wrong_secret))
        .await
        .unwrap_err();
    let b = auth.authenticate(None, Some(&other)).await.unwrap_err();
    assert_eq!((a.to_string(), a.status()), (b.to_string(), b.status()));
    assert_eq!(a, AuthError::InvalidApiKey);

    keys.0
        .lock()
        .unwrap()
        .get_mut(&record.key_id)
        .unwrap()
        .revoked = true;
    assert_eq!(
        auth.authenticate(None, Some(&plain)).await,
        Err(AuthError::InvalidApiKey)
    );

    assert_eq!(auth.authenticate(None, None).await, Err(AuthError::Missing));
    assert_eq!(
        auth.authenticate(Some("Bearer x"), Some(&plain)).await,
        Err(AuthError::Ambiguous)
    );
    assert!(matches!(
        auth.authenticate(Some("Basic dXNlcg=="), None).await,
        Err(AuthError::Malformed(_))
    ));
    assert_eq!(AuthError::Missing.status(), 401);
}

proptest::proptest! {
    #[test]
    fn api_key_parsing_never_panics(s in ".{0,120}") {
        let _ = ApiKey::parse(&s);
    }
}

#[test]
fn the_readme_shows_the_permission_table_the_code_enforces() {
    let readme = include_str!("../../README.md");
    let table = aiq_auth::permission_table_markdown();
    assert!(
        readme.contains(&table),
        "README.md's roles table differs from the code; paste this:\n{table}"
    );
}

#[test]
fn a_refreshed_jwks_replaces_the_keys_of_every_clone() {
    let v = verifier(true, true, None);
    let clone = v.clone();
    let rs = sign(Algorithm::RS256, Some("rsa-1"), &claims(600), &rsa_key());
    assert!(clone.verify(&rs).is_ok());
    // The provider rotated: only the EC key is published now.
    let mut rotated = jwks();
    rotated
        .keys
        .retain(|k| k.common.key_id.as_deref() == Some("ec-1"));
    assert_eq!(v.replace_jwks(rotated).unwrap(), 1);
    assert_eq!(
        clone.verify(&rs),
        Err(AuthError::UnknownKey("rsa-1".into()))
    );
    let es = sign(Algorithm::ES256, Some("ec-1"), &claims(600), &ec_key());
    assert!(clone.verify(&es).is_ok());
    // An empty or broken set changes nothing.
    assert!(
        v.replace_jwks(jsonwebtoken::jwk::JwkSet { keys: vec![] })
            .is_err()
    );
    assert!(clone.verify(&es).is_ok());
}

#[test]
fn a_providers_own_claims_are_mapped_to_tenant_and_role() {
    let v = JwtVerifier::new(JwtConfig {
        audience: AUD.into(),
        leeway_secs: 5,
        jwks: Some(jwks()),
        claims: aiq_auth::ClaimMapping {
            tenant_claim: "tid".into(),
            tenants: [("0d7e-directory".to_owned(), TenantId::new("acme").unwrap())].into(),
            role_claim: "roles".into(),
            roles: [("Aiq.Admin".to_owned(), Role::TenantAdmin)].into(),
            ..aiq_auth::ClaimMapping::default()
        },
        ..JwtConfig::default()
    })
    .unwrap();
    let token = |claims: serde_json::Value| provider_token(claims);
    let base = serde_json::json!({"sub": "svc", "aud": AUD, "exp": now() + 600});
    let mut c = base.clone();
    c["tid"] = "0d7e-directory".into();
    c["roles"] = serde_json::json!(["Aiq.Admin"]);
    let p = v.verify(&token(c)).unwrap();
    assert_eq!((p.tenant.as_str(), p.role), ("acme", Role::TenantAdmin));
    // Without the tenant claim: 401, saying which claim.
    let mut c = base;
    c["roles"] = serde_json::json!(["Aiq.Admin"]);
    let e = v.verify(&token(c)).unwrap_err();
    assert_eq!(e.status(), 401);
    assert!(e.to_string().contains("`tid`"), "{e}");
}

#[test]
fn further_issuers_verify_their_own_tokens_only_and_can_be_removed() {
    let primary = verifier(true, false, None);
    let tenant_idp = "https://idp.globex.example/";
    primary
        .add_issuer(
            JwtVerifier::for_issuer(
                tenant_idp,
                AUD,
                jwks(),
                aiq_auth::ClaimMapping {
                    fixed_tenant: Some(TenantId::new("globex").unwrap()),
                    role_claim: "groups".into(),
                    roles: [
                        ("admins".to_owned(), Role::PlatformAdmin),
                        ("staff".to_owned(), Role::User),
                    ]
                    .into(),
                    ceiling: Some(Role::TenantAdmin),
                    ..aiq_auth::ClaimMapping::default()
                },
            )
            .unwrap(),
        )
        .unwrap();
    assert_eq!(primary.issuers(), [tenant_idp]);
    let token = |iss: &str, groups: &[&str]| {
        provider_token(serde_json::json!({
            "sub": "svc", "aud": AUD, "exp": now() + 600, "iss": iss, "groups": groups,
        }))
    };
    // The tenant's provider: its tenant, its role at most tenant_admin.
    let p = primary.verify(&token(tenant_idp, &["admins"])).unwrap();
    assert_eq!((p.tenant.as_str(), p.role), ("globex", Role::TenantAdmin));
    let p = primary.verify(&token(tenant_idp, &["staff"])).unwrap();
    assert_eq!(p.role, Role::User);
    // The same keys under an issuer nobody registered: refused, naming the issuer.
    let e = primary
        .verify(&token("https://evil.example/", &["staff"]))
        .unwrap_err();
    assert_eq!(e.status(), 401);
    assert!(e.to_string().contains("evil.example"), "{e}");
    // A development token claiming the tenant's issuer is verified by that provider,
    // which takes no HS256.
    let mut c = claims(600);
    c.iss = Some(tenant_idp.into());
    let forged = sign(Algorithm::HS256, None, &c, &hs_key(SECRET.as_bytes()));
    assert!(matches!(
        primary.verify(&forged),
        Err(AuthError::AlgorithmNotAllowed(_))
    ));
    // Development tokens without that issuer still work.
    assert!(
        primary
            .verify(&sign(
                Algorithm::HS256,
                None,
                &claims(600),
                &hs_key(SECRET.as_bytes())
            ))
            .is_ok()
    );
    // Removed: refused.
    assert!(primary.remove_issuer(tenant_idp));
    let e = primary.verify(&token(tenant_idp, &["staff"])).unwrap_err();
    assert!(matches!(e, AuthError::UnknownIssuer(_)), "{e}");
}
