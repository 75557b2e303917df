//! Customer lifetime value: the business logic of the `clv` plugin.
//!
//! CLV over a horizon of months combines two models of Fader, Hardie & Lee:
//! BG/NBD ("Counting your customers the easy way", 2005) for the number of
//! purchases to expect, and Gamma-Gamma ("RFM and CLV: Using iso-value
//! curves", 2005) for the spend per purchase, discounted month by month
//! exactly as `lifetimes`' `GammaGammaFitter.customer_lifetime_value` does.
//!
//! The BG/NBD modules ([`summary`], [`model`], [`bgnbd`], and `grouped`,
//! `optimize` which the fit uses) are the
//! `churn-bgnbd` plugin's own source files, compiled into this crate with
//! `#[path]` rather than linked as a dependency: that crate also exports
//! its component (the `scoring-rule` world's functions), and linking it
//! into this component would define every export twice. One source of
//! truth, no shared symbols; churn-bgnbd's unit tests run here too.
//!
//! - [`spend`]: per-customer (x, t_x, T) plus monetary value m in one
//!   currency, built as `lifetimes`' `summary_data_from_transaction_data`
//!   does.
//! - [`gamma_gamma`]: the spend model, its maximum-likelihood fit and the
//!   conditional expected spend.
//! - [`value`]: the discounted CLV.
//! - [`score`]: configuration, the stored model, per-customer scores.
//! - [`component`]: the SDK binding.

#[path = "../../churn-bgnbd/src/fit.rs"]
pub mod bgnbd;
pub mod component;
pub mod gamma_gamma;
#[path = "../../churn-bgnbd/src/grouped.rs"]
mod grouped;
#[path = "../../churn-bgnbd/src/model.rs"]
pub mod model;
#[path = "../../churn-bgnbd/src/optimize.rs"]
mod optimize;
pub mod score;
pub mod spend;
#[path = "../../churn-bgnbd/src/summary.rs"]
pub mod summary;
pub mod value;

pub use gamma_gamma::{GammaGammaError, GammaGammaFit, SpendParams};
pub use model::Params;
pub use score::{ClvError, ClvScore, Config, FittedModel, score_purchases};
pub use spend::{SpendSummary, summarise_spend};
pub use summary::{CustomerSummary, MS_PER_DAY};
pub use value::{ClvParts, customer_lifetime_value};
