//! The catalog lives in the engine core, shared with the orchestrator.

pub use aiq_engine::catalog::{Catalog, CatalogError, Version};
