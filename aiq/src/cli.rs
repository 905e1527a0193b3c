//! The command line. Every command and flag says what it does in `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};

use crate::config::LogFormat;
use crate::roles::Roles;

#[derive(Debug, Parser)]
#[command(
    name = "aiq",
    version,
    about = "AutomateIQ: a multi-tenant workflow automation engine on Kafka and ScyllaDB",
    long_about = "AutomateIQ: a multi-tenant workflow automation engine on Kafka and ScyllaDB.\n\n\
        One binary runs any subset of the stages (ingest, orchestrator, worker, sink) and \
        the operator's commands. Configuration comes from config/aiq.toml (compiled in), \
        then --config FILE, then AIQ_<SECTION>_<KEY> variables (AIQ_KAFKA_BROKERS, \
        AIQ_CQL_CONTACT_POINTS, ...), then the flags below."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// A TOML file overriding any subset of config/aiq.toml.
    #[arg(long, global = true, env = "AIQ_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Kafka brokers, host:port[,host:port...] (kafka.brokers).
    #[arg(long, global = true, value_name = "HOSTS")]
    pub brokers: Option<String>,
    /// Prefix of every topic name (kafka.topic_prefix).
    #[arg(long, global = true, value_name = "PREFIX")]
    pub topic_prefix: Option<String>,
    /// ScyllaDB/Cassandra contact points, host:port[,host:port...] (cql.contact_points).
    #[arg(long, global = true, value_name = "HOSTS")]
    pub cql: Option<String>,
    /// CQL keyspace (cql.keyspace).
    #[arg(long, global = true, value_name = "NAME")]
    pub keyspace: Option<String>,
    /// Log line format (log.format).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

impl GlobalArgs {
    /// The flags that were given, as a partial configuration document.
    pub fn overrides(&self, roles: Option<&Roles>) -> Value {
        let mut doc = Map::new();
        let mut put = |section: &str, key: &str, value: Value| {
            let entry = doc
                .entry(section.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = entry {
                map.insert(key.to_owned(), value);
            }
        };
        if let Some(v) = &self.brokers {
            put("kafka", "brokers", json!(v));
        }
        if let Some(v) = &self.topic_prefix {
            put("kafka", "topic_prefix", json!(v));
        }
        if let Some(v) = &self.cql {
            put("cql", "contact_points", json!(v));
        }
        if let Some(v) = &self.keyspace {
            put("cql", "keyspace", json!(v));
        }
        if let Some(v) = self.log_format {
            put("log", "format", json!(v));
        }
        if let Some(r) = roles {
            put("serve", "roles", json!(r.to_string()));
        }
        Value::Object(doc)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run pipeline stages in this process (all four by default, or --roles).
    Serve {
        /// Stages to run: any of ingest, orchestrator, worker, sink, comma-separated.
        #[arg(long, value_name = "ROLES")]
        roles: Option<Roles>,
    },
    /// Kafka topics, declared in code: list them, or make the cluster match.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// The CQL schema, as ordered migrations: apply the pending ones, or list them.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Prove the services work: a record through Kafka and a row through the store.
    Check,
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Print a short-lived development token (HS256, signed with AIQ_DEV_JWT_SECRET).
    Token {
        /// The tenant the token acts for.
        #[arg(long)]
        tenant: aiq_topics::TenantId,
        /// platform_admin, tenant_admin or user.
        #[arg(long)]
        role: aiq_auth::Role,
        /// Seconds until it expires.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Tenant secrets: make a sealing key.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Workflow definitions: check documents before registering them.
    #[command(subcommand)]
    Workflows(WorkflowsCommand),
    /// Run SQL over the run history's Parquet tables `runs` and `steps`, across tenants
    /// or (--tenant) as that tenant sees them. Read-only: DDL, DML and file access are
    /// refused.
    Sql {
        /// The query, e.g. "SELECT status, count(*) FROM runs GROUP BY status".
        query: String,
        /// Scope the query to one tenant's rows.
        #[arg(long)]
        tenant: Option<aiq_topics::TenantId>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Run a ready report from sql/reports/ (without a name: list them).
    Report {
        name: Option<String>,
        /// Scope the report to one tenant's rows.
        #[arg(long)]
        tenant: Option<aiq_topics::TenantId>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// The Parquet history: compaction, archive and retention.
    #[command(subcommand)]
    History(HistoryCommand),
    /// Records the pipeline set aside, every tenant's: list them, show one with its
    /// record, replay them to the topic they came from (each once) or resolve them.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLettersCommand),
    /// The tenant registry: create a tenant (with its first tenant_admin key), list,
    /// show, change its plan, suspend and resume it. Changes reach every running
    /// process within seconds.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Redrive or rerun the runs a SQL predicate over the `runs` table matches: a dry
    /// run prints the count and a sample; otherwise a job is stored for a running
    /// ingest to work through, each run once, and its progress is followed.
    Replay {
        /// The predicate, as after WHERE, e.g. "status = 'failed' AND workflow = 'x'".
        #[arg(long = "where", value_name = "PREDICATE")]
        predicate: String,
        /// The tenant whose runs are chosen (a dry run without it: every tenant's).
        #[arg(long)]
        tenant: Option<aiq_topics::TenantId>,
        /// redrive: resume each failed run at its failed step; rerun: start a new run
        /// with the same input.
        #[arg(long, default_value = "redrive", value_parser = ["redrive", "rerun"])]
        mode: String,
        /// Only print what would be replayed.
        #[arg(long)]
        dry_run: bool,
        /// Runs replayed per second at most.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        max_per_second: u32,
        /// Store the job and return without following it.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Register a tenant; prints its first tenant_admin API key (shown once).
    Create {
        id: aiq_topics::TenantId,
        /// The display name (default: the id).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Every tenant, one line each.
    List,
    /// One tenant's record as JSON.
    Show { id: aiq_topics::TenantId },
    /// Change a tenant's name or plan fields (the others stay).
    Set {
        id: aiq_topics::TenantId,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Refuse the tenant's triggers and pause its cron; runs in flight go on unless
    /// --cancel-running.
    Suspend {
        id: aiq_topics::TenantId,
        #[arg(long)]
        cancel_running: bool,
    },
    /// Accept the tenant's triggers and run its cron again.
    Resume { id: aiq_topics::TenantId },
    /// Write an export of the tenant's data to FILE: a tar of its definitions, runs
    /// (payloads opened), audit trail, API key and secret names and Parquet history,
    /// with a manifest of checksums (the archive `POST /v1/tenants/{id}/exports` makes).
    Export {
        id: aiq_topics::TenantId,
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

/// A plan's fields; each left out keeps its value (or the deployment's default).
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[arg(long)]
    pub trigger_per_second: Option<u32>,
    #[arg(long)]
    pub trigger_burst: Option<u32>,
    #[arg(long)]
    pub max_concurrent_runs: Option<u32>,
    #[arg(long)]
    pub max_inflight_tasks: Option<u32>,
    #[arg(long)]
    pub max_queued_runs: Option<u32>,
    #[arg(long)]
    pub retention_class: Option<String>,
    /// Comma-separated connector names (http,email,...).
    #[arg(long, value_delimiter = ',')]
    pub allowed_connectors: Option<Vec<String>>,
    #[arg(long)]
    pub sql_max_rows: Option<u32>,
    #[arg(long)]
    pub sql_timeout_ms: Option<u32>,
}

impl PlanArgs {
    pub fn plan(self) -> aiq_topics::Plan {
        aiq_topics::Plan {
            trigger_per_second: self.trigger_per_second,
            trigger_burst: self.trigger_burst,
            max_concurrent_runs: self.max_concurrent_runs,
            max_inflight_tasks: self.max_inflight_tasks,
            max_queued_runs: self.max_queued_runs,
            retention_class: self.retention_class,
            allowed_connectors: self.allowed_connectors,
            sql_max_rows: self.sql_max_rows,
            sql_timeout_ms: self.sql_timeout_ms,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// List dead letters, newest first, one line each.
    List(LetterSelection),
    /// Print one dead letter: where it came from, why, its state and its record.
    Show { id: uuid::Uuid },
    /// Write letters' records back to the topics and partitions they came from. A
    /// letter is replayed once: a second replay is refused. Exits 1 if any failed.
    Replay(LetterSelection),
    /// Mark letters resolved (nothing is replayed, and they can no longer be).
    Resolve(LetterSelection),
}

/// Which letters: ids, or (with --all for replay and resolve) every letter the filters
/// keep.
#[derive(Debug, Args)]
pub struct LetterSelection {
    /// Letter ids.
    pub ids: Vec<uuid::Uuid>,
    /// Every letter the filters below keep.
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
    /// Only this tenant's letters (default: every tenant's, and those of no tenant).
    #[arg(long)]
    pub tenant: Option<aiq_topics::TenantId>,
    /// Only letters of this kind (unknown_workflow, invalid_input, undecodable, ...).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only letters set aside by this stage (orchestrator, worker, sink).
    #[arg(long)]
    pub stage: Option<String>,
    /// Only letters in this state.
    #[arg(long, value_parser = ["open", "replaying", "replayed", "resolved"])]
    pub state: Option<String>,
    /// RFC 3339; letters set aside at or after it (default: 24 hours before --to).
    #[arg(long)]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// RFC 3339; letters set aside at or before it (default: now; at most 31 days after
    /// --from).
    #[arg(long)]
    pub to: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// Merge each old day's small files, move days past `sink.parquet.warm_days` to the
    /// archive (zstd) and delete days past `sink.parquet.archive_days`.
    Compact,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Print a key file line with a fresh random key: `<key-id> <64 hex digits>`. Put it
    /// first in `secrets.key_file` to seal with it (older lines still open).
    NewKey {
        /// The key's id, stored beside every value it seals.
        #[arg(long, default_value = "k1")]
        id: String,
    },
    /// After a new key was put first in `secrets.key_file`: wrap every tenant's data
    /// key under it again (nothing they sealed is rewritten); then the older key can
    /// leave the file once connector secrets are sealed again too.
    RewrapDataKeys,
}

#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// Validate workflow documents (JSON or YAML) offline: one line per error, as
    /// FILE:/json/pointer: reason. Exits 0 when all are valid, 1 otherwise.
    Validate {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Print every declared topic: name, partitions, cleanup, retention and key.
    List,
    /// Create missing topics and restore drifted configs; report drift it cannot fix.
    /// Exits 2 when drift remains.
    Apply,
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Apply the migrations not yet applied, in order, and record each.
    Apply,
    /// List every migration and whether it is applied.
    Status,
}
