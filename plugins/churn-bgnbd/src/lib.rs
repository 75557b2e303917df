//! BG/NBD churn scoring: the business logic of the `churn-bgnbd` plugin.
//!
//! The model is the beta-geometric/negative-binomial distribution of Fader,
//! Hardie & Lee (2005), "Counting your customers the easy way". While alive a
//! customer buys as a Poisson process (rate λ ~ Gamma(r, α)); after each
//! purchase they drop out with probability p (p ~ Beta(a, b)).
//!
//! The crate is plain Rust with no WebAssembly bindings so that it is tested
//! natively; the guest binding layer converts the WIT records 1:1 into the
//! types of [`input`] and calls [`fit_population`] / [`score_history`].
//!
//! - [`summary`]: turns purchase timestamps into the model's sufficient
//!   statistics (x, t_x, T).
//! - [`model`]: the likelihood, P(alive) and conditional expectations.
//! - [`fit`]: maximum-likelihood fit of (r, α, a, b).
//! - [`score`]: configuration, the stored model and per-customer scores.

pub mod component;
pub mod fit;
pub mod input;
pub mod model;
mod optimize;
pub mod score;
pub mod summary;

pub use fit::{FitError, FitReport, fit};
pub use input::{History, Interaction, PurchaseSummary};
pub use model::{ModelError, Params};
pub use score::{ChurnError, ChurnScore, Config, FittedModel, fit_population, score_history};
pub use summary::{CustomerSummary, MS_PER_DAY, summarise_aggregate, summarise_purchases};
