//! [`Stages`]: what runs several stages in one process waits on.

use std::future::Future;

use crate::{StageFailure, StageHandle};

/// The stages of one process, in start order.
#[derive(Default)]
pub struct Stages {
    handles: Vec<StageHandle>,
}

impl Stages {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, stage: StageHandle) {
        tracing::info!(stage = stage.name(), "{} started", stage.name());
        self.handles.push(stage);
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.handles.iter().map(StageHandle::name).collect()
    }

    /// Waits until one stage ends on its own, or `shutdown` resolves (a signal); returns
    /// the name of the stage that ended, if one did. Every stage is watched: none may die
    /// unnoticed while the others keep the process alive.
    pub async fn until_first_ends(
        &self,
        shutdown: impl Future<Output = ()>,
    ) -> Option<&'static str> {
        if self.handles.is_empty() {
            shutdown.await;
            return None;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(self.handles.len());
        let watchers: Vec<_> = self
            .handles
            .iter()
            .map(|h| {
                let h = h.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = h.finished().await;
                    let _ = tx.send(h.name()).await;
                })
            })
            .collect();
        let ended = tokio::select! {
            name = rx.recv() => name,
            () = shutdown => None,
        };
        for w in watchers {
            w.abort();
        }
        ended
    }

    /// Stops the stages in reverse start order (the last started depends on the earlier
    /// ones), each after the one before has finished, and returns every failure.
    pub async fn stop_all(self) -> Vec<StageFailure> {
        let mut failures = Vec::new();
        for h in self.handles.into_iter().rev() {
            if let Err(e) = h.shutdown().await {
                failures.push(e);
            }
        }
        failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn_task;

    #[derive(Debug, thiserror::Error)]
    #[error("gone")]
    struct Gone;

    #[tokio::test]
    async fn the_first_stage_to_end_is_named_and_the_rest_are_stopped() {
        let mut stages = Stages::new();
        stages.push(spawn_task("waits", |stop| async move {
            stop.stopped().await;
            Ok::<_, Gone>(())
        }));
        stages.push(spawn_task("dies", |_| async { Err(Gone) }));
        let ended = stages.until_first_ends(std::future::pending()).await;
        assert_eq!(ended, Some("dies"));
        let failures = stages.stop_all().await;
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].stage, "dies");
    }

    #[tokio::test]
    async fn a_shutdown_signal_ends_the_wait() {
        let mut stages = Stages::new();
        stages.push(spawn_task("waits", |stop| async move {
            stop.stopped().await;
            Ok::<_, Gone>(())
        }));
        assert_eq!(stages.until_first_ends(async {}).await, None);
        assert!(stages.stop_all().await.is_empty());
    }
}
