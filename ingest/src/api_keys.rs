//! API key records from the CQL store, for the authenticator.

use aiq_auth::{ApiKeyLookup, ApiKeyRecord, LookupFuture, Role};
use aiq_topics::TenantId;

use crate::registry::store::RegistryStore;

pub struct CqlApiKeys(pub RegistryStore);

impl ApiKeyLookup for CqlApiKeys {
    fn find<'a>(&'a self, key_id: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            let Some((key_id, tenant, role, hash, label, created_at, revoked)) = self
                .0
                .api_key_row(key_id)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Ok(None);
            };
            Ok(Some(ApiKeyRecord {
                key_id,
                tenant: TenantId::new(tenant).map_err(|e| e.to_string())?,
                role: role.parse::<Role>().map_err(|e| e.to_string())?,
                hash,
                created_at: u64::try_from(created_at.timestamp()).unwrap_or_default(),
                revoked,
                label: label.unwrap_or_default(),
            }))
        })
    }
}

/// Stores a newly generated key's record (the plaintext is shown once and never kept).
pub async fn store(
    store: &RegistryStore,
    r: &ApiKeyRecord,
) -> Result<(), crate::registry::store::StoreError> {
    let created =
        chrono::DateTime::from_timestamp(i64::try_from(r.created_at).unwrap_or_default(), 0)
            .unwrap_or_default();
    store
        .put_api_key_row(&(
            r.key_id.clone(),
            r.tenant.to_string(),
            r.role.to_string(),
            r.hash.clone(),
            Some(r.label.clone()),
            created,
            r.revoked,
        ))
        .await
}
