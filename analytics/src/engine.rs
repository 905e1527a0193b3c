//! Runs one query in a fresh, locked-down session, on the process's SQL runtime, within
//! the process's memory pool and its concurrency limits.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiq_history_store::HistoryLocation;
use aiq_sql::layout::Table;
use aiq_topics::TenantId;
use datafusion::execution::cache::cache_manager::{CacheManager, CacheManagerConfig};
use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use prometheus::{IntCounter, Registry};
use url::Url;

use crate::gate::Gate;
use crate::pinned::PinnedStore;
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
    /// Where the history is; each query attempt reaches its store through a
    /// [`PinnedStore`] of its own.
    location: HistoryLocation,
    /// Disk manager and the process's memory pool, shared by every query (each query
    /// gets caches and object stores of its own).
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
            reruns: self.inner.gate.reruns.clone(),
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
        Err(AnalyticsError::HistoryChanged { .. }) => "changed",
        Err(AnalyticsError::Busy { .. } | AnalyticsError::Internal(_)) => "internal",
    }
}

/// Attempts at a query whose files changed while it read them. The sink rewrites an
/// open window's file at each flush (every `sink.commit_interval_ms`), so a slow query
/// over busy tenants may meet a rewrite more than once; each attempt stops at the first
/// changed file, and the query's time limit bounds them all.
const CHANGED_HISTORY_ATTEMPTS: u32 = 8;

/// Wait before attempt `n + 1`: a little longer each time, so that attempts spread over
/// a flush interval rather than all meeting the same flush.
fn changed_history_backoff(n: u32) -> Duration {
    Duration::from_millis(25 * u64::from(n))
}

/// Runs `attempt` (which answers with whether the history changed under it) until it
/// succeeds, fails on files that did not change, or has met changed files
/// [`CHANGED_HISTORY_ATTEMPTS`] times: then [`AnalyticsError::HistoryChanged`].
async fn until_unchanged<T, F, Fut>(
    reruns: &IntCounter,
    mut attempt: F,
) -> Result<T, AnalyticsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (Result<T, AnalyticsError>, bool)>,
{
    let mut n = 1;
    loop {
        match attempt().await {
            (Err(e), true) if n < CHANGED_HISTORY_ATTEMPTS => {
                tracing::debug!(error = %e, attempt = n, "a history file changed under the query; running it again");
                reruns.inc();
                tokio::time::sleep(changed_history_backoff(n)).await;
                n += 1;
            }
            (Err(e), true) => {
                tracing::debug!(error = %e, attempt = n, "history files changed under every attempt at the query");
                return Err(AnalyticsError::HistoryChanged { attempts: n });
            }
            (result, _) => return result,
        }
    }
}

/// One query, as it travels to the SQL runtime.
struct Job {
    settings: Arc<AnalyticsSettings>,
    location: HistoryLocation,
    env: Arc<RuntimeEnv>,
    scope: Scope,
    sql: String,
    reruns: IntCounter,
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

    /// Runs the query, and again on a fresh listing while a file it listed was
    /// replaced or deleted before it read it (see [`PinnedStore`]).
    async fn execute_whole(&self) -> Result<QueryResult, AnalyticsError> {
        until_unchanged(&self.reruns, || async move {
            let store = Arc::new(PinnedStore::new(Arc::clone(self.location.whole_store())));
            let result = self.execute(Arc::clone(&store)).await;
            (result, store.changed())
        })
        .await
    }

    async fn execute(&self, store: Arc<PinnedStore>) -> Result<QueryResult, AnalyticsError> {
        let ctx = self.session(store)?;
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
    /// at most `memory_limit_bytes` of it. It reaches the history store only through
    /// `store`, this attempt's own.
    fn session(&self, store: Arc<PinnedStore>) -> Result<SessionContext, AnalyticsError> {
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
            object_store_registry: registry(self.location.store_url(), store),
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

/// Object stores of one query attempt: the history's, pinned, under its URL (for a
/// local history that is `file:///`, replacing the default local file system).
fn registry(url: &Url, store: Arc<PinnedStore>) -> Arc<dyn ObjectStoreRegistry> {
    let registry = DefaultObjectStoreRegistry::new();
    registry.register_store(url, store);
    Arc::new(registry)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn changed() -> (Result<u32, AnalyticsError>, bool) {
        (Err(AnalyticsError::Internal("412".into())), true)
    }

    #[tokio::test]
    async fn a_query_that_met_changed_files_runs_again_until_it_reads_them_whole() {
        let reruns = IntCounter::new("reruns", "test").unwrap();
        let calls = Cell::new(0);
        let result = until_unchanged(&reruns, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { if n < 3 { changed() } else { (Ok(n), false) } }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(reruns.get(), 2);
    }

    #[tokio::test]
    async fn a_history_that_changes_under_every_attempt_ends_after_the_last() {
        let reruns = IntCounter::new("reruns", "test").unwrap();
        let calls = Cell::new(0);
        let result = until_unchanged(&reruns, || {
            calls.set(calls.get() + 1);
            async { changed() }
        })
        .await;
        assert!(
            matches!(result, Err(AnalyticsError::HistoryChanged { attempts }) if attempts == CHANGED_HISTORY_ATTEMPTS),
            "{result:?}"
        );
        assert_eq!(calls.get(), CHANGED_HISTORY_ATTEMPTS);
        assert_eq!(reruns.get(), u64::from(CHANGED_HISTORY_ATTEMPTS - 1));
    }

    #[tokio::test]
    async fn a_failure_on_files_that_did_not_change_is_returned_at_once() {
        let reruns = IntCounter::new("reruns", "test").unwrap();
        let calls = Cell::new(0);
        let result: Result<u32, _> = until_unchanged(&reruns, || {
            calls.set(calls.get() + 1);
            async {
                (
                    Err(AnalyticsError::Invalid {
                        message: "No field named nope".into(),
                    }),
                    false,
                )
            }
        })
        .await;
        assert!(
            matches!(result, Err(AnalyticsError::Invalid { .. })),
            "{result:?}"
        );
        assert_eq!((calls.get(), reruns.get()), (1, 0));
    }
}
