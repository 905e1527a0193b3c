//! Builds the ingest stage from configuration: store, publisher, limits and the
//! authenticator, over the catalog of the definitions follower (`aiq_catalog`: one per
//! process, shared with an orchestrator running beside it). [`build`] gives the
//! [`Ingest`]; `crate::spawn` serves its app as the stage "ingest".

use std::sync::Arc;

use aiq_catalog::Definitions;
use aiq_kafka::KafkaSettings;
use aiq_sql::{CqlSettings, SchemaError};

use crate::history::{HistoryError, HistoryStore};
use crate::http::{App, Authenticate};
use crate::limits::TriggerLimiter;
use crate::publisher::{PublishError, Publisher};
use crate::registry::service::Registry;
use crate::registry::store::{RegistryStore, StoreError};
use crate::runs::Runs;
use crate::settings::IngestSettings;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Cql(#[from] SchemaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publisher(#[from] PublishError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Replays(#[from] crate::replays::StoreError),
    #[error("following the queue-state topic: {0}")]
    Queues(#[from] aiq_kafka::KafkaError),
    #[error("the Parquet history's root: {0}")]
    Files(String),
}

/// The stage's parts, built and not yet serving: `crate::spawn(ingest.app, listener)`
/// serves them.
pub struct Ingest {
    pub app: App,
}

/// The process's followers of compacted topics that ingest reads.
#[derive(Clone, Copy)]
pub struct Followers<'a> {
    pub definitions: &'a Definitions,
    /// `None`: no tenant is registered (only `ingest.open_tenants` lets tenants in).
    pub tenants: Option<&'a aiq_tenants::Tenants>,
    /// The data-keys follower: trigger inputs and signal payloads are sealed with it,
    /// run payloads read back opened. `None`: nothing is sealed.
    pub vault: Option<&'a Arc<aiq_vault::Vault>>,
}

/// The App over `cql`'s keyspace and `kafka`'s topics, reading workflows from
/// `definitions` (whose follower must keep running while the App serves: `/readyz`
/// reports its progress). `analytics` serves `/v1/sql` and the reports; without it those
/// routes answer 503. `tenants` is the process's registry follower; without one no
/// tenant is registered (only `ingest.open_tenants` then lets tenants in).
pub async fn build(
    kafka: &KafkaSettings,
    cql: &CqlSettings,
    settings: IngestSettings,
    jwt: aiq_auth::JwtVerifier,
    keyring: Option<Arc<aiq_secrets::Keyring>>,
    followers: Followers<'_>,
    analytics: Option<Arc<aiq_analytics::Analytics>>,
) -> Result<Ingest, BootError> {
    let Followers {
        definitions,
        tenants,
        vault,
    } = followers;
    let vault = vault.map_or_else(aiq_vault::Vault::off, Arc::clone);
    let session = Arc::new(aiq_sql::connect(cql).await?);
    let store = RegistryStore::new(Arc::clone(&session), &cql.keyspace).await?;
    let history = HistoryStore::new(Arc::clone(&session), &cql.keyspace)
        .await?
        .with_vault(Arc::clone(&vault));
    let publisher = Publisher::new(kafka, settings.ack_timeout())?.with_vault(Arc::clone(&vault));
    let files = match &analytics {
        Some(a) => {
            let s = a.settings();
            Some(aiq_history_store::HistoryFiles::new(
                s.root
                    .parse(&s.store_options)
                    .map_err(|e| BootError::Files(e.to_string()))?,
            ))
        }
        None => None,
    };
    let exports = match &files {
        Some(files) => Some(crate::export::Exporter {
            kafka: kafka.clone(),
            history: history.clone(),
            registry: store.clone(),
            catalog: Arc::clone(&definitions.catalog),
            files: files.clone(),
            jobs: crate::export::ExportStore::new(Arc::clone(&session), &cql.keyspace).await?,
            slots: Arc::new(tokio::sync::Semaphore::new(
                settings.max_concurrent_exports.max(1),
            )),
        }),
        None => None,
    };
    let erasure = crate::erasure::Erasure {
        kafka: kafka.clone(),
        vault,
        files,
        secret_names: crate::secret_names::SecretNames::default(),
    };
    let replays = crate::replays::ReplayStore::new(Arc::clone(&session), &cql.keyspace).await?;
    let dead_letters = crate::dead_letters::DeadLetters::new(
        session,
        &cql.keyspace,
        history.clone(),
        publisher.clone(),
    )
    .await?;
    let catalog = Arc::clone(&definitions.catalog);
    let auth: Arc<dyn Authenticate> = Arc::new(aiq_auth::Authenticator::new(
        jwt,
        Arc::new(crate::api_keys::CqlApiKeys(store.clone())),
    ));
    let directory = tenants.map_or_else(Arc::default, |t| Arc::clone(&t.directory));
    let mut tenants = crate::tenants::Tenants::new(
        Arc::clone(&directory),
        tenants.map(|t| t.tail.sync()),
        publisher.clone(),
        store.clone(),
        settings.open_tenants,
    );
    tenants.reserved_issuers = settings.configured_issuers();
    let limiter = Arc::new(TriggerLimiter::new(
        settings.trigger_quota,
        settings.quota_overrides(),
        Arc::clone(&directory),
    ));
    let settings = Arc::new(settings);
    let hooks = Arc::new(crate::registry::hooks::WebhookSecrets::new(
        store.clone(),
        keyring.clone(),
    ));
    let app = App {
        registry: Registry {
            store: store.clone(),
            publisher: publisher.clone(),
            catalog: Arc::clone(&catalog),
        },
        runs: Runs {
            store: store.clone(),
            publisher: publisher.clone(),
            catalog: Arc::clone(&catalog),
            stale_after: std::time::Duration::from_millis(settings.idempotency_stale_after_ms),
            max_input_bytes: settings.max_trigger_input_bytes,
            queues: crate::queues::follow(kafka).await?,
            tenants: Arc::clone(&directory),
        },
        tenants,
        store,
        catalog,
        publisher,
        limiter,
        auth,
        settings,
        catalog_ready: definitions.tail.watch(),
        metrics: Arc::new(crate::metrics::Metrics::new()),
        hooks,
        keyring,
        history,
        dead_letters,
        replays,
        analytics,
        health: aiq_stage::Health::new(),
        erasure,
        exports,
    };
    Ok(Ingest { app })
}
