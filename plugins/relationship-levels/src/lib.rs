//! Relationship levels: the business logic of the `relationship-levels`
//! plugin. Kotler's five levels of relationship investment (basic,
//! reactive, accountable, proactive, partnership), chosen per customer
//! from the margin the customer is expected to bring: lifetime value
//! (BG/NBD + Gamma-Gamma CLV, exactly the `clv` plugin's) times the
//! tenant's margin rate, against the tenant's thresholds.
//!
//! The CLV modules are the `clv` plugin's own source files (and through
//! them `churn-bgnbd`'s), compiled in with `#[path]` as `clv` does with
//! churn-bgnbd's: one source of truth, no duplicate component exports.
//!
//! - [`levels`]: configuration, thresholds, the level and its reason;
//! - [`component`]: the SDK binding (fit and score).

#[path = "../../churn-bgnbd/src/fit.rs"]
pub mod bgnbd;
pub mod component;
#[path = "../../clv/src/gamma_gamma.rs"]
pub mod gamma_gamma;
#[path = "../../churn-bgnbd/src/grouped.rs"]
mod grouped;
pub mod levels;
#[path = "../../churn-bgnbd/src/model.rs"]
pub mod model;
#[path = "../../churn-bgnbd/src/optimize.rs"]
mod optimize;
#[path = "../../clv/src/score.rs"]
pub mod score;
#[path = "../../clv/src/spend.rs"]
pub mod spend;
#[path = "../../churn-bgnbd/src/summary.rs"]
pub mod summary;
#[path = "../../clv/src/value.rs"]
pub mod value;

pub use levels::{Config, Level, LevelError, Thresholds, assign};
pub use summary::MS_PER_DAY;
