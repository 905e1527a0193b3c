//! The trigger event: the one record an outside producer may write straight to the
//! triggers topic. Documented by `schemas/trigger.v1.json`; the key is the tenant id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{RunId, TenantId, WorkflowId};

/// The value of the `schema` field of a version-1 trigger.
pub const TRIGGER_SCHEMA_V1: &str = "aiq.trigger.v1";

/// Where a trigger came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerSource {
    Api,
    Manual,
    Webhook,
    Cron,
    Kafka,
    SubWorkflow,
}

/// A request to start one run of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerEvent {
    /// Always [`TRIGGER_SCHEMA_V1`]; a later version gets a new tag, never a silent change.
    pub schema: String,
    pub tenant: TenantId,
    pub workflow: WorkflowId,
    /// A registered version number; the newest version when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Set by ingest; an outside producer may leave it out (see [`TriggerEvent::run_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    /// Retrying producers set this so that a repeat starts no second run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub source: TriggerSource,
    #[serde(default)]
    pub input: Value,
    /// When the event happened; for cron runs, the scheduled tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Set by the orchestrator on a sub-workflow's trigger: the run told when this ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run: Option<RunId>,
}

/// Why a record on the triggers topic is not a trigger. The message names the field.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// Not JSON, or JSON that is not an object: not a trigger at all.
    #[error("trigger is not valid JSON for schema {TRIGGER_SCHEMA_V1}: at `{path}`: {reason}")]
    Decode { path: String, reason: String },
    /// A JSON object that lacks a field the schema requires.
    #[error("trigger field `{field}` is missing; schema {TRIGGER_SCHEMA_V1} requires it")]
    MissingField { field: String },
    /// A JSON object with a field of the wrong type or value, or one the schema does not
    /// have.
    #[error("trigger field `{field}` is invalid for schema {TRIGGER_SCHEMA_V1}: {reason}")]
    BadField { field: String, reason: String },
    #[error("trigger field `schema` is {found:?}; expected {TRIGGER_SCHEMA_V1:?}")]
    UnknownSchema { found: String },
    #[error(
        "record key {key:?} does not name the trigger's tenant {tenant:?}; key must be the tenant id"
    )]
    KeyMismatch { key: String, tenant: String },
    #[error("trigger field `idempotency_key` must be 1 to {max} characters, got {len}")]
    BadIdempotencyKey { len: usize, max: usize },
}

impl TriggerEvent {
    pub const MAX_IDEMPOTENCY_KEY: usize = 256;

    pub fn new(
        tenant: TenantId,
        workflow: WorkflowId,
        source: TriggerSource,
        input: Value,
    ) -> Self {
        Self {
            schema: TRIGGER_SCHEMA_V1.to_owned(),
            tenant,
            workflow,
            version: None,
            run_id: None,
            idempotency_key: None,
            source,
            input,
            occurred_at: None,
            parent_run: None,
        }
    }

    /// Decodes and checks a record from the triggers topic. `key` is the record key; a
    /// tenant may be spread by sub-key, so `tenant#shard` is accepted for `tenant`.
    pub fn decode(key: Option<&[u8]>, payload: &[u8]) -> Result<Self, TriggerError> {
        let de = &mut serde_json::Deserializer::from_slice(payload);
        let event: TriggerEvent =
            serde_path_to_error::deserialize(de).map_err(|e| shape_error(payload, e))?;
        if event.schema != TRIGGER_SCHEMA_V1 {
            return Err(TriggerError::UnknownSchema {
                found: event.schema,
            });
        }
        if let Some(k) = &event.idempotency_key {
            let len = k.chars().count();
            if len == 0 || len > Self::MAX_IDEMPOTENCY_KEY {
                return Err(TriggerError::BadIdempotencyKey {
                    len,
                    max: Self::MAX_IDEMPOTENCY_KEY,
                });
            }
        }
        let key = key.map(String::from_utf8_lossy).unwrap_or_default();
        let tenant_part = key.split_once('#').map_or(&*key, |(t, _)| t);
        if tenant_part != event.tenant.as_str() {
            return Err(TriggerError::KeyMismatch {
                key: key.into_owned(),
                tenant: event.tenant.to_string(),
            });
        }
        Ok(event)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising these plain fields cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("trigger encodes: {e}"))
    }

    /// The run this trigger starts. Deterministic, so that replaying the topic names the
    /// same runs: the given id, else one derived from the idempotency key, else one
    /// derived from the record's position in the log.
    pub fn run_id(&self, partition: i32, offset: i64) -> RunId {
        if let Some(id) = self.run_id {
            return id;
        }
        let key = match &self.idempotency_key {
            Some(k) => k.clone(),
            None => format!("log:{partition}:{offset}"),
        };
        RunId::from_idempotency_key(&self.tenant, &self.workflow, &key)
    }
}

/// Sorts a decoding failure: JSON that is not an object is not a trigger at all
/// ([`TriggerError::Decode`], dead-lettered as undecodable); an object that breaks the
/// schema names the field (dead-lettered as invalid).
fn shape_error(payload: &[u8], e: serde_path_to_error::Error<serde_json::Error>) -> TriggerError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let is_object = inner.classify() == serde_json::error::Category::Data
        && serde_json::from_slice::<Value>(payload).is_ok_and(|v| v.is_object());
    let reason = inner.to_string();
    if !is_object {
        return TriggerError::Decode { path, reason };
    }
    // serde_json appends " at line L column C"; the field names the place instead.
    let reason = match reason.rfind(" at line ") {
        Some(i) => reason[..i].to_owned(),
        None => reason,
    };
    // A missing or unknown top-level field is reported at the object itself ("."); its
    // name is the first `quoted` word of the message.
    let named = || reason.split('`').nth(1).map(str::to_owned);
    match (path.as_str(), reason.strip_prefix("missing field ")) {
        (".", Some(_)) => TriggerError::MissingField {
            field: named().unwrap_or_default(),
        },
        (".", None) => TriggerError::BadField {
            field: named().unwrap_or_else(|| ".".to_owned()),
            reason,
        },
        _ => TriggerError::BadField {
            field: path,
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Vec<u8> {
        json!({
            "schema": "aiq.trigger.v1",
            "tenant": "acme",
            "workflow": "order-sync",
            "source": "kafka",
            "input": {"order": 42}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn decodes_an_outside_producers_trigger() {
        let t = TriggerEvent::decode(Some(b"acme"), &sample()).unwrap();
        assert_eq!(t.tenant.as_str(), "acme");
        assert_eq!(t.input, json!({"order": 42}));
        assert_eq!(t.run_id(3, 17), t.run_id(3, 17));
        assert_ne!(t.run_id(3, 17), t.run_id(3, 18));
        assert!(TriggerEvent::decode(Some(b"acme#2"), &sample()).is_ok());
    }

    #[test]
    fn errors_name_the_field_and_the_reason() {
        let bad_tenant =
            br#"{"schema":"aiq.trigger.v1","tenant":"ACME","workflow":"w","source":"api"}"#;
        let e = TriggerEvent::decode(Some(b"ACME"), bad_tenant)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "trigger field `tenant` is invalid for schema aiq.trigger.v1: tenant id \"ACME\""
            ),
            "{e}"
        );

        let bad_source =
            br#"{"schema":"aiq.trigger.v1","tenant":"a","workflow":"w","source":"fax"}"#;
        let e = TriggerEvent::decode(Some(b"a"), bad_source)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "trigger field `source` is invalid for schema aiq.trigger.v1: unknown variant `fax`"
            ),
            "{e}"
        );

        let extra = br#"{"schema":"aiq.trigger.v1","tenant":"a","workflow":"w","source":"api","tenantt":1}"#;
        let e = TriggerEvent::decode(Some(b"a"), extra)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("trigger field `tenantt` is invalid for schema aiq.trigger.v1: unknown field `tenantt`"),
            "{e}"
        );

        let e = TriggerEvent::decode(Some(b"other"), &sample())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "record key \"other\" does not name the trigger's tenant \"acme\"; key must be the tenant id"
        );

        let v2 = br#"{"schema":"aiq.trigger.v2","tenant":"a","workflow":"w","source":"api"}"#;
        assert!(matches!(
            TriggerEvent::decode(Some(b"a"), v2),
            Err(TriggerError::UnknownSchema { .. })
        ));
    }

    #[test]
    fn json_that_is_not_an_object_is_undecodable_and_a_bad_object_names_its_field() {
        for raw in [
            &b"not json"[..],
            b"{\"schema\": ",
            b"42",
            b"[1, 2]",
            b"\"acme\"",
            b"null",
        ] {
            let e = TriggerEvent::decode(Some(b"acme"), raw).unwrap_err();
            assert!(matches!(e, TriggerError::Decode { .. }), "{raw:?}: {e:?}");
            assert!(
                e.to_string().starts_with("trigger is not valid JSON"),
                "{e}"
            );
        }
        for field in ["schema", "tenant", "workflow", "source"] {
            let mut v = serde_json::from_slice::<Value>(&sample()).unwrap();
            v.as_object_mut().unwrap().remove(field);
            let e = TriggerEvent::decode(Some(b"acme"), v.to_string().as_bytes()).unwrap_err();
            assert!(
                matches!(&e, TriggerError::MissingField { field: f } if f == field),
                "{e:?}"
            );
            assert_eq!(
                e.to_string(),
                format!("trigger field `{field}` is missing; schema aiq.trigger.v1 requires it")
            );
        }
        let wrong_type = br#"{"schema":"aiq.trigger.v1","tenant":"a","workflow":"w","source":"api","version":"two"}"#;
        let e = TriggerEvent::decode(Some(b"a"), wrong_type).unwrap_err();
        assert!(
            matches!(&e, TriggerError::BadField { field, .. } if field == "version"),
            "{e:?}"
        );
        assert!(!e.to_string().contains(" at line "), "{e}");
    }

    #[test]
    fn encode_then_decode_is_identity() {
        let mut t = TriggerEvent::new(
            TenantId::new("t1").unwrap(),
            WorkflowId::new("w").unwrap(),
            TriggerSource::Api,
            json!([1, 2]),
        );
        t.idempotency_key = Some("abc".into());
        t.run_id = Some(RunId::random());
        assert_eq!(TriggerEvent::decode(Some(b"t1"), &t.encode()).unwrap(), t);
    }

    #[test]
    fn the_published_example_is_a_valid_trigger() {
        let example = include_str!("../schemas/trigger.example.json");
        let t = TriggerEvent::decode(Some(b"acme"), example.as_bytes()).unwrap();
        assert_eq!(t.workflow.as_str(), "order-sync");
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;

    fn validator() -> jsonschema::Validator {
        let schema: Value =
            serde_json::from_str(include_str!("../schemas/trigger.v1.json")).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    }

    #[test]
    fn the_json_schema_accepts_what_the_code_writes_and_the_example() {
        let v = validator();
        let example: Value =
            serde_json::from_str(include_str!("../schemas/trigger.example.json")).unwrap();
        assert!(v.is_valid(&example));
        let mut t = TriggerEvent::new(
            TenantId::new("t-1").unwrap(),
            WorkflowId::new("w.1").unwrap(),
            TriggerSource::Cron,
            serde_json::json!({"a": 1}),
        );
        t.version = Some(2);
        t.run_id = Some(RunId::random());
        t.occurred_at = Some(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap());
        assert!(v.is_valid(&serde_json::to_value(&t).unwrap()));
    }

    #[test]
    fn the_json_schema_and_the_decoder_refuse_the_same_bad_records() {
        let v = validator();
        let bad = [
            r#"{"schema":"aiq.trigger.v1","tenant":"Acme","workflow":"w","source":"api"}"#,
            r#"{"schema":"aiq.trigger.v1","tenant":"a","workflow":"w","source":"fax"}"#,
            r#"{"schema":"aiq.trigger.v1","tenant":"a","workflow":"w"}"#,
            r#"{"schema":"aiq.trigger.v1","tenant":"a","workflow":"w","source":"api","extra":1}"#,
            r#"{"schema":"aiq.trigger.v9","tenant":"a","workflow":"w","source":"api"}"#,
            r#"{"schema":"aiq.trigger.v1","tenant":"a","workflow":"w","source":"api","idempotency_key":""}"#,
        ];
        for raw in bad {
            let value: Value = serde_json::from_str(raw).unwrap();
            assert!(!v.is_valid(&value), "schema accepted {raw}");
            assert!(
                TriggerEvent::decode(Some(b"a"), raw.as_bytes()).is_err(),
                "decoder accepted {raw}"
            );
        }
    }
}
