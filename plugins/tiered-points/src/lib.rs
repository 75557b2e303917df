//! Tiered points: the business logic of the first-party `reward-scheme`
//! plugin, as plain Rust so it is unit-tested natively and compiles for
//! `wasm32-wasip2` unchanged.
//!
//! Customers earn points on purchases at a rate set by their tier; the tier
//! follows their rolling 12-month spend (up immediately, down as soon as the
//! spend falls below the threshold); points expire `expiry_days` after the
//! purchase; the first purchase earns a welcome bonus; refunds claw points
//! back. The binding layer maps the WIT records onto [`types`] and calls
//! [`on_interaction`] and [`redeemable`].

pub mod component;
mod config;
mod earn;
mod money;
mod redeem;
mod tiers;
pub mod types;

pub use config::{Config, TierRule};
pub use earn::on_interaction;
pub use redeem::redeemable;
pub use types::{
    AdjustIntent, EarnIntent, Interaction, InteractionContext, LedgerIntent, LoyaltyAccount, Money, Outcome, Reward,
    Tier, TierChange,
};

/// Why a call failed; maps one to one onto the WIT `plugin-error` cases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The tenant's configuration is unusable (WIT `invalid-config`).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The input cannot be handled (WIT `invalid-input`).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}
