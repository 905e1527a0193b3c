//! The process's SQL runtime: a multi-thread tokio runtime of its own, `threads` workers
//! named [`THREAD_NAME`], on which every query of the process plans and executes (and
//! DataFusion's own tasks and blocking file reads with it, as they spawn on the runtime
//! they run on). The runtime of ingest, orchestrator, worker and sink never polls a query:
//! the caller only awaits its answer.
//!
//! The SQL threads run at nice `thread_nice` ([`BackgroundRuntime`]), so that when a
//! query and a pipeline stage want the same core, the stage gets it first.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use aiq_stage::BackgroundRuntime;
use tokio::task::JoinHandle;

use crate::AnalyticsError;

/// The name of every SQL thread (at most 15 bytes: Linux's thread-name limit).
pub const THREAD_NAME: &str = "aiq-sql";

#[derive(Debug)]
pub(crate) struct SqlRuntime(BackgroundRuntime);

impl SqlRuntime {
    pub fn new(threads: usize, nice: i32) -> Result<SqlRuntime, AnalyticsError> {
        // DataFusion reads local files on blocking threads.
        let blocking = threads.saturating_mul(4).max(4);
        BackgroundRuntime::new(THREAD_NAME, threads, blocking, nice)
            .map(SqlRuntime)
            .map_err(|e| AnalyticsError::Internal(format!("starting the SQL runtime: {e}")))
    }

    /// Runs `work` on the SQL threads. Dropping the returned future (the caller went
    /// away) stops the work.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Running<T> {
        Running(self.0.spawn(work))
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
