//! The notifier: delivers the notifications the orchestrator wrote when runs ended
//! (`aiq_topics::notification`), by a signed webhook (the `http` connector with
//! `args.sign`) and/or an email (the `email` connector), through the same outbound
//! guard, breakers and secrets as any task. Each attempt is reported as a step event of
//! the run (`aiq.notify.webhook`, `aiq.notify.email`): `retrying` then `succeeded` or
//! `failed`, so the run's history shows what was delivered.
//!
//! A failed attempt is tried again after 1, 2, 4 and 8 seconds (five attempts); a
//! `fatal` answer (a 4xx, a bad address) is not. Deliveries run concurrently, at most
//! [`MAX_IN_FLIGHT`] at once and [`MAX_PER_TENANT`] per tenant, so one tenant's dead
//! receiver holds only its own share; records are read only while fewer than
//! [`MAX_ACCEPTED`] wait or run. An offset is committed once every notification before
//! it is delivered or given up (a crash delivers again: receivers dedupe on
//! `Idempotency-Key`, which names the run, the channel and the attempt).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiq_connectors::Connectors;
use aiq_stage::StopSignal;
use aiq_topics::notification::{EMAIL_STEP, WEBHOOK_STEP};
use aiq_topics::{
    ErrorClass, Event, Failure, Notification, StepEvent, StepId, StepStatus, TaskMessage,
    TaskOutcome, TenantId,
};
use chrono::Utc;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::commits::{TaskConsumer, lock, store};
use crate::offsets::{Pending, Ticket};

/// Deliveries running at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Deliveries of one tenant running at once.
pub const MAX_PER_TENANT: usize = 8;
/// Notifications read and not yet delivered or given up.
pub const MAX_ACCEPTED: usize = 1_024;
/// Attempts per channel.
pub const MAX_ATTEMPTS: u32 = 5;
/// How long one attempt may take.
const ATTEMPT_TIMEOUT_MS: u64 = 10_000;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

pub struct Notifier {
    pub(crate) consumer: Arc<TaskConsumer>,
    pub(crate) pending: Arc<Mutex<Pending>>,
    pub(crate) connectors: Connectors,
    pub(crate) producer: FutureProducer,
    pub(crate) events: String,
    pub(crate) store_every: Duration,
    /// Opens the run's error message for the webhook and the email; seals the
    /// deliveries' own error messages.
    pub(crate) vault: Arc<aiq_vault::Vault>,
}

struct Limits {
    accepted: Arc<Semaphore>,
    in_flight: Arc<Semaphore>,
    tenants: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
}

impl Limits {
    fn tenant(&self, t: &TenantId) -> Arc<Semaphore> {
        let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        // Tenants with nothing in flight are forgotten, so the map stays small.
        map.retain(|_, s| s.available_permits() < MAX_PER_TENANT);
        Arc::clone(
            map.entry(t.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(MAX_PER_TENANT))),
        )
    }
}

impl Notifier {
    pub(crate) async fn run(self, stop: StopSignal) {
        let this = Arc::new(self);
        let limits = Arc::new(Limits {
            accepted: Arc::new(Semaphore::new(MAX_ACCEPTED)),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            tenants: Mutex::default(),
        });
        let storer = {
            let this = Arc::clone(&this);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(this.store_every);
                loop {
                    tick.tick().await;
                    store(&this.consumer, &this.pending);
                }
            })
        };
        loop {
            let accepted = tokio::select! {
                p = Arc::clone(&limits.accepted).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = stop.stopped() => break,
            };
            let msg = tokio::select! {
                m = this.consumer.recv() => m,
                () = stop.stopped() => break,
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "notification consumer error");
                    continue;
                }
            };
            let ticket = lock(&this.pending).started(msg.partition(), msg.offset());
            let decoded = msg.payload().map(Notification::decode);
            let Some(Ok(mut n)) = decoded else {
                tracing::warn!(
                    partition = msg.partition(),
                    offset = msg.offset(),
                    "a notification that does not decode is passed over"
                );
                lock(&this.pending).finished(ticket);
                continue;
            };
            let (this, limits) = (Arc::clone(&this), Arc::clone(&limits));
            tokio::spawn(async move {
                if let Some(f) = &mut n.error {
                    let sealed = serde_json::Value::String(std::mem::take(&mut f.message));
                    f.message = match this.vault.open_field(&n.tenant, "message", sealed).await {
                        Ok(serde_json::Value::String(m)) => m,
                        Ok(_) | Err(_) => "(the error message could not be opened)".into(),
                    };
                }
                let tenant = limits.tenant(&n.tenant);
                if let (Ok(_t), Ok(_g)) = (
                    tenant.acquire_owned().await,
                    Arc::clone(&limits.in_flight).acquire_owned().await,
                ) {
                    this.deliver(&n).await;
                }
                this.done(ticket);
                drop(accepted);
            });
        }
        storer.abort();
        store(&this.consumer, &this.pending);
        let consumer = Arc::clone(&this.consumer);
        drop(this);
        let _ = tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
    }

    fn done(&self, ticket: Ticket) {
        lock(&self.pending).finished(ticket);
    }

    async fn deliver(&self, n: &Notification) {
        if let Some(w) = &n.spec.webhook {
            let mut args = json!({"method": "POST", "url": w.url, "json": n.body(),
                                  "follow_redirects": false});
            if let Some(secret) = &w.secret {
                args["sign"] = json!({"secret": secret});
            }
            self.channel(n, WEBHOOK_STEP, "http", args).await;
        }
        if let Some(e) = &n.spec.email {
            let mut args = e.clone();
            if let Value::Object(m) = &mut args {
                m.entry("subject").or_insert_with(|| {
                    json!(format!("[AutomateIQ] {} {}", n.workflow, n.status.as_str()))
                });
                m.entry("text").or_insert_with(|| json!(email_text(n)));
            }
            self.channel(n, EMAIL_STEP, "email", args).await;
        }
    }

    /// Delivers on one channel, attempt after attempt, reporting each.
    async fn channel(&self, n: &Notification, step: &str, connector: &str, args: Value) {
        let Ok(step) = StepId::new(step) else { return };
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            let task = TaskMessage {
                tenant: n.tenant.clone(),
                run: n.run,
                step: step.clone(),
                attempt,
                connector: connector.to_owned(),
                args: args.clone(),
                timeout_ms: ATTEMPT_TIMEOUT_MS,
                dispatched_at: Utc::now(),
                expires_at: None,
            };
            let started = std::time::Instant::now();
            let outcome = self.connectors.call(&task).await;
            let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let (status, error) = match outcome {
                TaskOutcome::Ok { .. } => (StepStatus::Succeeded, None),
                TaskOutcome::Error { class, message } => {
                    let last = attempt == MAX_ATTEMPTS || class == ErrorClass::Fatal;
                    let status = if last {
                        StepStatus::Failed
                    } else {
                        StepStatus::Retrying
                    };
                    (
                        status,
                        Some(Failure {
                            class,
                            message,
                            step: Some(step.clone()),
                        }),
                    )
                }
            };
            self.report(n, &step, connector, attempt, status, error, took)
                .await;
            if status != StepStatus::Retrying {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn report(
        &self,
        n: &Notification,
        step: &StepId,
        connector: &str,
        attempt: u32,
        status: StepStatus,
        error: Option<Failure>,
        duration_ms: u64,
    ) {
        let mut error = error;
        if let Some(f) = &mut error
            && self.vault.is_on()
        {
            f.message = match self.vault.ensure(&n.tenant).await {
                Ok(()) => self
                    .vault
                    .seal_text(&n.tenant, "message", &f.message)
                    .unwrap_or_default(),
                Err(_) => String::new(),
            };
        }
        let e = Event::Step(StepEvent {
            tenant: n.tenant.clone(),
            run: n.run,
            step: step.clone(),
            attempt,
            status,
            at: Utc::now(),
            kind: "notify".into(),
            connector: Some(connector.to_owned()),
            error,
            iteration: None,
            duration_ms: Some(duration_ms),
            output_bytes: None,
        });
        let payload = e.encode();
        let record = FutureRecord::to(&self.events)
            .key(n.tenant.as_str())
            .payload(&payload);
        if let Err((err, _)) = self.producer.send(record, Duration::from_secs(30)).await {
            tracing::warn!(run = %n.run, error = %err, "notification outcome not recorded");
        }
    }
}

fn email_text(n: &Notification) -> String {
    let mut text = format!(
        "Run {} of workflow {} (version {}) ended {} at {}.",
        n.run,
        n.workflow,
        n.version,
        n.status.as_str(),
        n.at.to_rfc3339()
    );
    if let Some(e) = &n.error {
        text.push_str(&format!("\n\nError ({}): {}", e.class.as_str(), e.message));
        if let Some(s) = &e.step {
            text.push_str(&format!("\nStep: {s}"));
        }
    }
    text
}
