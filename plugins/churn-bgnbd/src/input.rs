//! Plain Rust mirrors of the WIT input records (`rapport:crm/inputs`), so
//! that the business logic is testable natively and the binding layer
//! converts the generated types field by field.

use rapport_plugin_sdk::Name;
use serde::{Deserialize, Serialize};

/// One entry of a customer's contact history (WIT `history-entry`, reduced
/// to what scoring needs). Times are milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interaction {
    /// `purchase`, `visit`, ...; only purchases count for BG/NBD. A shared
    /// string (the SDK's [`Name`]): cloning it per interaction costs no
    /// allocation. `"purchase".into()` builds one.
    pub kind: Name,
    pub occurred_at: i64,
    /// The amount in minor units, when the interaction carries one.
    pub amount_minor: Option<i64>,
}

/// A customer and their interactions (WIT `customer-history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The customer's id.
    pub customer: String,
    /// Oldest first, as the host sends them (order does not matter here).
    pub interactions: Vec<Interaction>,
    /// The host's "now" (epoch ms): the end of the calibration period.
    pub now: i64,
}

/// Per-customer purchase aggregates for population fits (WIT
/// `purchase-summary`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseSummary {
    pub customer_id: String,
    /// Number of purchases. BG/NBD counts purchase *days* (see
    /// [`crate::summary`]); the host should count distinct UTC purchase days
    /// here for the fit to match scoring exactly.
    pub purchases: u32,
    pub first_purchase_at: Option<i64>,
    pub last_purchase_at: Option<i64>,
    pub total_spend_minor: i64,
    pub created_at: i64,
}
