//! One module per command.

pub mod check;
pub mod dead_letters;
pub mod replay;
pub mod schema;
pub mod serve;
pub mod show_config;
pub mod sql;
pub mod tenants;
pub mod token;
pub mod topics;
pub mod workflows;
