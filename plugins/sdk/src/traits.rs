//! The four plugin kinds as Rust traits over the plain types of
//! [`crate::types`]. A plugin implements one of them on a unit struct and
//! exports it with the matching macro (`export_scoring_rule!`, ...).
//!
//! The functions are associated functions (no `self`) because the host
//! runs every call in a fresh instance: there is no state to hold between
//! calls except what the plugin puts in [`crate::kv`]. The one exception is
//! a scoring rule's population fit, which arrives in chunks on one
//! instance: the SDK keeps what [`ScoringRule::fit_rows`] returns for each
//! chunk and hands all of it to [`ScoringRule::fit`] at the end, so the
//! plugin still writes plain functions.

use crate::types::{
    DeliveryError, History, InboundError, InboundEvent, InboundRequest, InteractionContext, LoyaltyAccount, Message,
    PluginError, PurchaseSummary, Receipt, RecommendRequest, Recommendation, Reward, RewardOutcome, Score, Tier,
    Timestamp,
};

/// The most customers the host puts in one chunk of a population fit
/// (`fit-chunk` in the contract).
pub const FIT_CHUNK_MAX: usize = 10_000;

/// World `scoring-rule`: RFM, churn risk, lifetime value, lead score, ...
///
/// A rule with population parameters (quintile breakpoints, BG/NBD
/// parameters, ...) fits them in two steps, because the population arrives
/// in chunks of at most [`crate::FIT_CHUNK_MAX`] customers so that a tenant
/// of any size fits in the plugin's memory:
/// 1. [`ScoringRule::fit_rows`] turns each chunk of summaries into
///    [`ScoringRule::FitRow`]s, the few numbers the fit needs per customer
///    (the SDK keeps the rows, never the summaries);
/// 2. [`ScoringRule::fit`] gets every row of the population (in chunk
///    order) and fits, keeps the parameters in `kv` and returns a summary.
///
/// A rule without population parameters sets `type FitRow = ();` and keeps
/// the defaults (no rows, summary `{}`). Natively,
/// [`crate::testing::fit`] runs a whole fit the way the host does.
pub trait ScoringRule {
    /// What the fit keeps per customer: a small `Copy` struct of a few
    /// numbers (a million customers must fit in the plugin's memory next
    /// to the fit's own work), `()` for a rule without a fit.
    type FitRow: 'static;

    /// Scores one customer.
    fn score(input: &History) -> Result<Score, PluginError>;

    /// Scores many customers, one result per input, in order. The default
    /// calls [`ScoringRule::score`] for each; override it to read shared
    /// state (configuration, a fitted model) once per batch.
    fn score_batch(inputs: &[History]) -> Vec<Result<Score, PluginError>> {
        inputs.iter().map(Self::score).collect()
    }

    /// The fit rows of one chunk of the population (at most
    /// [`crate::FIT_CHUNK_MAX`] customers; each customer is in exactly one
    /// chunk), typically one per customer the fit counts, e.g.
    /// `chunk.iter().filter_map(|s| values(s, now, &config)).collect()`
    /// with the configuration read once per chunk. An error ends the fit
    /// (the rows collected so far are dropped). The default keeps nothing.
    fn fit_rows(chunk: &[PurchaseSummary], now: Timestamp) -> Result<Vec<Self::FitRow>, PluginError> {
        let _ = (chunk, now);
        Ok(Vec::new())
    }

    /// Fits population-level parameters from the rows of every chunk (in
    /// chunk order; empty when the population was), keeps them in `kv`
    /// and returns a JSON summary for the operator. Run by the host's batch
    /// job before rescoring. The default has nothing to fit and returns
    /// `{}`.
    fn fit(rows: Vec<Self::FitRow>, now: Timestamp) -> Result<serde_json::Value, PluginError> {
        let _ = (rows, now);
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
