//! Runs one query in a fresh, locked-down session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiq_sql::layout::Table;
use aiq_topics::TenantId;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::result::Collector;
use crate::{AnalyticsError, AnalyticsSettings, QueryResult, guard, reports, tables};

/// Whose rows a query may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One tenant's rows only; enforced by the tables the session holds.
    Tenant(TenantId),
    /// Every tenant's rows (operators).
    Platform,
}

/// The query service; clone it freely (the settings are shared).
#[derive(Debug, Clone)]
pub struct Analytics {
    settings: Arc<AnalyticsSettings>,
}

impl Analytics {
    pub fn new(settings: AnalyticsSettings) -> Result<Analytics, AnalyticsError> {
        settings.validate()?;
        Ok(Analytics {
            settings: Arc::new(settings),
        })
    }

    pub fn settings(&self) -> &AnalyticsSettings {
        &self.settings
    }

    /// Runs one read-only query in `scope`, within the time, memory and row limits.
    pub async fn query(&self, scope: &Scope, sql: &str) -> Result<QueryResult, AnalyticsError> {
        guard::check(sql)?;
        let started = Instant::now();
        let ms = self.settings.timeout_ms;
        let mut result = tokio::time::timeout(Duration::from_millis(ms), self.run(scope, sql))
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

    /// Runs the ready report called `name` (see [`crate::REPORTS`]).
    pub async fn report(&self, scope: &Scope, name: &str) -> Result<QueryResult, AnalyticsError> {
        let report =
            reports::find(name).ok_or_else(|| AnalyticsError::UnknownReport(name.to_owned()))?;
        self.query(scope, report.sql).await
    }

    async fn run(&self, scope: &Scope, sql: &str) -> Result<QueryResult, AnalyticsError> {
        let ctx = self.session(scope)?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = ctx.sql_with_options(sql, options).await?;
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

    /// A session that holds `runs` and `steps` for `scope` and nothing else: no
    /// information_schema, no URL tables, a memory pool of its own.
    fn session(&self, scope: &Scope) -> Result<SessionContext, AnalyticsError> {
        let config = SessionConfig::new()
            .with_information_schema(false)
            .with_target_partitions(self.settings.target_partitions);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(
                self.settings.memory_limit_bytes,
            )))
            .build_arc()?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        for table in Table::ALL {
            let provider = match scope {
                Scope::Platform => tables::platform(&self.settings.root, table)?,
                Scope::Tenant(t) => tables::tenant(&self.settings.root, table, t.as_str())?,
            };
            ctx.register_table(table.name(), provider)?;
        }
        Ok(ctx)
    }
}
