//! Co-purchase cross-sell: the business logic of the first-party `cross-sell`
//! plugin, as plain Rust so it is unit-tested natively and compiles for
//! `wasm32-wasip2` unchanged.
//!
//! The model is a set of item-to-item association rules A → B (one SKU on
//! each side) mined from a tenant's purchase baskets, with the same support,
//! confidence, lift, leverage and conviction as mlxtend's
//! `association_rules` (proved by `tests/mlxtend_parity.rs`). The binding
//! layer only has to map WIT records onto [`fit`] and [`recommend`] and keep
//! the serialised [`Model`] in the plugin's key-value store.

mod baskets;
pub mod component;
mod config;
mod fit;
mod model;
mod recommend;

pub use baskets::{Purchase, group_baskets};
pub use config::{BasketMode, Config, ConfigError};
pub use fit::{FitSummary, fit, fit_with_summary};
pub use model::{Model, ModelError, Rule};
pub use recommend::{Recommendation, Recommender, recommend};
