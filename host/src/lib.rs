//! Rapport host library: the CRM server behind the `rapport` binary.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of modules and
//! the invariants they keep.

pub mod api;
pub mod config;
pub mod db;
pub mod delivery;
pub mod import;
pub mod manifest;
pub mod memory;
pub mod plugins;
pub mod runtime;
pub mod server;
pub mod store;
pub mod telemetry;
