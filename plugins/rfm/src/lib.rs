//! RFM scoring: the business logic of the `rfm` plugin.
//!
//! Each customer gets recency, frequency and monetary scores 1-5 by
//! quintile of the tenant's population over a window (`window_days`), the
//! 3-digit cell ("545") and a named segment ("Champions", ...).
//!
//! The crate is plain Rust with no WebAssembly bindings so that it is tested
//! natively; the guest binding layer converts the WIT records 1:1 into the
//! types of [`input`] and calls [`fit_population`] / [`score_history`].
//!
//! - [`values`]: a customer's raw (days since last purchase, purchases,
//!   spend) in the window.
//! - [`quintile`]: rank-based quintile breakpoints and the scoring rule.
//! - [`segment`]: the (R, FM) → segment map.
//! - [`score`]: configuration, the stored model, per-customer scores.

pub mod component;
pub mod input;
pub mod quintile;
pub mod score;
pub mod segment;
pub mod values;

pub use input::{History, Interaction, PurchaseSummary};
pub use score::{Config, RfmError, RfmModel, RfmScore, fit, fit_population, score, score_history};
pub use segment::Segment;
pub use values::{MS_PER_DAY, RfmValues};
