//! The process's SQL runtime: a multi-thread tokio runtime of its own, `threads` workers
//! named [`THREAD_NAME`], on which every query of the process plans and executes (and
//! DataFusion's own tasks and blocking file reads with it, as they spawn on the runtime
//! they run on). The runtime of ingest, orchestrator, worker and sink never polls a query:
//! the caller only awaits its answer.
//!
//! On Linux the SQL threads also run at nice `thread_nice`, so that when a query and a
//! pipeline stage want the same core, the stage gets it first.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::JoinHandle;

use crate::AnalyticsError;

/// The name of every SQL thread (at most 15 bytes: Linux's thread-name limit).
pub const THREAD_NAME: &str = "aiq-sql";

#[derive(Debug)]
pub(crate) struct SqlRuntime {
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl SqlRuntime {
    pub fn new(threads: usize, nice: i32) -> Result<SqlRuntime, AnalyticsError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            // DataFusion reads local files on blocking threads.
            .max_blocking_threads(threads.saturating_mul(4).max(4))
            .thread_name(THREAD_NAME)
            .on_thread_start(move || lower_priority(nice))
            .enable_all()
            .build()
            .map_err(|e| AnalyticsError::Internal(format!("starting the SQL runtime: {e}")))?;
        Ok(SqlRuntime {
            runtime: Some(runtime),
        })
    }

    /// Runs `work` on the SQL threads. Dropping the returned future (the caller went
    /// away) stops the work.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<Running<T>, AnalyticsError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| AnalyticsError::Internal("the SQL runtime is shut down".into()))?;
        Ok(Running(runtime.spawn(work)))
    }
}

impl Drop for SqlRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one would panic; queries still running are
        // abandoned, as their callers are gone.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A query running on the SQL threads; aborted when dropped before it ends.
pub(crate) struct Running<T>(JoinHandle<T>);

impl<T> Future for Running<T> {
    type Output = Result<T, AnalyticsError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| {
            r.map_err(|e| AnalyticsError::Internal(format!("the query's task ended: {e}")))
        })
    }
}

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Raises the calling thread's nice value (Linux keeps one per thread).
#[cfg(target_os = "linux")]
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    // `None` is the caller: on Linux, the calling thread, not the whole process.
    if let Err(e) = rustix::process::setpriority_process(None, nice) {
        tracing::warn!(error = %e, nice, "cannot lower the SQL threads' priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_nice: i32) {}
