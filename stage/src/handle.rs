//! [`StageHandle`], [`StopSignal`] and the two ways to run a stage's body.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// How a stage ended when it did not end cleanly.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the {stage} stage failed: {source}")]
pub struct StageFailure {
    pub stage: &'static str,
    /// The stage's own typed error, kept whole for `downcast_ref`.
    #[source]
    pub source: Arc<dyn std::error::Error + Send + Sync + 'static>,
}

impl StageFailure {
    pub fn new(stage: &'static str, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            stage,
            source: Arc::new(error),
        }
    }

    /// The stage's own error, if it is of type `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.source.downcast_ref::<E>()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("panicked: {0}")]
struct Panicked(String);

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

type Outcome = Result<(), StageFailure>;

/// Where a stage's outcome is kept: readable from async code (the watch) and from
/// plain threads (the condvar), since the orchestrator's callers include both.
struct Ended {
    outcome: Mutex<Option<Outcome>>,
    changed: Condvar,
    done: watch::Sender<bool>,
}

impl Ended {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            outcome: Mutex::new(None),
            changed: Condvar::new(),
            done: watch::Sender::new(false),
        })
    }

    fn set(&self, stage: &'static str, outcome: Outcome) {
        // "<stage> stopped" / "<stage> failed": one wording for every stage, which
        // operators (and the binary's tests) look for in the log.
        match &outcome {
            Ok(()) => tracing::info!(stage, "{stage} stopped"),
            Err(e) => tracing::error!(stage, error = %e.source, "{stage} failed"),
        }
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        self.changed.notify_all();
        self.done.send_replace(true);
    }

    fn get(&self) -> Option<Outcome> {
        self.outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What a stage's body watches to know it should end.
#[derive(Clone)]
pub struct StopSignal {
    rx: watch::Receiver<bool>,
}

impl StopSignal {
    /// Whether a stop was asked for (or every handle dropped).
    pub fn is_stopped(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once a stop is asked for.
    pub async fn stopped(&self) {
        let mut rx = self.rx.clone();
        // An error means every handle is gone: that is a stop too.
        let _ = rx.wait_for(|s| *s).await;
    }
}

struct Control {
    name: &'static str,
    stop: watch::Sender<bool>,
    ended: Arc<Ended>,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// A cheap handle on a running stage. Clones share the stage; the stage is asked to
/// stop when the last clone is dropped.
#[derive(Clone)]
pub struct StageHandle {
    control: Arc<Control>,
}

impl std::fmt::Debug for StageHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageHandle")
            .field("name", &self.control.name)
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl StageHandle {
    fn new(name: &'static str) -> (Self, StopSignal, Arc<Ended>) {
        let (stop, rx) = watch::channel(false);
        let ended = Ended::new();
        let handle = Self {
            control: Arc::new(Control {
                name,
                stop,
                ended: Arc::clone(&ended),
            }),
        };
        (handle, StopSignal { rx }, ended)
    }

    pub fn name(&self) -> &'static str {
        self.control.name
    }

    /// Asks the stage to finish what it holds and end; returns at once.
    pub fn stop(&self) {
        self.control.stop.send_replace(true);
    }

    /// Whether the stage has ended (on its own or after `stop`).
    pub fn is_finished(&self) -> bool {
        *self.control.ended.done.borrow()
    }

    /// Waits until the stage has ended and says how.
    pub async fn finished(&self) -> Result<(), StageFailure> {
        let mut done = self.control.ended.done.subscribe();
        let _ = done.wait_for(|d| *d).await;
        self.control.ended.get().unwrap_or(Ok(()))
    }

    /// `stop`, then `finished`.
    pub async fn shutdown(&self) -> Result<(), StageFailure> {
        self.stop();
        self.finished().await
    }

    /// `finished` for code outside an async runtime; `None` if `timeout` passed first.
    pub fn wait_blocking(&self, timeout: Option<Duration>) -> Option<Result<(), StageFailure>> {
        let ended = &self.control.ended;
        let guard = ended.outcome.lock().unwrap_or_else(|p| p.into_inner());
        let guard = match timeout {
            None => ended
                .changed
                .wait_while(guard, |o| o.is_none())
                .unwrap_or_else(|p| p.into_inner()),
            Some(t) => {
                ended
                    .changed
                    .wait_timeout_while(guard, t, |o| o.is_none())
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        };
        guard.clone()
    }

    /// `stop`, then `wait_blocking` without a timeout.
    pub fn shutdown_blocking(&self) -> Result<(), StageFailure> {
        self.stop();
        self.wait_blocking(None).unwrap_or(Ok(()))
    }
}

/// Runs `body` as a tokio task on the current runtime. A panic becomes a failure.
pub fn spawn_task<B, F, E>(name: &'static str, body: B) -> StageHandle
where
    B: FnOnce(StopSignal) -> F,
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let (handle, signal, ended) = StageHandle::new(name);
    let task = tokio::spawn(body(signal));
    tokio::spawn(async move {
        let outcome = match task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StageFailure::new(name, e)),
            Err(join) if join.is_panic() => Err(StageFailure::new(
                name,
                Panicked(panic_message(&*join.into_panic())),
            )),
            Err(_) => Err(StageFailure::new(
                name,
                Panicked("the task was cancelled".into()),
            )),
        };
        ended.set(name, outcome);
    });
    handle
}

/// Runs `body` on a thread of its own named `thread_name`. A panic becomes a failure.
pub fn spawn_thread<B, E>(
    name: &'static str,
    thread_name: String,
    body: B,
) -> Result<StageHandle, std::io::Error>
where
    B: FnOnce(StopSignal) -> Result<(), E> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let (handle, signal, ended) = StageHandle::new(name);
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| body(signal))) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(StageFailure::new(name, e)),
                Err(payload) => Err(StageFailure::new(name, Panicked(panic_message(&*payload)))),
            };
            ended.set(name, outcome);
        })?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error, PartialEq)]
    #[error("boom {0}")]
    struct Boom(u32);

    #[tokio::test]
    async fn a_task_stops_when_asked_and_reports_ok() {
        let h = spawn_task("t", |stop| async move {
            stop.stopped().await;
            Ok::<_, Boom>(())
        });
        assert!(!h.is_finished());
        h.shutdown().await.unwrap();
        assert!(h.is_finished());
    }

    #[tokio::test]
    async fn a_failure_keeps_the_typed_error() {
        let h = spawn_task("t", |_| async { Err(Boom(7)) });
        let e = h.finished().await.unwrap_err();
        assert_eq!(e.stage, "t");
        assert_eq!(e.downcast_ref::<Boom>(), Some(&Boom(7)));
        assert_eq!(e.to_string(), "the t stage failed: boom 7");
    }

    #[tokio::test]
    async fn a_panic_is_a_failure() {
        let h = spawn_task("t", |_| async {
            if true {
                panic!("no");
            }
            Ok::<_, Boom>(())
        });
        let e = h.finished().await.unwrap_err();
        assert!(e.to_string().contains("panicked: no"), "{e}");
    }

    #[test]
    fn a_thread_is_waited_for_without_a_runtime() {
        let h = spawn_thread("th", "th-test".into(), |stop| {
            while !stop.is_stopped() {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(Boom(1))
        })
        .unwrap();
        assert!(h.wait_blocking(Some(Duration::from_millis(20))).is_none());
        let e = h.shutdown_blocking().unwrap_err();
        assert_eq!(e.downcast_ref::<Boom>(), Some(&Boom(1)));
    }

    #[test]
    fn dropping_every_handle_stops_the_stage() {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = spawn_thread("th", "th-drop".into(), move |stop| {
            while !stop.is_stopped() {
                std::thread::sleep(Duration::from_millis(1));
            }
            tx.send(()).ok();
            Ok::<_, Boom>(())
        })
        .unwrap();
        let clone = h.clone();
        drop(h);
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        drop(clone);
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }
}
