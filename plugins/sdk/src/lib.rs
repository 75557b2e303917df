//! Guest SDK for Rapport plugins (WebAssembly components implementing the
//! `rapport:crm@0.1.0` contract).
//!
//! A plugin's own code is its business logic over plain Rust types: it
//! implements one trait ([`ScoringRule`], [`CrossSell`], [`RewardScheme`],
//! [`ChannelConnector`]) on a unit struct and exports it with the matching
//! macro ([`export_scoring_rule!`], ...). The SDK owns everything that
//! touches the component model: the `wit_bindgen` bindings (compiled for
//! wasm32 only), conversions between generated and plain types, and typed
//! wrappers over the host capabilities ([`config()`], [`kv`], [`log`],
//! [`host`]).
//!
//! Scoring and cross-sell plugins receive a customer's [`History`]: its
//! entries ([`HistoryEntry`]) name their kind, channel, currencies and SKUs
//! with [`Name`]s, shared reference-counted strings, because the contract
//! sends each distinct string of a history once (see [`history`]). Compare
//! them like strings (`entry.kind == "purchase"`); build histories for tests
//! with [`History::new`] and the `HistoryEntry` builders.
//!
//! Natively (`cargo test` in a plugin crate) there are no bindings: the
//! export macros only check that the type implements the trait, and the
//! capabilities are served by the in-process double in [`testing`]
//! (settable config, in-memory kv, captured logs), so code that reads its
//! config or model is unit-testable without a component runtime.

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod bindings;
mod config;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest;
pub mod history;
pub mod host;
pub mod kv;
pub mod log;
pub mod money;
pub mod standard_webhooks;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod traits;
pub mod types;

pub use config::{config, config_json, parse_config};
pub use traits::{ChannelConnector, CrossSell, FIT_CHUNK_MAX, RewardScheme, ScoringRule};
pub use types::*;

/// Re-exported for plugins that want `serde_json::Value` without their own
/// dependency.
pub use serde_json;

/// Exports a [`ScoringRule`] implementation as the component's `scoring`
/// interface (world `scoring-rule`). Invoke once, in the plugin crate.
///
/// ```ignore
/// rapport_plugin_sdk::export_scoring_rule!(MyRule);
/// ```
#[cfg(target_arch = "wasm32")]
#[macro_export]
macro_rules! export_scoring_rule {
    ($ty:ty) => {
        const _: () = {
            type __RapportExport = $crate::guest::ScoringAdapter<$ty>;
            $crate::__export_scoring_rule_impl!(
                __RapportExport with_types_in $crate::bindings::scoring_rule
            );
        };
    };
}

/// Exports a [`CrossSell`] implementation (world `cross-sell`).
#[cfg(target_arch = "wasm32")]
#[macro_export]
macro_rules! export_cross_sell {
    ($ty:ty) => {
        const _: () = {
            type __RapportExport = $crate::guest::CrossSellAdapter<$ty>;
            $crate::__export_cross_sell_impl!(
                __RapportExport with_types_in $crate::bindings::cross_sell
            );
        };
    };
}

/// Exports a [`RewardScheme`] implementation (world `reward-scheme`).
#[cfg(target_arch = "wasm32")]
#[macro_export]
macro_rules! export_reward_scheme {
    ($ty:ty) => {
        const _: () = {
            type __RapportExport = $crate::guest::RewardAdapter<$ty>;
            $crate::__export_reward_scheme_impl!(
                __RapportExport with_types_in $crate::bindings::reward_scheme
            );
        };
    };
}

/// Exports a [`ChannelConnector`] implementation (world
/// `channel-connector`).
#[cfg(target_arch = "wasm32")]
#[macro_export]
macro_rules! export_channel_connector {
    ($ty:ty) => {
        const _: () = {
            type __RapportExport = $crate::guest::ChannelAdapter<$ty>;
            $crate::__export_channel_connector_impl!(
                __RapportExport with_types_in $crate::bindings::channel_connector
            );
        };
    };
}

// Native builds: nothing to export, but the macro still checks that the
// type implements the trait, so a plugin's `cargo test` catches it.

#[cfg(not(target_arch = "wasm32"))]
#[macro_export]
macro_rules! export_scoring_rule {
    ($ty:ty) => {
        const _: fn() = || {
            fn implements<T: $crate::ScoringRule>() {}
            implements::<$ty>();
        };
    };
}

#[cfg(not(target_arch = "wasm32"))]
#[macro_export]
macro_rules! export_cross_sell {
    ($ty:ty) => {
        const _: fn() = || {
            fn implements<T: $crate::CrossSell>() {}
            implements::<$ty>();
        };
    };
}

#[cfg(not(target_arch = "wasm32"))]
#[macro_export]
macro_rules! export_reward_scheme {
    ($ty:ty) => {
        const _: fn() = || {
            fn implements<T: $crate::RewardScheme>() {}
            implements::<$ty>();
        };
    };
}

#[cfg(not(target_arch = "wasm32"))]
#[macro_export]
macro_rules! export_channel_connector {
    ($ty:ty) => {
        const _: fn() = || {
            fn implements<T: $crate::ChannelConnector>() {}
            implements::<$ty>();
        };
    };
}
