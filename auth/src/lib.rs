//! Authentication and roles for every HTTP-facing stage: bearer JWTs (HS256 development
//! tokens; RS256/ES256 from an OIDC provider's JWKS), per-tenant API keys stored hashed,
//! and the one table of what each role may do.

pub mod api_key;
pub mod authenticator;
pub mod claims;
pub mod error;
pub mod jwt;
pub mod principal;
pub mod role;

pub use api_key::{ApiKey, ApiKeyRecord, MalformedApiKey, RandomUnavailable};
pub use authenticator::{ApiKeyLookup, Authenticator, LookupFuture};
pub use claims::ClaimMapping;
pub use error::AuthError;
pub use jwt::{Claims, JwtConfig, JwtVerifier, mint_dev_token};
pub use principal::{AccessError, CredentialKind, Principal};
pub use role::{Action, Role, UnknownRole, permission_table_markdown, permits};
