//! What can end the orchestrator stage, and what a failed Kafka transaction call asks
//! the runner to do.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// A tenant's data key could not be made or read (the data-keys topic away): the
    /// batch is redone.
    #[error("data keys: {0}")]
    Vault(#[from] aiq_vault::VaultError),
    #[error("Kafka: {op}: {source}")]
    Kafka {
        op: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error(
        "restoring changelog partitions {partitions:?} did not reach their end within {waited:?} \
         (a crashed instance's transaction stays open until the broker times it out): {detail}"
    )]
    RestoreTimeout {
        partitions: Vec<i32>,
        waited: Duration,
        detail: String,
    },
    #[error("the consumer has no group metadata to commit offsets with")]
    NoGroupMetadata,
    #[error(
        "a record of {topic} partition {partition} (offset {offset}) arrived, but this instance \
         does not own that partition: its assignment and its state disagree, and going on \
         could apply inputs to a state another instance owns"
    )]
    NotOwned {
        topic: String,
        partition: i32,
        offset: i64,
    },
    #[error(
        "fenced: another orchestrator with instance id {instance_id:?} (transactional id \
         {transactional_id:?}) took over its partitions; this one stops. Two running \
         instances must not share an instance id ({source})"
    )]
    Fenced {
        instance_id: Box<str>,
        transactional_id: Box<str>,
        #[source]
        source: KafkaError,
    },
    #[error("cannot start the orchestrator thread: {0}")]
    Thread(std::io::Error),
}

/// What to do after a failed call, the way librdkafka documents transactional errors:
/// retriable → the same call again; abortable → abort and redo the batch; fatal → the
/// producer is unusable, so a new one (unless a newer instance fenced this one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnAction {
    /// Call again; the transaction is still open and still good.
    Retry,
    /// Abort the transaction and redo the batch from the committed offsets and state.
    Abort,
    /// The producer is dead: create a new one, `init_transactions`, restore.
    Recreate,
    /// Fenced by a producer with the same transactional id: a newer instance, or the
    /// coordinator after this transaction outlived `transaction.timeout.ms`.
    Fenced,
    /// Not a Kafka error a new transaction can cure.
    Stop,
}

/// The flags librdkafka attaches to a transactional error (`rd_kafka_error_is_fatal`,
/// `_txn_requires_abort`, `_is_retriable`) and its code; a plain struct so that the
/// classification is tested without a broker (an `RDKafkaError` cannot be built).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnErrorFlags {
    pub code: RDKafkaErrorCode,
    pub fatal: bool,
    pub requires_abort: bool,
    pub retriable: bool,
}

/// The documented order: fatal first (a fatal error may carry the other flags too),
/// then abortable, then retriable; anything else "treat as fatal" (librdkafka's
/// transactions example), i.e. a new producer.
pub fn classify(flags: TxnErrorFlags) -> TxnAction {
    if flags.fatal {
        if matches!(
            flags.code,
            RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced
        ) {
            TxnAction::Fenced
        } else {
            TxnAction::Recreate
        }
    } else if flags.requires_abort {
        TxnAction::Abort
    } else if flags.retriable {
        TxnAction::Retry
    } else {
        TxnAction::Recreate
    }
}

impl OrchestratorError {
    pub(crate) fn kafka(op: &'static str, source: KafkaError) -> Self {
        Self::Kafka { op, source }
    }

    /// What the runner does about this error.
    pub fn txn_action(&self) -> TxnAction {
        match self {
            Self::Kafka {
                source: KafkaError::Transaction(e),
                ..
            } => classify(TxnErrorFlags {
                code: e.code(),
                fatal: e.is_fatal(),
                requires_abort: e.txn_requires_abort(),
                retriable: e.is_retriable(),
            }),
            // Producing a record and other client calls inside a batch: the batch is
            // redone from the committed state, as a new transaction.
            Self::Kafka { .. } | Self::Vault(_) => TxnAction::Abort,
            _ => TxnAction::Stop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(code: RDKafkaErrorCode, fatal: bool, abort: bool, retry: bool) -> TxnErrorFlags {
        TxnErrorFlags {
            code,
            fatal,
            requires_abort: abort,
            retriable: retry,
        }
    }

    #[test]
    fn a_retriable_timeout_is_retried_not_aborted() {
        let t = flags(RDKafkaErrorCode::OperationTimedOut, false, false, true);
        assert_eq!(classify(t), TxnAction::Retry);
        let t = flags(
            RDKafkaErrorCode::CoordinatorLoadInProgress,
            false,
            false,
            true,
        );
        assert_eq!(classify(t), TxnAction::Retry);
    }

    #[test]
    fn an_abortable_error_aborts_even_when_also_retriable() {
        let e = flags(RDKafkaErrorCode::InvalidProducerEpoch, false, true, false);
        assert_eq!(classify(e), TxnAction::Abort);
        let e = flags(RDKafkaErrorCode::MessageTimedOut, false, true, true);
        assert_eq!(classify(e), TxnAction::Abort);
    }

    #[test]
    fn fatal_wins_over_the_other_flags_and_fencing_is_told_apart() {
        let f = flags(RDKafkaErrorCode::Fenced, true, true, true);
        assert_eq!(classify(f), TxnAction::Fenced);
        let f = flags(RDKafkaErrorCode::ProducerFenced, true, false, false);
        assert_eq!(classify(f), TxnAction::Fenced);
        let f = flags(
            RDKafkaErrorCode::InvalidTransactionalState,
            true,
            false,
            true,
        );
        assert_eq!(classify(f), TxnAction::Recreate);
    }

    #[test]
    fn an_error_with_no_flag_is_treated_as_fatal() {
        let e = flags(RDKafkaErrorCode::State, false, false, false);
        assert_eq!(classify(e), TxnAction::Recreate);
    }

    #[test]
    fn non_transaction_errors_abort_the_batch_and_others_stop_the_stage() {
        let produce = OrchestratorError::kafka(
            "produce",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        assert_eq!(produce.txn_action(), TxnAction::Abort);
        assert_eq!(
            OrchestratorError::NoGroupMetadata.txn_action(),
            TxnAction::Stop
        );
    }

    #[test]
    fn a_record_of_a_partition_not_owned_stops_the_stage_and_says_where_it_was() {
        let e = OrchestratorError::NotOwned {
            topic: "aiq.signals".into(),
            partition: 7,
            offset: 42,
        };
        assert_eq!(e.txn_action(), TxnAction::Stop);
        let text = e.to_string();
        assert!(
            text.contains("aiq.signals partition 7 (offset 42)"),
            "{text}"
        );
    }
}
