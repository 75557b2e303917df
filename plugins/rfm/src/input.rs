//! The logic's own input types, independent of the contract: a history
//! reduced to what RFM reads, and a per-customer purchase aggregate for
//! fits from pre-aggregated data (such as a published summary table). They
//! are not mirrors of WIT records: the component (`component.rs`) reads
//! the SDK's `History` and `PurchaseSummary` directly.

use rapport_plugin_sdk::Name;
use serde::{Deserialize, Serialize};

/// One entry of a customer's contact history, reduced to what scoring
/// needs. Times are milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interaction {
    /// `purchase`, `visit`, ...; only purchases count for RFM. A shared
    /// string (the SDK's [`Name`]): cloning it per interaction costs no
    /// allocation. `"purchase".into()` builds one.
    pub kind: Name,
    pub occurred_at: i64,
    /// The amount in minor units, when the interaction carries one.
    pub amount_minor: Option<i64>,
}

/// A customer and their interactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The customer's id.
    pub customer: String,
    /// Oldest first, as the host sends them (order does not matter here).
    pub interactions: Vec<Interaction>,
    /// The host's "now" (epoch ms): the end of the window.
    pub now: i64,
}

/// One customer's purchases as aggregates (count, first and last time,
/// spend), for fits from data that is only available aggregated. The
/// contract's `purchase-summary` carries the purchases themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseAggregate {
    pub customer_id: String,
    /// Number of purchases. RFM wants the count and spend within the
    /// window: see [`crate::values::RfmValues::from_summary`].
    pub purchases: u32,
    pub first_purchase_at: Option<i64>,
    pub last_purchase_at: Option<i64>,
    pub total_spend_minor: i64,
    pub created_at: i64,
}
