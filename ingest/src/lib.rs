//! Ingest: how producers and tenant users get work into the pipeline.
//!
//! An axum service under `/v1`: the workflow registry, API and manual triggers, webhooks,
//! health. Every request is authenticated (`aiq-auth`), scoped to the caller's tenant,
//! rate-limited per tenant, and answered only after Kafka has acknowledged what it wrote.
//!
//! Built like every stage, from its settings: [`bootstrap::build`] makes the
//! [`bootstrap::Ingest`] over the catalog of the definitions follower
//! (`aiq_catalog::spawn`, which ingest shares and does not own), and [`spawn`] serves its
//! app on a listener as the stage "ingest", an `aiq_stage::StageHandle`.

pub mod api_keys;
pub mod audit;
pub mod bootstrap;
pub mod caller;
pub mod catalog;
pub mod dead_letters;
pub mod erasure;
pub mod export;
pub mod history;
pub mod http;
pub mod limits;
mod lwt;
pub mod metrics;
pub mod problem;
pub mod publisher;
pub mod queues;
pub mod recovery;
pub mod registry;
pub mod replays;
pub mod run_erasure;
pub mod runs;
pub mod secret_names;
pub mod settings;
pub mod signature;
pub mod tenants;

pub use http::spawn;
