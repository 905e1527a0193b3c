//! How a stage sets a record aside: the dead-letter topic gets the original key, bytes
//! and headers, plus headers that say where the record came from and why it failed.

use serde::Serialize;

/// Why a record went to the dead-letter topic; the short code is the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterKind {
    /// Not JSON, or not the record type the topic carries.
    Undecodable,
    /// Decodes, but a field breaks a rule (schema tag, key mismatch, ...).
    Invalid,
    /// Names a workflow (or version) that is not registered.
    UnknownWorkflow,
    /// The input does not match the workflow's input schema.
    InvalidInput,
    /// A signal or cancel for a run that is not in flight.
    UnknownRun,
    /// A run's state could not be used (a definition version that vanished, ...).
    Internal,
    /// An output the producer refused for good (past Kafka's record size, ...): only
    /// its key and these headers are kept.
    TooLarge,
    /// A trigger for a tenant whose queue of waiting runs is full (`max_queued_runs`).
    QueueFull,
    /// A trigger for a suspended tenant, from a source other than ingest (which
    /// refuses it with 403).
    TenantSuspended,
    /// A sealed payload that does not open: altered, or sealed under a data key this
    /// deployment does not hold.
    Unreadable,
}

impl DeadLetterKind {
    pub const ALL: [DeadLetterKind; 10] = [
        DeadLetterKind::Undecodable,
        DeadLetterKind::Invalid,
        DeadLetterKind::UnknownWorkflow,
        DeadLetterKind::InvalidInput,
        DeadLetterKind::UnknownRun,
        DeadLetterKind::Internal,
        DeadLetterKind::TooLarge,
        DeadLetterKind::QueueFull,
        DeadLetterKind::TenantSuspended,
        DeadLetterKind::Unreadable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::Undecodable => "undecodable",
            DeadLetterKind::Invalid => "invalid",
            DeadLetterKind::UnknownWorkflow => "unknown_workflow",
            DeadLetterKind::InvalidInput => "invalid_input",
            DeadLetterKind::UnknownRun => "unknown_run",
            DeadLetterKind::Internal => "internal",
            DeadLetterKind::TooLarge => "too_large",
            DeadLetterKind::QueueFull => "queue_full",
            DeadLetterKind::TenantSuspended => "tenant_suspended",
            DeadLetterKind::Unreadable => "unreadable",
        }
    }
}

/// Header names on dead-letter records (the original headers are kept as they were).
pub mod headers {
    /// Every dead-letter header's name starts so; a replay takes them all out.
    pub const PREFIX: &str = "aiq-dlq-";
    /// [`super::DeadLetterKind`] as its short code.
    pub const KIND: &str = "aiq-dlq-kind";
    /// A sentence naming the field and the reason.
    pub const REASON: &str = "aiq-dlq-reason";
    /// The stage that set the record aside (`orchestrator`, `worker`, `sink`).
    pub const STAGE: &str = "aiq-dlq-stage";
    pub const TOPIC: &str = "aiq-dlq-topic";
    pub const PARTITION: &str = "aiq-dlq-partition";
    pub const OFFSET: &str = "aiq-dlq-offset";
}

/// The tenant a failed record belongs to, from its key (`tenant`, `tenant#shard` or
/// `tenant/...`, as every topic is keyed) and, when the value is a JSON object with a
/// `tenant` field, that field too: both must agree, or the record is the platform's
/// alone (an outside producer may write a key that names another tenant).
pub fn tenant_of(key: Option<&[u8]>, value: Option<&[u8]>) -> Option<crate::TenantId> {
    let key = std::str::from_utf8(key?).ok()?;
    let end = key.find(['/', '#']).unwrap_or(key.len());
    let tenant = crate::TenantId::new(&key[..end]).ok()?;
    let named = value
        .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
        .and_then(|v| v.get("tenant").and_then(|t| t.as_str().map(str::to_owned)));
    match named {
        Some(t) if t != tenant.as_str() => None,
        _ => Some(tenant),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letters_tenant_comes_from_its_key_and_must_agree_with_its_value() {
        let t = |k: &str, v: &str| {
            tenant_of(Some(k.as_bytes()), Some(v.as_bytes())).map(|t| t.as_str().to_owned())
        };
        assert_eq!(t("acme", "not json").as_deref(), Some("acme"));
        assert_eq!(t("acme#3", "{}").as_deref(), Some("acme"));
        assert_eq!(
            t("acme/run-1", r#"{"tenant":"acme"}"#).as_deref(),
            Some("acme")
        );
        assert_eq!(t("acme", r#"{"tenant":"globex"}"#), None);
        assert_eq!(t("not a tenant!", "{}"), None);
        assert_eq!(tenant_of(None, Some(b"{}")), None);
    }

    #[test]
    fn codes_are_snake_case_and_match_serde() {
        for k in DeadLetterKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}
