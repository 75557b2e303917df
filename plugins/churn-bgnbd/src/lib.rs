//! BG/NBD churn scoring: the business logic of the `churn-bgnbd` plugin.
//!
//! The model is the beta-geometric/negative-binomial distribution of Fader,
//! Hardie & Lee (2005), "Counting your customers the easy way". While alive a
//! customer buys as a Poisson process (rate λ ~ Gamma(r, α)); after each
//! purchase they drop out with probability p (p ~ Beta(a, b)).
//!
//! The crate is plain Rust with no WebAssembly bindings so that it is tested
//! natively. The component layer ([`component`]) takes each customer's
//! purchase times straight from the SDK's history to
//! [`score_purchase_times`] (no per-interaction copy); [`History`] /
//! [`Interaction`] and [`score_history`] are the same rule over this
//! crate's own history type (native callers, tests), an interaction's
//! `kind` being a shared [`Name`] (re-exported from the SDK).
//!
//! - [`summary`]: turns purchase timestamps into the model's sufficient
//!   statistics (x, t_x, T).
//! - [`model`]: the likelihood, P(alive) and conditional expectations.
//! - [`fit`](mod@fit): maximum-likelihood fit of (r, α, a, b) by damped
//!   Newton steps; `grouped` (private): the likelihood with its gradient
//!   and Hessian over the population's sufficient statistics.
//! - [`score`]: configuration, the stored model and per-customer scores.

pub mod component;
pub mod fit;
mod grouped;
pub mod input;
pub mod model;
mod optimize;
pub mod score;
pub mod summary;

pub use fit::{FitError, FitReport, fit, fit_binned};
pub use input::{History, Interaction, PurchaseAggregate};
pub use model::{ModelError, Params};
pub use rapport_plugin_sdk::Name;
pub use score::{ChurnError, ChurnScore, Config, FittedModel, fit_population, score_history, score_purchase_times};
pub use summary::{CustomerSummary, MS_PER_DAY, summarise_aggregate, summarise_purchases};
