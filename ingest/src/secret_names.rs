//! The names of every tenant's secrets, followed from the secrets topic into memory, so
//! that listing them (the console's builder and administration pages) is a lookup, not a
//! consumer reading the whole topic on every request. The follower starts with the first
//! listing; each listing first waits until it has read everything the topic holds at that
//! moment, so a secret set or deleted just before is listed as it now is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aiq_kafka::{KafkaSettings, TailSync};
use aiq_stage::StageHandle;
use aiq_topics::TopicKind;
use tokio::sync::OnceCell;

use crate::erasure::ErasureError;

/// Longest a listing waits for the follower to reach the topic's present end.
const CATCH_UP: Duration = Duration::from_secs(10);
/// Longest the follower may take to read the topic once at its start.
const FIRST_READ: Duration = Duration::from_secs(30);

/// Tenant → its secrets' names. Names only: values stay sealed on the topic.
type Names = Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>;

/// A cheap handle; clones share one follower.
#[derive(Clone, Default)]
pub struct SecretNames {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    names: Names,
    follower: OnceCell<(StageHandle, TailSync)>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some((stage, _)) = self.follower.get() {
            stage.stop();
        }
    }
}

impl SecretNames {
    /// `tenant`'s secret names, sorted, as the topic holds them now.
    pub async fn of(
        &self,
        kafka: &KafkaSettings,
        tenant: &str,
    ) -> Result<Vec<String>, ErasureError> {
        let (_, sync) = self
            .inner
            .follower
            .get_or_try_init(|| follow(kafka, Arc::clone(&self.inner.names)))
            .await?;
        let sync = sync.clone();
        let caught_up = tokio::task::spawn_blocking(move || sync.catch_up_blocking(CATCH_UP))
            .await
            .unwrap_or(false);
        if !caught_up {
            return Err(ErasureError::Topic(format!(
                "the secrets topic was not read to its end within {} s",
                CATCH_UP.as_secs()
            )));
        }
        let names = self
            .inner
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(names
            .get(tenant)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }
}

/// Starts the follower and waits for its first read to the end.
async fn follow(
    kafka: &KafkaSettings,
    names: Names,
) -> Result<(StageHandle, TailSync), ErasureError> {
    let topic = kafka.topics().name(TopicKind::Secrets).to_owned();
    let mut tail = aiq_kafka::tail::tail_topic(kafka, &topic, move |r| {
        // Keys are `<tenant>/<name>`; neither part may hold a '/'.
        let Some((tenant, name)) = r
            .key
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.split_once('/'))
        else {
            return;
        };
        apply(&names, tenant, name, r.payload.is_some());
    })
    .await
    .map_err(|e| ErasureError::Topic(e.to_string()))?;
    let first = tokio::time::timeout(FIRST_READ, tail.caught_up()).await;
    if first.is_err() {
        tail.handle().stop();
        return Err(ErasureError::Topic(format!(
            "{topic} was not read to its end in {} s",
            FIRST_READ.as_secs()
        )));
    }
    Ok((tail.handle(), tail.sync()))
}

/// A record of the topic: a value sets the name, a tombstone removes it.
fn apply(names: &Names, tenant: &str, name: &str, set: bool) {
    let mut m = names.lock().unwrap_or_else(PoisonError::into_inner);
    if set {
        m.entry(tenant.to_owned())
            .or_default()
            .insert(name.to_owned());
    } else if let Some(s) = m.get_mut(tenant) {
        s.remove(name);
        if s.is_empty() {
            m.remove(tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_removes_a_name_and_an_empty_tenant() {
        let names = Names::default();
        apply(&names, "acme", "smtp", true);
        apply(&names, "acme", "api", true);
        apply(&names, "globex", "smtp", true);
        apply(&names, "acme", "smtp", false);
        apply(&names, "globex", "smtp", false);
        apply(&names, "initech", "never-set", false);
        let m = names.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(
            m.get("acme").map(|s| s.iter().cloned().collect::<Vec<_>>()),
            Some(vec!["api".to_owned()])
        );
        assert!(!m.contains_key("globex"));
        assert!(!m.contains_key("initech"));
    }
}
