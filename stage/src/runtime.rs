//! A tokio runtime of its own for work that should yield the cores to the run path.
//!
//! On one machine, the stages a run waits on (ingest, orchestrator, worker) and the work
//! no run waits on (the sink's history writes, tenants' SQL queries) share the cores.
//! Work of the second kind runs here, on named threads at a higher nice value (Linux
//! keeps one per thread): when both want a core, the run path gets it first, and the
//! background work takes what is left. Futures spawned from a task running here (a
//! database driver's connection tasks, DataFusion's own tasks) stay here too.

use std::future::Future;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinHandle;

/// A multi-thread runtime at a given nice value; shut down in the background when
/// dropped, so that it may be dropped inside another runtime.
#[derive(Debug)]
pub struct BackgroundRuntime {
    /// Always `Some` until dropped.
    runtime: Option<Runtime>,
}

impl BackgroundRuntime {
    /// `name` names every thread (Linux keeps the first 15 bytes); `nice` is 0 to 19 and
    /// ignored off Linux.
    pub fn new(
        name: &'static str,
        worker_threads: usize,
        max_blocking_threads: usize,
        nice: i32,
    ) -> std::io::Result<BackgroundRuntime> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(worker_threads.max(1))
            .max_blocking_threads(max_blocking_threads.max(1))
            .thread_name(name)
            .on_thread_start(move || lower_priority(name, nice))
            .enable_all()
            .build()?;
        Ok(BackgroundRuntime {
            runtime: Some(runtime),
        })
    }

    pub fn handle(&self) -> &Handle {
        match &self.runtime {
            Some(r) => r.handle(),
            // `runtime` is only taken in `drop`.
            None => unreachable!("a BackgroundRuntime is used after it was dropped"),
        }
    }

    /// Runs `work` on this runtime's threads.
    pub fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> JoinHandle<T> {
        self.handle().spawn(work)
    }
}

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one would panic; what still runs here is
        // abandoned, as its owner is gone.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Raises the calling thread's nice value.
#[cfg(target_os = "linux")]
fn lower_priority(name: &str, nice: i32) {
    if nice == 0 {
        return;
    }
    // `None` is the caller: on Linux, the calling thread, not the whole process.
    if let Err(e) = rustix::process::setpriority_process(None, nice) {
        tracing::warn!(error = %e, nice, thread = name, "cannot lower a thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_name: &str, _nice: i32) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The threads carry the name and the nice value, and dropping the runtime inside
    /// another one does not panic.
    #[tokio::test]
    async fn work_runs_on_named_threads_at_the_nice_value() {
        let rt = BackgroundRuntime::new("aiq-bg-test", 1, 1, 7).unwrap();
        let (name, nice) = rt
            .spawn(async {
                let name = std::thread::current().name().map(str::to_owned);
                #[cfg(target_os = "linux")]
                let nice = rustix::process::getpriority_process(None).unwrap();
                #[cfg(not(target_os = "linux"))]
                let nice = 7;
                (name, nice)
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("aiq-bg-test"));
        assert_eq!(nice, 7);
        drop(rt);
    }
}
