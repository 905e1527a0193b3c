//! The metrics themselves, one module per stage. `ops/README.md` documents each one;
//! `tests/reference.rs` keeps that list and this one equal.
//!
//! Label order matters: it is the order `with_label_values` takes, and the registration
//! helpers refuse a call site that names other labels or the same in another order.

/// Defines a stage's metrics and its `ALL`, so that a metric cannot be defined without
/// being listed (and so checked and documented).
macro_rules! metrics {
    ($($(#[$attr:meta])* $id:ident = $def:expr;)*) => {
        $($(#[$attr])* pub const $id: Metric = $def;)*

        /// Every metric of this stage, in declaration order.
        pub const ALL: &[&Metric] = &[$(&$id),*];
    };
}

/// The trigger API, webhooks and the workflow registry.
pub mod ingest {
    use crate::{Kind, Metric};

    metrics! {
        TRIGGERS = Metric {
            name: "aiq_ingest_triggers_total",
            kind: Kind::Counter,
            labels: &["tenant", "outcome"],
            help: "Run starts by API or by hand, by tenant and outcome (webhook starts: aiq_ingest_webhooks_total)",
        };
        REGISTRATIONS = Metric {
            name: "aiq_ingest_registrations_total",
            kind: Kind::Counter,
            labels: &["tenant", "outcome"],
            help: "Workflow registrations by tenant and outcome",
        };
        WEBHOOKS = Metric {
            name: "aiq_ingest_webhooks_total",
            kind: Kind::Counter,
            labels: &["tenant", "outcome"],
            help: "Webhook deliveries by tenant and outcome",
        };
        TRIGGER_ACCEPT_SECONDS = Metric {
            name: "aiq_ingest_trigger_accept_seconds",
            kind: Kind::Histogram,
            labels: &["tenant"],
            help: "Time from a run-start request to Kafka's acknowledgement",
        };
    }
}

/// Runs' state machines: transactions, run and step events, quotas, cron.
pub mod orchestrator {
    use crate::{Kind, Metric};

    metrics! {
        COMMIT_SECONDS = Metric {
            name: "aiq_orchestrator_commit_seconds",
            kind: Kind::Histogram,
            labels: &[],
            help: "Time to write a batch's changelog and offsets and commit its transaction",
        };
        COMMIT_PHASE_SECONDS = Metric {
            name: "aiq_orchestrator_commit_phase_seconds",
            kind: Kind::Histogram,
            labels: &["phase"],
            help: "Time of each part of a commit: acks (waiting for the batch's records to be acknowledged), offsets (sending the input offsets), end (the commit call)",
        };
        TRANSACTION_SECONDS = Metric {
            name: "aiq_orchestrator_transaction_seconds",
            kind: Kind::Histogram,
            labels: &[],
            help: "Time from a batch's first work (its transaction's begin) to its commit",
        };
        BATCH_RECORDS = Metric {
            name: "aiq_orchestrator_batch_records",
            kind: Kind::Histogram,
            labels: &[],
            help: "Input records per committed transaction",
        };
        RESTORE_SECONDS = Metric {
            name: "aiq_orchestrator_restore_seconds",
            kind: Kind::Histogram,
            labels: &[],
            help: "Time to restore assigned partitions from the changelog",
        };
        REBALANCE_KEPT = Metric {
            name: "aiq_orchestrator_rebalance_kept_total",
            kind: Kind::Counter,
            labels: &[],
            help: "Partitions assigned back after a rebalance whose state was kept, not restored",
        };
        REBALANCE_RESTORED = Metric {
            name: "aiq_orchestrator_rebalance_restored_total",
            kind: Kind::Counter,
            labels: &[],
            help: "Partitions assigned by a rebalance and restored from the changelog",
        };
        FINISHED_MARKERS = Metric {
            name: "aiq_orchestrator_finished_markers",
            kind: Kind::Gauge,
            labels: &[],
            help: "Finished runs remembered to recognise late duplicates, on this instance",
        };
        CRON_LAG_SECONDS = Metric {
            name: "aiq_orchestrator_cron_lag_seconds",
            kind: Kind::Histogram,
            labels: &[],
            help: "Time from a cron tick to the start of its run",
        };
        RUN_SECONDS = Metric {
            name: "aiq_orchestrator_run_seconds",
            kind: Kind::Histogram,
            labels: &["tenant"],
            help: "Time from a run's start to its end, by tenant",
        };
        ABORTED_BATCHES = Metric {
            name: "aiq_orchestrator_aborted_batches_total",
            kind: Kind::Counter,
            labels: &[],
            help: "Batches whose transaction was aborted and redone",
        };
        CHANGELOG_WRITES = Metric {
            name: "aiq_orchestrator_changelog_writes_total",
            kind: Kind::Counter,
            labels: &[],
            help: "State entries written to the changelog",
        };
        OWNED_PARTITIONS = Metric {
            name: "aiq_orchestrator_owned_partitions",
            kind: Kind::Gauge,
            labels: &[],
            help: "Tenant partitions this instance owns",
        };
        DEAD_LETTERS = Metric {
            name: "aiq_orchestrator_dead_letters_total",
            kind: Kind::Counter,
            labels: &["kind"],
            help: "Inputs set aside on the dead-letter topic, by reason",
        };
        RUNS = Metric {
            name: "aiq_orchestrator_runs_total",
            kind: Kind::Counter,
            labels: &["tenant", "workflow", "status"],
            help: "Run events by tenant, workflow and status (running = started)",
        };
        STEPS = Metric {
            name: "aiq_orchestrator_steps_total",
            kind: Kind::Counter,
            labels: &["tenant", "kind", "status"],
            help: "Step events by tenant, kind and status (retrying = a retry scheduled)",
        };
        RUNNING_RUNS = Metric {
            name: "aiq_orchestrator_running_runs",
            kind: Kind::Gauge,
            labels: &["tenant"],
            help: "Runs running, counted against the tenant's max_concurrent_runs",
        };
        QUEUED_RUNS = Metric {
            name: "aiq_orchestrator_queued_runs",
            kind: Kind::Gauge,
            labels: &["tenant"],
            help: "Runs waiting in the tenant's quota queue",
        };
        INFLIGHT_TASKS = Metric {
            name: "aiq_orchestrator_inflight_tasks",
            kind: Kind::Gauge,
            labels: &[],
            help: "Tasks dispatched to workers and not yet answered",
        };
        HELD_TASKS = Metric {
            name: "aiq_orchestrator_held_tasks",
            kind: Kind::Gauge,
            labels: &[],
            help: "Tasks waiting for an in-flight slot of their tenant",
        };
    }
}

/// Task execution.
pub mod worker {
    use crate::{Kind, Metric};

    metrics! {
        TASKS = Metric {
            name: "aiq_worker_tasks_total",
            kind: Kind::Counter,
            labels: &["connector", "outcome"],
            help: "Tasks run, by connector and outcome class",
        };
        TASK_SECONDS = Metric {
            name: "aiq_worker_task_seconds",
            kind: Kind::Histogram,
            labels: &["connector"],
            help: "Time one task attempt took, by connector",
        };
        /// A float counter (`float_counter_vec`): seconds are not whole.
        STEP_SECONDS = Metric {
            name: "aiq_worker_step_seconds_total",
            kind: Kind::Counter,
            labels: &["tenant"],
            help: "Seconds tasks spent in connectors, by tenant",
        };
        OUTPUT_BYTES = Metric {
            name: "aiq_worker_output_bytes_total",
            kind: Kind::Counter,
            labels: &["tenant"],
            help: "Bytes of task results written, by tenant",
        };
        IN_FLIGHT_TASKS = Metric {
            name: "aiq_worker_in_flight_tasks",
            kind: Kind::Gauge,
            labels: &[],
            help: "Tasks running now (consumption pauses at max_in_flight)",
        };
        DEAD_LETTERS = Metric {
            name: "aiq_worker_dead_letters_total",
            kind: Kind::Counter,
            labels: &["kind"],
            help: "Task records set aside on the dead-letter topic, by reason",
        };
    }
}

/// Connectors' circuit breakers (they run in the worker).
pub mod connectors {
    use crate::{Kind, Metric};

    metrics! {
        CIRCUIT_STATE = Metric {
            name: "aiq_connector_circuit_state",
            kind: Kind::Gauge,
            labels: &["tenant", "host"],
            help: "Circuit breakers that are not closed: 1 open, 2 half-open (a closed breaker has no series)",
        };
        CIRCUIT_TRANSITIONS = Metric {
            name: "aiq_connector_circuit_transitions_total",
            kind: Kind::Counter,
            labels: &["tenant", "to"],
            help: "Circuit breaker state changes, by the state entered",
        };
        CIRCUIT_REFUSED = Metric {
            name: "aiq_connector_circuit_refused_total",
            kind: Kind::Counter,
            labels: &["tenant"],
            help: "Calls not made because the target's breaker was open",
        };
    }
}

/// Kafka consumers of the orchestrator and the worker (the sink has its own lag gauge).
pub mod kafka {
    use crate::{Kind, Metric};

    metrics! {
        /// One family shared by every stage of a process: create it once
        /// (`new_gauge_vec`) and `register` it in each stage's registry.
        CONSUMER_LAG = Metric {
            name: "aiq_consumer_lag",
            kind: Kind::Gauge,
            labels: &["stage", "topic", "partition"],
            help: "Records not yet consumed: high watermark (last stable offset when reading committed) minus position, by stage, topic and partition",
        };
    }
}

/// Tenant SQL and the ready reports (`POST /v1/sql`, `GET /v1/reports/{name}`, `aiq sql`,
/// `aiq report`), on the process's SQL runtime.
pub mod analytics {
    use crate::{Kind, Metric};

    metrics! {
        QUERIES_RUNNING = Metric {
            name: "aiq_analytics_queries_running",
            kind: Kind::Gauge,
            labels: &[],
            help: "SQL queries running in this process (at most analytics.max_queries)",
        };
        QUERIES = Metric {
            name: "aiq_analytics_queries_total",
            kind: Kind::Counter,
            labels: &["tenant", "outcome"],
            help: "SQL queries that were admitted and ended, by tenant and outcome",
        };
        QUERIES_REFUSED = Metric {
            name: "aiq_analytics_queries_refused_total",
            kind: Kind::Counter,
            labels: &["tenant", "limit"],
            help: "SQL queries refused because the tenant (analytics.max_queries_per_tenant) or the process (analytics.max_queries) ran as many as allowed",
        };
        QUERY_RERUNS = Metric {
            name: "aiq_analytics_query_reruns_total",
            kind: Kind::Counter,
            labels: &[],
            help: "SQL query attempts run again on a fresh listing because a history file they listed was replaced or deleted before they read it",
        };
    }
}

/// The sink. No tenant labels: topic kinds, table names and partition numbers only.
pub mod sink {
    use crate::{Kind, Metric};

    metrics! {
        RECORDS = Metric {
            name: "aiq_sink_records_total",
            kind: Kind::Counter,
            labels: &["topic"],
            help: "Records consumed, by topic",
        };
        WRITES = Metric {
            name: "aiq_sink_writes_total",
            kind: Kind::Counter,
            labels: &["table", "outcome"],
            help: "Rows written to the store, by table and outcome",
        };
        WRITE_SECONDS = Metric {
            name: "aiq_sink_write_seconds",
            kind: Kind::Histogram,
            labels: &["table"],
            help: "Latency of one store request (a row, or an unlogged batch of one partition's rows), by table",
        };
        BATCH_RECORDS = Metric {
            name: "aiq_sink_batch_records",
            kind: Kind::Histogram,
            labels: &[],
            help: "Records per written batch",
        };
        CONSUMER_LAG = Metric {
            name: "aiq_sink_consumer_lag",
            kind: Kind::Gauge,
            labels: &["topic", "partition"],
            help: "High watermark minus position, by topic and partition",
        };
        RETRIES = Metric {
            name: "aiq_sink_write_retries_total",
            kind: Kind::Counter,
            labels: &[],
            help: "Batches retried after the store refused writes",
        };
        UNDECODABLE = Metric {
            name: "aiq_sink_undecodable_records_total",
            kind: Kind::Counter,
            labels: &["topic"],
            help: "Records skipped because they did not decode",
        };
        ERASED = Metric {
            name: "aiq_sink_erased_records_total",
            kind: Kind::Counter,
            labels: &[],
            help: "Events of tenants whose data was erased, dropped instead of written",
        };
        ERASED_RUNS = Metric {
            name: "aiq_sink_erased_runs_total",
            kind: Kind::Counter,
            labels: &[],
            help: "Runs whose payloads were cleared from the Parquet history",
        };
        DEAD_LETTERS = Metric {
            name: "aiq_sink_dead_letters_total",
            kind: Kind::Counter,
            labels: &["topic", "kind"],
            help: "Records the store refused for good, written to the dead-letter topic",
        };
        PARQUET_FLUSH_SECONDS = Metric {
            name: "aiq_sink_parquet_flush_seconds",
            kind: Kind::Histogram,
            labels: &[],
            help: "Time to flush the Parquet files",
        };
        COMMITS = Metric {
            name: "aiq_sink_commits_total",
            kind: Kind::Counter,
            labels: &["outcome"],
            help: "Offset commits, by outcome",
        };
    }
}
