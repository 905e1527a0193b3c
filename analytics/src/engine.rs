//! Runs one query in a fresh, locked-down session, on the process's SQL runtime, within
//! the process's memory pool and its concurrency limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiq_history_store::HistoryLocation;
use aiq_sql::layout::Table;
use aiq_topics::TenantId;
use datafusion::execution::cache::cache_manager::{CacheManager, CacheManagerConfig};
use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use prometheus::Registry;

use crate::gate::Gate;
use crate::pool::QueryPool;
use crate::result::Collector;
use crate::runtime::SqlRuntime;
use crate::{AnalyticsError, AnalyticsSettings, QueryResult, guard, reports, tables};

/// Whose rows a query may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One tenant's rows only; enforced by the tables the session holds.
    Tenant(TenantId),
    /// Every tenant's rows (operators).
    Platform,
}

/// Per-query limits replacing the configured ones (a tenant's plan); `None` keeps the
/// configured value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_rows: Option<usize>,
    pub timeout_ms: Option<u64>,
}

/// The query service of a process; clone it freely (clones share the SQL runtime, the
/// memory pool and the limits). Create one per process.
#[derive(Debug, Clone)]
pub struct Analytics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Arc<AnalyticsSettings>,
    /// Where the history is; its store is registered in `env`.
    location: HistoryLocation,
    /// Disk manager, object stores and the process's memory pool, shared by every query
    /// (each query gets caches of its own).
    env: Arc<RuntimeEnv>,
    gate: Arc<Gate>,
    /// Only here, never in a query's task: the last clone may be dropped anywhere but on
    /// the SQL threads themselves.
    runtime: SqlRuntime,
}

impl Analytics {
    /// An engine whose metrics are registered nowhere (a command, a test).
    pub fn new(settings: AnalyticsSettings) -> Result<Analytics, AnalyticsError> {
        Analytics::with_registry(settings, &Registry::new())
    }

    /// An engine that registers its metrics in `registry`.
    pub fn with_registry(
        settings: AnalyticsSettings,
        registry: &Registry,
    ) -> Result<Analytics, AnalyticsError> {
        settings.validate()?;
        let location = settings
            .root
            .parse(&settings.store_options)
            .map_err(|e| AnalyticsError::Internal(format!("analytics settings: root: {e}")))?;
        let env = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(settings.memory_pool_bytes)))
            .build_arc()?;
        // The local file system is registered already; a cloud store is reached by the
        // scheme and container (or bucket) of its URL.
        if location.local_root().is_none() {
            env.register_object_store(location.store_url(), Arc::clone(location.whole_store()));
        }
        let gate = Arc::new(Gate::new(
            settings.max_queries,
            settings.max_queries_per_tenant,
            registry,
        )?);
        let runtime = SqlRuntime::new(settings.threads, settings.thread_nice)?;
        Ok(Analytics {
            inner: Arc::new(Inner {
                settings: Arc::new(settings),
                location,
                env,
                gate,
                runtime,
            }),
        })
    }

    pub fn settings(&self) -> &AnalyticsSettings {
        &self.inner.settings
    }

    /// Queries running now in this engine.
    pub fn running_queries(&self) -> usize {
        self.inner.gate.running()
    }

    /// Bytes the process's memory pool lends to queries now.
    pub fn memory_reserved(&self) -> usize {
        self.inner.env.memory_pool.reserved()
    }

    /// Runs one read-only query in `scope`, within the time, memory and row limits, on
    /// the SQL runtime. Refused at once with [`AnalyticsError::Busy`] when the tenant or
    /// the process runs as many queries as allowed. Dropping the returned future stops
    /// the query.
    pub async fn query(&self, scope: &Scope, sql: &str) -> Result<QueryResult, AnalyticsError> {
        self.query_with(scope, sql, Limits::default()).await
    }

    /// As [`Analytics::query`], with a tenant plan's row and time limits in place of
    /// the configured ones.
    pub async fn query_with(
        &self,
        scope: &Scope,
        sql: &str,
        limits: Limits,
    ) -> Result<QueryResult, AnalyticsError> {
        guard::check(sql)?;
        let mut permit = self.inner.gate.enter(scope)?;
        let settings = if limits == Limits::default() {
            Arc::clone(&self.inner.settings)
        } else {
            let mut s = (*self.inner.settings).clone();
            s.max_result_rows = limits.max_rows.unwrap_or(s.max_result_rows);
            s.timeout_ms = limits.timeout_ms.unwrap_or(s.timeout_ms);
            Arc::new(s)
        };
        let job = Job {
            settings,
            location: self.inner.location.clone(),
            env: Arc::clone(&self.inner.env),
            scope: scope.clone(),
            sql: sql.to_owned(),
        };
        let running = self.inner.runtime.run(async move {
            let result = job.run().await;
            permit.ended(outcome(&result));
            result
        });
        running.await?
    }

    /// Runs the ready report called `name` (see [`crate::REPORTS`]).
    pub async fn report(&self, scope: &Scope, name: &str) -> Result<QueryResult, AnalyticsError> {
        self.report_with(scope, name, Limits::default()).await
    }

    /// As [`Analytics::report`], with a plan's limits (see [`Analytics::query_with`]).
    pub async fn report_with(
        &self,
        scope: &Scope,
        name: &str,
        limits: Limits,
    ) -> Result<QueryResult, AnalyticsError> {
        let report =
            reports::find(name).ok_or_else(|| AnalyticsError::UnknownReport(name.to_owned()))?;
        self.query_with(scope, report.sql, limits).await
    }
}

/// The metric outcome of a query that was admitted.
fn outcome(result: &Result<QueryResult, AnalyticsError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(AnalyticsError::Refused { .. }) => "refused",
        Err(AnalyticsError::Invalid { .. } | AnalyticsError::UnknownReport(_)) => "invalid",
        Err(AnalyticsError::Timeout { .. }) => "timeout",
        Err(AnalyticsError::ResourcesExhausted { .. }) => "too_big",
        Err(AnalyticsError::Busy { .. } | AnalyticsError::Internal(_)) => "internal",
    }
}

/// Attempts at a query whose files changed while it read them.
const TORN_READ_ATTEMPTS: u32 = 3;

/// Whether `e` is what reading a Parquet file replaced mid-read looks like: a file
/// listed with its old size read at the new file's bytes fails wherever those bytes are
/// decoded — the footer ("Corrupt footer", the thrift decoder's "Unexpected struct field
/// type 14"), a page's compression ("snappy: corrupt input") or a short read. Every
/// history file is written whole by the sink and a query names tables, never files, so a
/// Parquet-level failure is not the query's fault; one that persists is returned after
/// the last attempt. DataFusion hands these over as text only (an Arrow or Parquet error
/// inside an external one).
fn is_torn_read(e: &AnalyticsError) -> bool {
    let message = match e {
        AnalyticsError::Invalid { message } | AnalyticsError::Internal(message) => message,
        _ => return false,
    };
    [
        "Parquet error",
        "Parquet argument error",
        "Corrupt footer",
        "failed to fill whole buffer",
        "EOF while reading",
        "corrupt input",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// One query, as it travels to the SQL runtime.
struct Job {
    settings: Arc<AnalyticsSettings>,
    location: HistoryLocation,
    env: Arc<RuntimeEnv>,
    scope: Scope,
    sql: String,
}

impl Job {
    async fn run(self) -> Result<QueryResult, AnalyticsError> {
        let started = Instant::now();
        let ms = self.settings.timeout_ms;
        let mut result = tokio::time::timeout(Duration::from_millis(ms), self.execute_whole())
            .await
            .map_err(|_| AnalyticsError::Timeout { ms })??;
        result.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::debug!(
            rows = result.rows.len(),
            truncated = result.truncated,
            elapsed_ms = result.elapsed_ms,
            "analytics query"
        );
        Ok(result)
    }

    /// Runs the query again (at most [`TORN_READ_ATTEMPTS`] times in all) when it read
    /// a file the sink replaced under it: the open window's file is rewritten whole at
    /// each flush, and a query that listed it (with its size) before the rewrite reads
    /// the new file's bytes at the old file's offsets — a "corrupt footer" or a short
    /// read. Listed afresh, the same query sees the new file whole.
    async fn execute_whole(&self) -> Result<QueryResult, AnalyticsError> {
        let mut attempt = 1;
        loop {
            match self.execute().await {
                Err(e) if attempt < TORN_READ_ATTEMPTS && is_torn_read(&e) => {
                    tracing::debug!(error = %e, attempt, "a history file changed under the query; running it again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn execute(&self) -> Result<QueryResult, AnalyticsError> {
        let ctx = self.session()?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = ctx.sql_with_options(&self.sql, options).await?;
        let max = self.settings.max_result_rows;
        let mut collector = Collector::new(frame.schema().inner(), max);
        // The cut is part of the plan, so execution itself stops after one row more
        // than may be returned (that row only tells that the result was truncated).
        // EXPLAIN must stay the root of its plan; its answer is a few rows anyway.
        let explain = matches!(
            frame.logical_plan(),
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)
        );
        let frame = if explain {
            frame
        } else {
            frame.limit(0, Some(max.saturating_add(1)))?
        };
        let batches = frame.collect().await?;
        for batch in &batches {
            if collector.push(batch)? {
                break;
            }
        }
        Ok(collector.finish())
    }

    /// A session that holds `runs` and `steps` for its scope and nothing else: no
    /// information_schema, no URL tables; its memory comes from the process's pool,
    /// at most `memory_limit_bytes` of it.
    fn session(&self) -> Result<SessionContext, AnalyticsError> {
        let config = SessionConfig::new()
            .with_information_schema(false)
            .with_target_partitions(self.settings.target_partitions);
        // Caches of its own: DataFusion's list-files cache keeps a folder's listing with
        // no expiry, so a shared one would hide every file the sink writes or replaces
        // after the first query (and read replaced files at their old size).
        let runtime = Arc::new(RuntimeEnv {
            memory_pool: Arc::new(QueryPool::new(
                Arc::clone(&self.env.memory_pool),
                self.settings.memory_limit_bytes,
            )),
            cache_manager: CacheManager::try_new(&CacheManagerConfig::default())?,
            ..RuntimeEnv::clone(&self.env)
        });
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let root = &self.location;
        for table in Table::ALL {
            let provider = match &self.scope {
                Scope::Platform => tables::platform(root, table)?,
                Scope::Tenant(t) => tables::tenant(root, table, t.as_str())?,
            };
            ctx.register_table(table.name(), provider)?;
        }
        Ok(ctx)
    }
}

#[cfg(test)]
mod torn_read_tests {
    use super::*;

    #[test]
    fn only_a_file_replaced_mid_read_is_tried_again() {
        let torn = AnalyticsError::Internal(
            "Parquet error: Parquet error: Invalid Parquet file. Corrupt footer".into(),
        );
        assert!(is_torn_read(&torn));
        let short = AnalyticsError::Invalid {
            message: "Arrow error: Parquet argument error: External: failed to fill whole buffer"
                .into(),
        };
        assert!(is_torn_read(&short));
        // Seen in CI: a query listed the open window's file, the sink rewrote it longer.
        let grown = AnalyticsError::Invalid {
            message: "Arrow error: Parquet argument error: Parquet error: Unexpected struct field type 14".into(),
        };
        assert!(is_torn_read(&grown));
        // Seen in CI on Azure Blob Storage: a page of a blob put again meanwhile.
        let page = AnalyticsError::Invalid {
            message: "Arrow error: Parquet argument error: External: snappy: corrupt input (expected literal read of length 53; remaining src: 36; remaining dst: 156)".into(),
        };
        assert!(is_torn_read(&page));
        let column = AnalyticsError::Invalid {
            message: "Schema error: No field named nope. Valid fields are runs.run_id.".into(),
        };
        assert!(!is_torn_read(&column));
        let typo = AnalyticsError::Invalid {
            message: "SQL error: ParserError(\"Expected: an SQL statement\")".into(),
        };
        assert!(!is_torn_read(&typo));
        assert!(!is_torn_read(&AnalyticsError::Timeout { ms: 5 }));
    }
}
