//! Rapport host library: the CRM server behind the `rapport` binary.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of modules and
//! the invariants they keep.
//!
//! Lints here enforce layering rules that types cannot (clippy.toml lists
//! what each `disallowed-*` rule forbids): SQL only in `store` and `db`,
//! wasmtime only in `runtime`; and no `unwrap`/`expect` outside tests,
//! since a panic on input a user or a plugin controls would be a defect.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod config;
#[allow(clippy::disallowed_methods)]
pub mod db;
pub mod delivery;
pub mod import;
pub mod manifest;
pub mod memory;
pub mod plugins;
#[allow(clippy::disallowed_types)]
pub mod runtime;
pub mod server;
#[allow(clippy::disallowed_methods)]
pub mod store;
pub mod telemetry;
