//! Plain Rust mirrors of the WIT records the reward scheme sees
//! (`rapport:crm/types` and `rapport:crm/rewards`), so the logic does not
//! depend on generated bindings. Times are epoch milliseconds, money is
//! minor units, exactly as in the WIT.

/// An amount of money in minor units (cents for USD, yen for JPY).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    pub currency: String,
    pub amount_minor: i64,
}

/// The parts of a WIT `interaction` the scheme uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interaction {
    pub id: String,
    /// purchase, refund, visit, ... (see `Config::earn_kinds`/`refund_kinds`).
    pub kind: String,
    pub occurred_at: i64,
    pub amount: Option<Money>,
}

/// WIT `loyalty-account`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoyaltyAccount {
    pub customer_id: String,
    /// Spendable points (never negative).
    pub balance: i64,
    /// Every point ever earned (the welcome-bonus signal: see README).
    pub lifetime_earned: i64,
    pub tier_id: Option<String>,
}

/// WIT `tier`: the tenant's tiers as the host stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub id: String,
    pub name: String,
    /// 0 is the entry tier; higher is better.
    pub rank: i64,
    /// Not used by this scheme (its thresholds are on spend, in the config).
    pub min_points: i64,
}

/// WIT `reward`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reward {
    pub id: String,
    pub name: String,
    pub cost_points: i64,
    pub min_tier_rank: Option<i64>,
    /// Remaining stock; None means unlimited.
    pub stock: Option<i64>,
}

/// WIT `interaction-context`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InteractionContext {
    pub interaction: Interaction,
    pub account: LoyaltyAccount,
    pub tiers: Vec<Tier>,
    /// Spend over the last 12 months, minor units, in the interaction's
    /// currency.
    pub rolling_spend_minor: i64,
    /// The host's "now", epoch ms.
    pub now: i64,
}

/// WIT `earn-intent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarnIntent {
    pub points: i64,
    pub reason: String,
    pub expires_at: Option<i64>,
}

/// WIT `adjust-intent` (signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustIntent {
    pub points: i64,
    pub reason: String,
}

/// WIT `ledger-intent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerIntent {
    Earn(EarnIntent),
    Adjust(AdjustIntent),
}

/// WIT `tier-change`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierChange {
    /// The new tier's id, or None for no tier.
    pub tier_id: Option<String>,
    pub reason: String,
}

/// WIT `reward-outcome`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub ledger: Vec<LedgerIntent>,
    pub tier_change: Option<TierChange>,
}
