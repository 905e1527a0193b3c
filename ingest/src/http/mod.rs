//! The HTTP API under `/v1`, described by the OpenAPI document at `/openapi.json`.
//! Routes and document are registered together (utoipa-axum), so they cannot drift.

mod api_keys;
mod audit;
mod body;
mod caller;
mod connectors;
mod dead_letters;
mod doc;
mod erasure;
mod exports;
mod health;
mod history;
mod hooks;
mod lifecycle;
mod me;
pub mod ops;
mod recovery;
mod rejection;
mod replays;
mod runs;
mod secrets;
mod signals;
mod sql;
mod tenants;
pub mod trail;
mod validate;
mod workflows;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use tokio::sync::watch;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use caller::{ACTING_TENANT, AuthFuture, Authenticate, auth_problem};

pub use crate::caller::Caller;

use crate::catalog::Catalog;
use crate::history::HistoryStore;
use crate::limits::TriggerLimiter;
use crate::publisher::Publisher;
use crate::registry::service::Registry;
use crate::registry::store::RegistryStore;
use crate::runs::Runs;
use crate::settings::IngestSettings;

/// Everything a request handler needs.
#[derive(Clone)]
pub struct App {
    pub registry: Registry,
    pub runs: Runs,
    pub store: RegistryStore,
    pub catalog: Arc<Catalog>,
    pub publisher: Publisher,
    pub limiter: Arc<TriggerLimiter>,
    pub auth: Arc<dyn Authenticate>,
    pub settings: Arc<IngestSettings>,
    /// True once the definitions topic has been read to its end.
    pub catalog_ready: watch::Receiver<bool>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Seals tenant secrets; None when `secrets.key_file` is not set.
    pub keyring: Option<Arc<aiq_secrets::Keyring>>,
    /// Webhook signing secrets: sealed in the store, cached here.
    pub hooks: Arc<crate::registry::hooks::WebhookSecrets>,
    /// Reads of the run history and audit tables the sink writes.
    pub history: HistoryStore,
    /// Replaying and resolving dead letters.
    pub dead_letters: crate::dead_letters::DeadLetters,
    /// Bulk replay jobs.
    pub replays: crate::replays::ReplayStore,
    /// The tenant registry: who exists, plans, suspensions.
    pub tenants: crate::tenants::Tenants,
    /// SQL over the Parquet history; None when this deployment serves no SQL (the SQL
    /// routes then answer 503).
    pub analytics: Option<Arc<aiq_analytics::Analytics>>,
    /// What the process's other stages report as keeping it from being ready
    /// (`/readyz` lists it).
    pub health: aiq_stage::Health,
    /// Erasing a tenant's data.
    pub erasure: crate::erasure::Erasure,
    /// Exporting a tenant's data; `None` without a history store to write archives to.
    pub exports: Option<crate::export::Exporter>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AutomateIQ",
        version = "1",
        description = "Register workflows, start runs, receive webhooks. Every route under /v1 \
                       but webhooks takes a bearer token or an API key; the tenant always \
                       comes from the credential."
    ),
    components(schemas(crate::problem::Problem, crate::problem::FieldError)),
    modifiers(&SecurityAddon),
    tags(
        (name = "workflows", description = "The workflow registry"),
        (name = "runs", description = "Starting, signalling and cancelling runs"),
        (name = "hooks", description = "Webhooks from outside systems"),
        (name = "api-keys", description = "The tenant's API keys"),
        (name = "secrets", description = "Connector credentials, sealed at rest; never readable"),
        (name = "sql", description = "SQL and ready reports over the tenant's run history"),
        (name = "audit", description = "Who changed the tenant's configuration"),
        (name = "replays", description = "Redrive or rerun many runs at once, chosen by SQL"),
        (name = "dead-letters", description = "Records the pipeline set aside: read, replay once, resolve"),
        (name = "tenants", description = "The tenant registry: onboarding, plans, suspension (platform admins)"),
        (name = "health", description = "Liveness and readiness (Prometheus metrics are on the operations listener, not here)"),
    )
)]
pub struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

fn api() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(workflows::register, workflows::list))
        .routes(routes!(workflows::get_version))
        .routes(routes!(lifecycle::disable))
        .routes(routes!(lifecycle::enable))
        .routes(routes!(lifecycle::delete))
        .routes(routes!(lifecycle::default_version))
        .routes(routes!(runs::start))
        .routes(routes!(history::list))
        .routes(routes!(history::get, erasure::erase_run))
        .routes(routes!(audit::list))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::get, dead_letters::resolve))
        .routes(routes!(dead_letters::replay))
        .routes(routes!(sql::query))
        .routes(routes!(sql::reports))
        .routes(routes!(sql::report))
        .routes(routes!(signals::signal))
        .routes(routes!(signals::cancel))
        .routes(routes!(recovery::redrive))
        .routes(routes!(recovery::rerun))
        .routes(routes!(replays::create))
        .routes(routes!(replays::get))
        .routes(routes!(replays::cancel))
        .routes(routes!(hooks::deliver))
        .routes(routes!(hooks::rotate_secret))
        .routes(routes!(secrets::put, secrets::delete))
        .routes(routes!(api_keys::create, api_keys::list))
        .routes(routes!(api_keys::revoke))
        .routes(routes!(tenants::create, tenants::list))
        .routes(routes!(tenants::get, tenants::update))
        .routes(routes!(tenants::suspend))
        .routes(routes!(tenants::resume))
        .routes(routes!(erasure::erase))
        .routes(routes!(exports::start))
        .routes(routes!(exports::get))
        .routes(routes!(exports::archive))
        .routes(routes!(me::me))
        .routes(routes!(connectors::list))
        .routes(routes!(validate::validate))
        .routes(routes!(connectors::secret_names))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
}

/// The OpenAPI document, built from the same registration as the routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api().split_for_parts().1;
    doc::finish(&mut doc);
    doc
}

/// The router and its OpenAPI document. Every error answer is a problem document,
/// axum's own rejections included ([`rejection`]).
pub fn router(app: App) -> (axum::Router, utoipa::openapi::OpenApi) {
    let max_body = app.settings.max_body_bytes;
    let sign_in = match (&app.settings.jwt_issuer, &app.settings.console_client_id) {
        (Some(issuer), Some(client_id)) => Some(aiq_console::SignIn {
            issuer: issuer.clone(),
            client_id: client_id.clone(),
            scope: app
                .settings
                .console_scope
                .clone()
                .unwrap_or_else(|| "openid".to_owned()),
            resource: app.settings.console_resource.clone(),
        }),
        _ => None,
    };
    let trail_state = app.clone();
    let (router, mut api) = api().with_state(app).split_for_parts();
    // Per route, so that the route's template (MatchedPath) names the call.
    let router = router.route_layer(axum::middleware::from_fn_with_state(
        trail_state,
        trail::record,
    ));
    doc::finish(&mut api);
    // Serialized once and shared: axum clones a handler, and what it captured, for
    // every request, and a cloned document cost ~4 KiB of allocations each.
    let doc = Bytes::from(serde_json::to_vec(&api).unwrap_or_default());
    let router = router
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(CONTENT_TYPE, "application/json")], doc) }
            }),
        )
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(rejection::problem_documents))
        // The web console: its page at `/`, its files under `/console/`.
        .merge(aiq_console::router(sign_in))
        // Handlers turned into routes now, once, instead of on every connection.
        .with_state(());
    (router, api)
}

/// Serves until `shutdown` resolves, then lets the requests in flight finish.
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, _) = router(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The stage's name.
pub const STAGE: &str = "ingest";

/// Serves `app` on `listener` as the stage "ingest" until it is stopped (then the
/// requests in flight finish, as with [`serve`]). It fails only if the listener does.
/// The stage also runs the bulk replay jobs (`crate::replays`), which it stops with it.
pub fn spawn(app: App, listener: tokio::net::TcpListener) -> aiq_stage::StageHandle {
    aiq_stage::spawn_task(STAGE, move |stop| async move {
        let replayer = crate::replays::Replayer {
            history: app.history.clone(),
            publisher: app.publisher.clone(),
            store: app.store.clone(),
            runs: app.runs.clone(),
        };
        let runner = crate::replays::spawn_runner(
            app.replays.clone(),
            replayer,
            crate::replays::RunnerSettings::default(),
        );
        let served = serve(app, listener, async move { stop.stopped().await }).await;
        runner.abort();
        served
    })
}

/// How long `/readyz` waits for Kafka's answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Every route and method the API serves; the document must list exactly these.
    const ROUTES: [(&str, &str); 49] = [
        ("/v1/tenants", "post"),
        ("/v1/tenants", "get"),
        ("/v1/tenants/{id}", "get"),
        ("/v1/tenants/{id}", "patch"),
        ("/v1/tenants/{id}/suspend", "post"),
        ("/v1/tenants/{id}/resume", "post"),
        ("/v1/workflows/{id}/disable", "post"),
        ("/v1/workflows/{id}/enable", "post"),
        ("/v1/workflows/{id}", "delete"),
        ("/v1/workflows/{id}/default-version", "put"),
        ("/v1/replays", "post"),
        ("/v1/replays/{id}", "get"),
        ("/v1/replays/{id}/cancel", "post"),
        ("/v1/runs/{run_id}/redrive", "post"),
        ("/v1/runs/{run_id}/rerun", "post"),
        ("/v1/dead-letters", "get"),
        ("/v1/dead-letters/{id}", "get"),
        ("/v1/dead-letters/{id}", "delete"),
        ("/v1/dead-letters/{id}/replay", "post"),
        ("/v1/sql", "post"),
        ("/v1/reports", "get"),
        ("/v1/reports/{name}", "get"),
        ("/v1/audit", "get"),
        ("/v1/runs", "get"),
        ("/v1/runs/{run_id}", "get"),
        ("/v1/runs/{run_id}", "delete"),
        ("/v1/me", "get"),
        ("/v1/connectors", "get"),
        ("/v1/workflows/validate", "post"),
        ("/v1/secrets", "get"),
        ("/healthz", "get"),
        ("/v1/api-keys", "get"),
        ("/v1/api-keys/{key_id}", "delete"),
        ("/v1/api-keys", "post"),
        ("/v1/runs/{run_id}/cancel", "post"),
        ("/v1/runs/{run_id}/signals/{name}", "post"),
        ("/readyz", "get"),
        ("/v1/hooks/{hook}/secret", "put"),
        ("/v1/secrets/{name}", "put"),
        ("/v1/secrets/{name}", "delete"),
        ("/v1/hooks/{tenant}/{hook}", "post"),
        ("/v1/workflows", "get"),
        ("/v1/workflows", "post"),
        ("/v1/workflows/{id}/runs", "post"),
        ("/v1/workflows/{id}/versions/{version}", "get"),
        ("/v1/tenants/{id}/data", "delete"),
        ("/v1/tenants/{id}/exports", "post"),
        ("/v1/exports/{id}", "get"),
        ("/v1/exports/{id}/archive", "get"),
    ];

    #[test]
    fn the_document_lists_every_route_and_parses_as_openapi_3_1() {
        let doc = serde_json::to_value(super::openapi()).unwrap();
        let mut listed = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                listed.insert((path.clone(), method.clone()));
            }
        }
        let expected: BTreeSet<(String, String)> = super::tests::ROUTES
            .iter()
            .map(|(p, m)| ((*p).to_owned(), (*m).to_owned()))
            .collect();
        assert_eq!(listed, expected);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        // A structural check by an independent OpenAPI 3.1 model.
        let parsed: oas3::OpenApiV3Spec = serde_json::from_value(doc.clone()).unwrap();
        let distinct_paths: BTreeSet<&str> = ROUTES.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            parsed.paths.as_ref().map(|p| p.len()),
            Some(distinct_paths.len())
        );
        // Every operation that is not a webhook or health check names a security scheme.
        for (path, method) in &expected {
            let op = &doc["paths"][path][method];
            let public = path.starts_with("/v1/hooks/{tenant}") || !path.starts_with("/v1");
            assert_eq!(op["security"].is_array(), !public, "{method} {path}");
        }
    }
}
