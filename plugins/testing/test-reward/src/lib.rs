//! `test-reward`: the well-behaved reward-scheme plugin the runtime tests
//! load. Deterministic on purpose, because the tests assert exact values.
//!
//! `on-interaction`:
//! - An interaction of kind `"purchase"` with an amount of at least 100
//!   minor units earns `floor(amount-minor / 100)` points (1 point per
//!   currency unit), as ONE `earn` intent with reason `"1 point per unit"`
//!   and no expiry. Anything else earns nothing (no zero-point intents).
//! - Tier: when `rolling-spend-minor >= 100000` and a tier of rank 1 exists
//!   and the account is not already in a tier of rank >= 1, it asks for a
//!   `tier-change` to that tier with reason `"rolling spend >= 100000 minor"`.
//!   Otherwise no tier change. (Checked for every interaction kind.)
//!
//! `redeemable`: the ids, in input order, of the rewards with
//! `cost-points <= balance`, stock not exhausted (`none` or `> 0`), and, when
//! `min-tier-rank` is set, the account's tier (looked up by `tier-id` among
//! `tiers`) has a rank `>=` it; an account without a known tier satisfies no
//! `min-tier-rank`.
//!
//! Capabilities imported: none.

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "reward-scheme",
});

use exports::rapport::crm::rewards::{EarnIntent, Guest, InteractionContext, LedgerIntent, RewardOutcome, TierChange};
use rapport::crm::types::{LoyaltyAccount, PluginError, Reward, Tier};

/// 1000.00 in minor units: the rolling spend that earns the rank-1 tier.
const TIER_ONE_SPEND_MINOR: i64 = 100_000;

struct TestReward;

fn tier_rank(account: &LoyaltyAccount, tiers: &[Tier]) -> Option<i64> {
    let tier_id = account.tier_id.as_deref()?;
    tiers.iter().find(|tier| tier.id == tier_id).map(|tier| tier.rank)
}

impl Guest for TestReward {
    fn on_interaction(context: InteractionContext) -> Result<RewardOutcome, PluginError> {
        let mut ledger = Vec::new();
        if context.interaction.kind == "purchase" {
            if let Some(amount) = &context.interaction.amount {
                let points = amount.amount_minor.div_euclid(100);
                if points > 0 {
                    ledger.push(LedgerIntent::Earn(EarnIntent {
                        points,
                        reason: "1 point per unit".to_string(),
                        expires_at: None,
                    }));
                }
            }
        }

        let current_rank = tier_rank(&context.account, &context.tiers);
        let tier_change = match context.tiers.iter().find(|tier| tier.rank == 1) {
            Some(tier_one)
                if context.rolling_spend_minor >= TIER_ONE_SPEND_MINOR && current_rank.is_none_or(|rank| rank < 1) =>
            {
                Some(TierChange {
                    tier_id: Some(tier_one.id.clone()),
                    reason: format!("rolling spend >= {TIER_ONE_SPEND_MINOR} minor"),
                })
            }
            _ => None,
        };
        Ok(RewardOutcome { ledger, tier_change })
    }

    fn redeemable(account: LoyaltyAccount, tiers: Vec<Tier>, rewards: Vec<Reward>) -> Result<Vec<String>, PluginError> {
        let rank = tier_rank(&account, &tiers);
        Ok(rewards
            .into_iter()
            .filter(|reward| reward.cost_points <= account.balance)
            .filter(|reward| reward.stock.is_none_or(|stock| stock > 0))
            .filter(|reward| match reward.min_tier_rank {
                None => true,
                Some(min) => rank.is_some_and(|rank| rank >= min),
            })
            .map(|reward| reward.id)
            .collect())
    }
}

export!(TestReward);
