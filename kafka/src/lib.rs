//! Kafka plumbing shared by every stage: client settings (plaintext, TLS, SASL — enough
//! for Azure Event Hubs' Kafka endpoint by configuration alone) and topic administration.

pub mod admin;
pub mod dead_letter;
pub mod lag;
pub mod settings;
pub mod tail;
pub mod transactions;

pub use admin::{TopicAction, TopicReport, apply_topics, check_partitions};
pub use dead_letter::{DeadLetterOrigin, ReadOrigin, read_origin};
pub use settings::{Isolation, KafkaError, KafkaSettings, SecurityProtocol};
pub use tail::{Tail, TailRecord, TailSync, tail_topic};
pub use transactions::{commit_promptly, flush_promptly};
