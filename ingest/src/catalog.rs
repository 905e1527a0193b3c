//! The catalog lives in the engine core, shared with the orchestrator; the follower that
//! fills it is `aiq_catalog`.

pub use aiq_catalog::{Catalog, CatalogError, Version};
