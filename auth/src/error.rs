//! Why a caller was refused. Messages say what is wrong without echoing secrets, and an
//! unknown API key and a wrong secret read the same, so callers cannot probe key ids.

use crate::principal::AccessError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credential: send `Authorization: Bearer <token>` or `X-API-Key: <key>`")]
    Missing,
    #[error("send one credential, not both a bearer token and an X-API-Key")]
    Ambiguous,
    #[error("the credential is malformed: {0}")]
    Malformed(String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is not for this audience")]
    WrongAudience,
    #[error("the token is not from the expected issuer")]
    WrongIssuer,
    #[error("tokens signed with {0} are not accepted here")]
    AlgorithmNotAllowed(String),
    #[error("no key {0:?} is known to verify this token")]
    UnknownKey(String),
    #[error("the token's issuer {0:?} is not trusted here")]
    UnknownIssuer(String),
    #[error("the token has no `{claim}` claim, which names {what} here")]
    MissingClaim { claim: String, what: &'static str },
    #[error("the token names an unknown role {0:?}")]
    UnknownRole(String),
    #[error("the token names an invalid tenant: {0}")]
    BadTenant(String),
    #[error("the API key is not valid")]
    InvalidApiKey,
    #[error("the key store cannot be reached: {0}")]
    Store(String),
    #[error("the JWT configuration is invalid: {0}")]
    Config(String),
    #[error("the development secret must be at least 32 bytes")]
    WeakSecret,
    #[error(transparent)]
    Access(#[from] AccessError),
}

impl AuthError {
    /// 401 for failed authentication, 403 for a refused action, 503 when the key store is
    /// down, 500 for a configuration fault.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Access(a) => a.status(),
            AuthError::Store(_) => 503,
            AuthError::Config(_) | AuthError::WeakSecret => 500,
            _ => 401,
        }
    }
}
