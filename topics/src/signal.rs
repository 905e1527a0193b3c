//! Records of the signals topic (key = tenant): a named event for a run waiting on one,
//! or a request to cancel or redrive a run. Ingest writes them; the orchestrator owning the
//! tenant applies them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{RunId, TenantId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalEvent {
    pub tenant: TenantId,
    pub run: RunId,
    #[serde(flatten)]
    pub action: SignalAction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SignalAction {
    /// Delivered to a `wait_for_event` step of that name (and correlation), or kept
    /// until the run reaches one.
    Signal {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation: Option<String>,
        #[serde(default)]
        payload: Value,
    },
    Cancel {
        reason: String,
    },
    /// Resume the run that failed (or timed out) at `failed_at` from its failed step.
    Redrive {
        failed_at: chrono::DateTime<chrono::Utc>,
    },
    /// Cancel every run of the tenant in flight or waiting in its queue (a suspension
    /// that cancels). `run` then names the request, not a run.
    CancelTenant {
        reason: String,
    },
    /// The ended run's payloads were erased: the orchestrator drops the state it keeps
    /// of it for redrive (which holds its input and step outputs).
    Erase,
}

impl SignalEvent {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("signal encodes: {e}"))
    }

    /// Decodes a record; the error names the field.
    pub fn decode(payload: &[u8]) -> Result<Self, String> {
        let de = &mut serde_json::Deserializer::from_slice(payload);
        serde_path_to_error::deserialize(de)
            .map_err(|e| format!("signal is not valid: at `{}`: {}", e.path(), e.inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signals_and_cancels_round_trip_with_a_type_tag() {
        let run = RunId::from_idempotency_key(
            &TenantId::new("acme").unwrap(),
            &crate::WorkflowId::new("w").unwrap(),
            "k",
        );
        let s = SignalEvent {
            tenant: TenantId::new("acme").unwrap(),
            run,
            action: SignalAction::Signal {
                name: "approved".into(),
                correlation: Some("order-1".into()),
                payload: json!({"by": "ann"}),
            },
        };
        let v: Value = serde_json::from_slice(&s.encode()).unwrap();
        assert_eq!(v["type"], "signal");
        assert_eq!(v["name"], "approved");
        assert_eq!(SignalEvent::decode(&s.encode()).unwrap(), s);
        let e = SignalEvent::decode(br#"{"tenant":"acme","run":"x","type":"cancel"}"#).unwrap_err();
        assert!(e.contains("at `run`"), "{e}");
    }
}
