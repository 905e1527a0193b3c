//! The contract every AutomateIQ stage shares.
//!
//! Nothing here does I/O: these are the identifiers, the event payloads that travel over
//! Kafka, the declared topics with what their keys mean, and the partitioner that keeps
//! a tenant's topics co-partitioned. Stages depend on this crate, never on each other.

pub mod audit;
pub mod data_key;
pub mod dead_letter;
pub mod definition;
pub mod events;
pub mod ids;
pub mod labels;
pub mod notification;
pub mod partition;
pub mod queue;
pub mod signal;
pub mod size;
pub mod spec;
pub mod task;
pub mod tenant;
pub mod trace;
pub mod trigger;

pub use audit::{AuditAction, AuditEvent};
pub use data_key::{DataKeyId, DataKeyRecord, WrappedKey};
pub use dead_letter::DeadLetterKind;
pub use definition::{DefinitionRecord, DefinitionsEntry, WorkflowState};
pub use events::{Event, Failure, RunErased, RunEvent, RunStatus, StepEvent, StepStatus};
pub use ids::{IdError, RunId, StepId, TenantId, WorkflowId};
pub use labels::TenantLabels;
pub use notification::{Notification, NotifySpec, WebhookTarget};
pub use partition::partition_for_key;
pub use queue::QueueState;
pub use signal::{SignalAction, SignalEvent};
pub use size::json_size;
pub use spec::{CleanupPolicy, KeyKind, TopicKind, TopicSet, TopicSpec};
pub use task::{ErrorClass, TaskMessage, TaskOutcome, TaskResult};
pub use tenant::{IdentityProvider, Plan, TenantRecord, TenantState};
pub use trace::{
    PARENT_TRACEPARENT, SpanId, TRACEPARENT, TraceError, TraceId, TraceParent, Traced,
};
pub use trigger::{TRIGGER_SCHEMA_V1, TriggerError, TriggerEvent, TriggerSource};
