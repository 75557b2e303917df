//! The four plugin kinds as Rust traits over the plain types of
//! [`crate::types`]. A plugin implements one of them on a unit struct and
//! exports it with the matching macro (`export_scoring_rule!`, ...).
//!
//! The functions are associated functions (no `self`) because the host
//! runs every call in a fresh instance: there is no state to hold between
//! calls except what the plugin puts in [`crate::kv`].

use crate::types::{
    DeliveryError, History, InboundError, InboundEvent, InboundRequest, InteractionContext, LoyaltyAccount, Message,
    PluginError, PurchaseSummary, Receipt, RecommendRequest, Recommendation, Reward, RewardOutcome, Score, Tier,
    Timestamp,
};

/// World `scoring-rule`: RFM, churn risk, lifetime value, lead score, ...
pub trait ScoringRule {
    /// Scores one customer.
    fn score(input: &History) -> Result<Score, PluginError>;

    /// Scores many customers, one result per input, in order. The default
    /// calls [`ScoringRule::score`] for each; override it to read shared
    /// state (configuration, a fitted model) once per batch.
    fn score_batch(inputs: &[History]) -> Vec<Result<Score, PluginError>> {
        inputs.iter().map(Self::score).collect()
    }

    /// Fits population-level parameters (run by the host's batch job
    /// before rescoring), keeps them in `kv` and returns a JSON summary for
    /// the operator. The default has nothing to fit and returns `{}`.
    fn fit(population: &[PurchaseSummary], now: Timestamp) -> Result<serde_json::Value, PluginError> {
        let _ = (population, now);
        Ok(serde_json::Value::Object(Default::default()))
    }
}

/// World `cross-sell`: what to offer a customer next.
pub trait CrossSell {
    /// Up to `request.limit` recommendations (the host sorts by score).
    fn recommend(request: &RecommendRequest) -> Result<Vec<Recommendation>, PluginError>;

    /// Learns from the tenant's purchase baskets (each a list of SKUs),
    /// keeps its model in `kv` and returns a JSON summary. The default has
    /// nothing to learn and returns `{}`.
    fn fit(baskets: &[Vec<String>]) -> Result<serde_json::Value, PluginError> {
        let _ = baskets;
        Ok(serde_json::Value::Object(Default::default()))
    }
}

/// World `reward-scheme`: points for interactions, tier changes,
/// redemption rules.
pub trait RewardScheme {
    /// Called for each ingested interaction; the host applies all the
    /// returned intents or none, in the interaction's transaction.
    fn on_interaction(context: &InteractionContext) -> Result<RewardOutcome, PluginError>;

    /// The ids of the `rewards` this account may redeem now.
    fn redeemable(account: &LoyaltyAccount, tiers: &[Tier], rewards: &[Reward]) -> Result<Vec<String>, PluginError>;
}

/// World `channel-connector`: deliver messages out, turn channel callbacks
/// into interactions.
pub trait ChannelConnector {
    /// Delivers one message (use `message.id` as the idempotency key).
    fn deliver(message: &Message) -> Result<Receipt, DeliveryError>;

    /// Recognises a channel's callback; each event becomes an interaction.
    fn parse_inbound(request: &InboundRequest) -> Result<Vec<InboundEvent>, InboundError>;
}
