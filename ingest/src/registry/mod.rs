//! The workflow registry: versions stored in the CQL store, published to the compacted
//! definitions topic, and held in memory for the request path.

pub mod hooks;
pub mod service;
pub mod store;
