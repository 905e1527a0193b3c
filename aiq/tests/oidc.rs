//! Enterprise sign-on against real OpenID providers (`scripts/services up oidc`: two
//! node-oidc-provider processes on loopback, issuers a and b) and a real `aiq serve`
//! with closed tenants. Tokens are RS256 JWTs obtained over each provider's token
//! endpoint with the client-credentials grant, exactly as a service account would.
//!
//! - Issuer a is the deployment's provider: the tenant comes from its `org` claim
//!   through a table, the role from its `groups` array through another.
//! - Issuer b is tenant beta's own provider, registered on the tenant: refused before,
//!   trusted within seconds after, for beta only and at most as tenant admin, refused
//!   again once removed.
//! - A token without the tenant claim, or of an issuer nobody trusts, gets 401 naming
//!   the reason.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use aiq_testkit::{CQL, KAFKA, OIDC_A, OIDC_B, require_service};
use serde_json::{Value, json};
use support::{Deployment, wait_until};

const DEV_SECRET: &str = "oidc-test-secret-not-for-production";
const JSON: &str = "application/json";
const HELLO: &str = "id: hello\nsteps:\n  - id: say\n    task: { connector: noop }\n";

/// A client-credentials access token from the provider at `issuer`.
fn token(issuer: &str, client: &str) -> String {
    let agent = support::http();
    let mut r = agent
        .post(&format!("{issuer}/token"))
        .header(
            "authorization",
            &format!(
                "Basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("{client}:{client}-secret")
                )
            ),
        )
        .send_form([("grant_type", "client_credentials"), ("scope", "api")])
        .unwrap();
    let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(r.status().as_u16(), 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

#[test]
fn provider_tokens_map_to_tenants_and_roles_and_a_tenant_brings_its_own_provider() {
    let brokers = require_service!(KAFKA);
    let contact_points = require_service!(CQL);
    let a = require_service!(OIDC_A);
    let b = require_service!(OIDC_B);
    let extra = r#"
[ingest.jwt_claims]
tenant = "org"
tenants = { "org-acme" = "acme" }
role = "groups"
roles = { "aiq-admins" = "tenant_admin", "everyone" = "user" }
"#;
    let jwks = format!("{a}/jwks");
    let d = Deployment::start_with_env(
        "oidc",
        &brokers,
        &contact_points,
        DEV_SECRET,
        extra,
        &[
            ("AIQ_INGEST_OPEN_TENANTS", "false"),
            ("AIQ_INGEST_JWKS", &jwks),
            ("AIQ_INGEST_JWT_ISSUER", &a),
            // The platform admin of this test signs in with a development token.
            ("AIQ_INGEST_ALLOW_DEV_TOKENS_WITH_JWKS", "true"),
        ],
    );
    d.aiq(&["tenants", "create", "acme"]);
    d.aiq(&["tenants", "create", "beta"]);
    let root = d.token("ops", "platform_admin");

    // Issuer a: org-acme → acme; aiq-admins → tenant_admin, everyone → user.
    let admin = token(&a, "acme-admin");
    let (status, body) = d.call(
        "POST",
        "/v1/workflows",
        &admin,
        Some(("application/yaml", HELLO)),
    );
    assert_eq!(status, 201, "{body}");
    let user = token(&a, "acme-user");
    let (status, listed) = d.call("GET", "/v1/workflows", &user, None);
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let (status, refused) = d.call(
        "POST",
        "/v1/workflows",
        &user,
        Some(("application/yaml", HELLO)),
    );
    assert_eq!(status, 403, "a user may not register: {refused}");
    let (status, started) = d.call(
        "POST",
        "/v1/workflows/hello/runs",
        &user,
        Some((JSON, "{}")),
    );
    assert_eq!(status, 202, "{started}");

    // No tenant claim: 401 naming it.
    let (status, refused) = d.call("GET", "/v1/workflows", &token(&a, "no-org"), None);
    assert_eq!(status, 401, "{refused}");
    assert!(
        refused["detail"].as_str().unwrap().contains("`org`"),
        "{refused}"
    );

    // Issuer b is nobody's yet: 401 naming the issuer.
    let beta_admin = token(&b, "beta-admin");
    let (status, refused) = d.call("GET", "/v1/workflows", &beta_admin, None);
    assert_eq!(status, 401, "{refused}");
    assert!(
        refused["detail"].as_str().unwrap().contains(&b),
        "{refused}"
    );

    // A tenant may not take the deployment's own issuer.
    let taken = json!({"identity": {"issuer": a, "jwks_uri": jwks}}).to_string();
    let (status, refused) = d.call("PATCH", "/v1/tenants/beta", &root, Some((JSON, &taken)));
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused["errors"][0]["pointer"], "/identity/issuer",
        "{refused}"
    );
    // Nor grant platform rights.
    let greedy = json!({"identity": {"issuer": b, "jwks_uri": format!("{b}/jwks"),
                                     "roles": {"beta-admins": "platform_admin"}}})
    .to_string();
    let (status, refused) = d.call("PATCH", "/v1/tenants/beta", &root, Some((JSON, &greedy)));
    assert_eq!(status, 422, "{refused}");

    // Beta brings its own provider: b's tokens act for beta.
    let own =
        json!({"identity": {"issuer": b, "jwks_uri": format!("{b}/jwks"), "role_claim": "groups",
                                  "roles": {"beta-admins": "tenant_admin", "staff": "user"}}})
        .to_string();
    let (status, patched) = d.call("PATCH", "/v1/tenants/beta", &root, Some((JSON, &own)));
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["identity"]["issuer"], b.as_str());
    wait_until("issuer b trusted", Duration::from_secs(15), || {
        d.call("GET", "/v1/workflows", &beta_admin, None).0 == 200
    });
    let (status, body) = d.call(
        "POST",
        "/v1/workflows",
        &beta_admin,
        Some(("application/yaml", HELLO)),
    );
    // 201, not 200: a new workflow of beta's, not acme's same one again.
    assert_eq!(status, 201, "{body}");
    let beta_user = token(&b, "beta-user");
    assert_eq!(
        d.call(
            "POST",
            "/v1/workflows",
            &beta_user,
            Some(("application/yaml", HELLO))
        )
        .0,
        403
    );
    // b's tokens never reach acme, and a's never beta.
    let (status, refused) = d.call("GET", "/v1/tenants/acme", &beta_admin, None);
    assert_eq!(status, 403, "{refused}");
    let (_, beta_runs) = d.call("GET", "/v1/runs", &beta_admin, None);
    assert!(
        beta_runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["tenant"] != "acme"),
        "{beta_runs}"
    );

    // Removed: refused again.
    let (status, _) = d.call(
        "PATCH",
        "/v1/tenants/beta",
        &root,
        Some((JSON, r#"{"identity": null}"#)),
    );
    assert_eq!(status, 200);
    wait_until(
        "issuer b no longer trusted",
        Duration::from_secs(15),
        || d.call("GET", "/v1/workflows", &beta_admin, None).0 == 401,
    );
}
