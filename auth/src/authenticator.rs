//! Establishes the caller from a request's credential: a bearer JWT, or an API key sent
//! as `Authorization: Bearer aiq_...` or `X-API-Key`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::api_key::{ApiKey, ApiKeyRecord};
use crate::error::AuthError;
use crate::jwt::JwtVerifier;
use crate::principal::{CredentialKind, Principal};

pub type LookupFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<ApiKeyRecord>, String>> + Send + 'a>>;

/// Where API key records live (the CQL store in production).
pub trait ApiKeyLookup: Send + Sync {
    fn find<'a>(&'a self, key_id: &'a str) -> LookupFuture<'a>;
}

pub struct Authenticator {
    jwt: JwtVerifier,
    keys: Arc<dyn ApiKeyLookup>,
}

impl Authenticator {
    pub fn new(jwt: JwtVerifier, keys: Arc<dyn ApiKeyLookup>) -> Self {
        Self { jwt, keys }
    }

    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        api_key_header: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let bearer = match authorization {
            None => None,
            Some(h) => Some(
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
                    .map(str::trim)
                    .ok_or_else(|| {
                        AuthError::Malformed(
                            "the Authorization header must be `Bearer <credential>`".into(),
                        )
                    })?,
            ),
        };
        match (bearer, api_key_header) {
            (None, None) => Err(AuthError::Missing),
            (Some(_), Some(_)) => Err(AuthError::Ambiguous),
            (Some(b), None) if b.starts_with("aiq_") => self.api_key(b).await,
            (Some(token), None) => self.jwt.verify(token),
            (None, Some(k)) => self.api_key(k.trim()).await,
        }
    }

    async fn api_key(&self, plaintext: &str) -> Result<Principal, AuthError> {
        let (key_id, secret) = ApiKey::parse(plaintext).map_err(|_| AuthError::InvalidApiKey)?;
        let record = self
            .keys
            .find(&key_id)
            .await
            .map_err(AuthError::Store)?
            .ok_or(AuthError::InvalidApiKey)?;
        if record.revoked || !ApiKey::verify(&secret, &record) {
            return Err(AuthError::InvalidApiKey);
        }
        Ok(Principal {
            tenant: record.tenant,
            role: record.role,
            subject: format!("key:{}", record.key_id),
            via: CredentialKind::ApiKey,
        })
    }
}
