//! Where the orchestrator meets the tenants' data keys: inputs are opened before the
//! core sees them, outputs sealed before they are produced, and changelog entries sealed
//! whole. The core works on clear values and never sees a key.

use std::borrow::Cow;

use aiq_topics::{Event, Failure, TenantId};
use aiq_vault::{SEALED_FIELD, Vault, VaultError};
use serde_json::Value;

use crate::core::Output;

/// The purpose a changelog entry is sealed under.
pub(super) const CHANGELOG: &str = "changelog";

/// What became of an input record's payload.
pub(super) enum Opened<'a> {
    /// Nothing sealed in it, or opened: hand this to the core.
    Ready(Cow<'a, [u8]>),
    /// Its tenant's data was erased: the record is skipped.
    Erased,
    /// It does not open: the record goes to the dead letters with this reason.
    Unreadable(String),
}

/// The tenant a record key names (`tenant`, `tenant#shard` or `tenant/...`).
pub(super) fn tenant_of_key(key: &[u8]) -> Option<TenantId> {
    let key = std::str::from_utf8(key).ok()?;
    let end = key.find(['#', '/']).unwrap_or(key.len());
    TenantId::new(&key[..end]).ok()
}

/// Opens an input's sealed values. Payloads with nothing sealed are not parsed.
pub(super) fn open_input<'a>(
    vault: &Vault,
    erased: impl Fn(&TenantId) -> bool,
    key: Option<&[u8]>,
    payload: &'a [u8],
) -> Opened<'a> {
    if !contains(payload, SEALED_FIELD.as_bytes()) {
        return Opened::Ready(Cow::Borrowed(payload));
    }
    // The core sets aside a record without a valid key or JSON payload itself.
    let Some(tenant) = key.and_then(tenant_of_key) else {
        return Opened::Ready(Cow::Borrowed(payload));
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(payload) else {
        return Opened::Ready(Cow::Borrowed(payload));
    };
    match vault.open_tree(&tenant, &mut value) {
        Ok(_) => Opened::Ready(Cow::Owned(
            serde_json::to_vec(&value).unwrap_or_else(|e| unreachable!("JSON encodes: {e}")),
        )),
        Err(_) if erased(&tenant) => Opened::Erased,
        Err(e) => Opened::Unreadable(e.to_string()),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Seals one field, or empties it when the tenant's keys are destroyed (erased).
fn seal(vault: &Vault, tenant: &TenantId, field: &str, v: &mut Value) -> Result<(), VaultError> {
    match vault.seal(tenant, field, v) {
        Ok(s) => *v = s,
        Err(VaultError::Erased { .. }) => *v = Value::Null,
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Seals an error's message (a connector's can quote a URL or a response, a fail
/// step's is a template over the run's data); emptied when the tenant was erased.
fn seal_message(vault: &Vault, tenant: &TenantId, f: &mut Failure) -> Result<(), VaultError> {
    match vault.seal_text(tenant, "message", &f.message) {
        Ok(s) => f.message = s,
        Err(VaultError::Erased { .. }) => f.message.clear(),
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Seals the payload fields of an output: a task's arguments, a run's input, output and
/// error message, a step's error message, a notification's error message, a trigger's
/// input. Makes the tenant's key first if it has none.
pub(super) fn seal_output(vault: &Vault, out: &mut Output) -> Result<(), VaultError> {
    if !vault.is_on() {
        return Ok(());
    }
    match out {
        Output::Task(t) => {
            ensure(vault, &t.tenant)?;
            seal(vault, &t.tenant, "args", &mut t.args)
        }
        Output::Event(Event::Run(e)) => {
            if e.input.is_none() && e.output.is_none() && e.error.is_none() {
                return Ok(());
            }
            ensure(vault, &e.tenant)?;
            for (field, v) in [("input", &mut e.input), ("output", &mut e.output)] {
                if let Some(v) = v {
                    seal(vault, &e.tenant, field, v)?;
                }
            }
            match &mut e.error {
                Some(f) => seal_message(vault, &e.tenant, f),
                None => Ok(()),
            }
        }
        Output::Event(Event::Step(e)) => match &mut e.error {
            Some(f) => {
                ensure(vault, &e.tenant)?;
                seal_message(vault, &e.tenant, f)
            }
            None => Ok(()),
        },
        Output::Event(Event::RunErased(_)) => Ok(()),
        Output::Notification(n) => match &mut n.error {
            Some(f) => {
                ensure(vault, &n.tenant)?;
                seal_message(vault, &n.tenant, f)
            }
            None => Ok(()),
        },
        Output::Trigger { trigger, .. } => {
            ensure(vault, &trigger.tenant)?;
            seal(vault, &trigger.tenant, "input", &mut trigger.input)
        }
        // No payloads: audit, queue state; a dead letter keeps the input's bytes as
        // they came (sealed where they were).
        Output::Audit(_) | Output::QueueState(_) | Output::DeadLetter(_) => Ok(()),
    }
}

fn ensure(vault: &Vault, tenant: &TenantId) -> Result<(), VaultError> {
    match vault.ensure_blocking(tenant) {
        // Sealing empties the field instead.
        Err(VaultError::Erased { .. }) => Ok(()),
        other => other,
    }
}

/// A changelog entry sealed whole under its tenant's key (the key is `tenant/...`);
/// an entry of an erased tenant is written empty.
pub(super) fn seal_entry(
    vault: &Vault,
    key: &str,
    value: Vec<u8>,
) -> Result<Option<Vec<u8>>, VaultError> {
    let Some(tenant) = tenant_of_key(key.as_bytes()) else {
        return Ok(Some(value));
    };
    if !vault.is_on() {
        return Ok(Some(value));
    }
    ensure(vault, &tenant)?;
    match vault.seal_bytes(&tenant, CHANGELOG, value) {
        Ok(v) => Ok(Some(v)),
        Err(VaultError::NoKey { .. }) if !vault.has_key(&tenant) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A restored changelog entry opened; `None` when its tenant's keys are gone (the
/// entry is then read as deleted).
pub(super) fn open_entry(vault: &Vault, key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
    let Some(tenant) = tenant_of_key(key) else {
        return Some(value.to_vec());
    };
    match vault.open_bytes(&tenant, CHANGELOG, value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(%tenant, error = %e, "a changelog entry does not open; read as deleted");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiq_vault::KeyTable;
    use serde_json::json;

    fn vault() -> (std::sync::Arc<Vault>, TenantId) {
        let acme = TenantId::new("acme").unwrap();
        let mut t = KeyTable::default();
        t.insert(
            &acme,
            aiq_topics::DataKeyId::random(),
            chrono::Utc::now(),
            &[3; 32],
        );
        (Vault::in_memory(t), acme)
    }

    #[test]
    fn an_input_opens_and_a_clear_one_is_not_parsed() {
        let (v, acme) = vault();
        let sealed = v.seal(&acme, "input", &json!({"x": "canary"})).unwrap();
        let rec = serde_json::to_vec(&json!({"tenant": "acme", "input": sealed})).unwrap();
        let Opened::Ready(out) = open_input(&v, |_| false, Some(b"acme"), &rec) else {
            panic!("did not open")
        };
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["input"], json!({"x": "canary"}));
        let clear = br#"{"input":{"x":1}}"#;
        assert!(matches!(
            open_input(&v, |_| false, Some(b"acme"), clear),
            Opened::Ready(Cow::Borrowed(_))
        ));
        // Another tenant's key names this record: it does not open.
        assert!(matches!(
            open_input(&v, |_| false, Some(b"zeta#2"), &rec),
            Opened::Unreadable(_)
        ));
        assert!(matches!(
            open_input(&v, |_| true, Some(b"zeta"), &rec),
            Opened::Erased
        ));
    }

    #[test]
    fn a_changelog_entry_round_trips_and_is_not_clear() {
        let (v, _) = vault();
        let sealed = seal_entry(&v, "acme/run/1", b"state canary".to_vec())
            .unwrap()
            .unwrap();
        assert!(!contains(&sealed, b"canary"));
        assert_eq!(
            open_entry(&v, b"acme/run/1", &sealed).as_deref(),
            Some(&b"state canary"[..])
        );
        assert_eq!(open_entry(&v, b"zeta/run/1", &sealed), None);
    }

    #[test]
    fn tenant_keys_are_read_from_every_key_shape() {
        for k in ["acme", "acme#3", "acme/run/1"] {
            assert_eq!(tenant_of_key(k.as_bytes()).unwrap().as_str(), "acme");
        }
        assert!(tenant_of_key(b"").is_none());
    }
}
