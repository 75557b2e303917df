//! RFM scoring: the business logic of the `rfm` plugin.
//!
//! Each customer gets recency, frequency and monetary scores 1-5 by
//! quintile of the tenant's population over a window (`window_days`), the
//! 3-digit cell ("545") and a named segment ("Champions", ...).
//!
//! The crate is plain Rust with no WebAssembly bindings so that it is tested
//! natively. The component layer ([`component`]) reads the SDK's history
//! and fit summaries directly: each customer's purchases (time, amount)
//! go to [`RfmValues::from_purchases`] and the values to [`score()`], with
//! no per-interaction copy. [`History`] / [`Interaction`] and
//! [`score_history`] are the same rule over this crate's own history type
//! (native callers, tests); an interaction's `kind` is a shared [`Name`]
//! (re-exported from the SDK) so that building one does not allocate.
//!
//! - [`values`]: a customer's raw (days since last purchase, purchases,
//!   spend) in the window.
//! - [`quintile`]: rank-based quintile breakpoints and the scoring rule.
//! - [`segment`]: the (R, FM) → segment map.
//! - [`score`](mod@score): configuration, the stored model, per-customer scores.

pub mod component;
pub mod input;
pub mod quintile;
pub mod score;
pub mod segment;
pub mod values;

pub use input::{History, Interaction, PurchaseAggregate};
pub use rapport_plugin_sdk::Name;
pub use score::{Config, RfmError, RfmModel, RfmScore, fit, fit_population, score, score_history};
pub use segment::Segment;
pub use values::{MS_PER_DAY, RfmValues};
