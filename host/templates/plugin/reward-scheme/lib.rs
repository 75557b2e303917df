//! `{{name}}`: a Rapport reward-scheme plugin.
//!
//! `on-interaction`: a purchase earns `points_per_unit` points (tenant
//! config, default 1) per whole currency unit spent (`amount-minor / 100`),
//! no expiry; other interactions earn nothing. `redeemable`: rewards whose
//! cost the balance covers, in stock, and whose minimum tier rank the
//! account's tier reaches. Replace [`earn`] and [`can_redeem`] with your
//! own scheme: they are plain Rust, tested natively by `cargo test`.
//!
//! Capabilities imported: `config` (a component imports only what its code
//! calls).

use rapport_plugin_sdk::{
    self as sdk, EarnIntent, Interaction, InteractionContext, LedgerIntent, LoyaltyAccount, PluginError, Reward,
    RewardOutcome, RewardScheme, Tier,
};
use serde::Deserialize;

/// The tenant's settings for this plugin (its config JSON object).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub points_per_unit: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { points_per_unit: 1 }
    }
}

/// The business logic: what one interaction earns.
pub fn earn(interaction: &Interaction, settings: &Settings) -> Option<EarnIntent> {
    if interaction.kind != "purchase" {
        return None;
    }
    let units = interaction.amount.as_ref()?.amount_minor / 100;
    let points = units.saturating_mul(settings.points_per_unit);
    (points > 0).then(|| EarnIntent {
        points,
        reason: format!("{} point(s) per unit spent", settings.points_per_unit),
        expires_at: None,
    })
}

/// Whether `account` may redeem `reward` now.
pub fn can_redeem(account: &LoyaltyAccount, tiers: &[Tier], reward: &Reward) -> bool {
    let rank = account
        .tier_id
        .as_ref()
        .and_then(|id| tiers.iter().find(|t| &t.id == id))
        .map(|t| t.rank);
    let tier_ok = match reward.min_tier_rank {
        None => true,
        Some(min) => rank.is_some_and(|r| r >= min),
    };
    reward.cost_points <= account.balance && reward.stock != Some(0) && tier_ok
}

pub struct Plugin;

sdk::export_reward_scheme!(Plugin);

impl RewardScheme for Plugin {
    fn on_interaction(context: &InteractionContext) -> Result<RewardOutcome, PluginError> {
        let settings: Settings = sdk::config()?;
        if settings.points_per_unit <= 0 {
            return Err(PluginError::InvalidConfig("\"points_per_unit\" must be positive".into()));
        }
        Ok(RewardOutcome {
            ledger: earn(&context.interaction, &settings).map(LedgerIntent::Earn).into_iter().collect(),
            tier_change: None,
        })
    }

    fn redeemable(account: &LoyaltyAccount, tiers: &[Tier], rewards: &[Reward]) -> Result<Vec<String>, PluginError> {
        Ok(rewards.iter().filter(|r| can_redeem(account, tiers, r)).map(|r| r.id.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rapport_plugin_sdk::{Money, testing};

    fn interaction(kind: &str, amount_minor: Option<i64>) -> Interaction {
        Interaction {
            id: "i1".into(),
            customer_id: "c1".into(),
            kind: kind.into(),
            channel: None,
            occurred_at: 0,
            amount: amount_minor.map(|a| Money::new("USD", a)),
            items: vec![],
            payload: serde_json::json!({}),
        }
    }

    #[test]
    fn purchases_earn_points_per_whole_unit() {
        let intent = earn(&interaction("purchase", Some(2999)), &Settings { points_per_unit: 2 }).unwrap();
        assert_eq!((intent.points, intent.reason.as_str()), (58, "2 point(s) per unit spent"));
        assert!(earn(&interaction("purchase", Some(99)), &Settings::default()).is_none());
        assert!(earn(&interaction("visit", None), &Settings::default()).is_none());
    }

    #[test]
    fn the_rate_comes_from_the_tenant_config() {
        let account = LoyaltyAccount { customer_id: "c1".into(), balance: 0, lifetime_earned: 0, tier_id: None };
        let context = InteractionContext {
            interaction: interaction("purchase", Some(1000)),
            account,
            tiers: vec![],
            rolling_spend_minor: 1000,
            now: 0,
        };
        testing::reset();
        testing::set_config(serde_json::json!({ "points_per_unit": 3 }));
        let outcome = Plugin::on_interaction(&context).unwrap();
        assert!(matches!(&outcome.ledger[..], [LedgerIntent::Earn(e)] if e.points == 30));
        testing::set_config(serde_json::json!({ "points_per_unit": 0 }));
        assert!(matches!(Plugin::on_interaction(&context), Err(PluginError::InvalidConfig(_))));
    }

    #[test]
    fn redeemable_checks_balance_stock_and_tier() {
        let tiers = [Tier { id: "gold".into(), name: "Gold".into(), rank: 1, min_points: 1000 }];
        let account = LoyaltyAccount { customer_id: "c1".into(), balance: 500, lifetime_earned: 500, tier_id: None };
        let reward = |id: &str, cost, min_tier_rank, stock| Reward { id: id.into(), name: id.into(), cost_points: cost, min_tier_rank, stock };
        assert!(can_redeem(&account, &tiers, &reward("mug", 500, None, None)));
        assert!(!can_redeem(&account, &tiers, &reward("bag", 501, None, None)));
        assert!(!can_redeem(&account, &tiers, &reward("pen", 10, None, Some(0))));
        assert!(!can_redeem(&account, &tiers, &reward("vip", 10, Some(1), None)));
        let gold = LoyaltyAccount { tier_id: Some("gold".into()), ..account };
        assert!(can_redeem(&gold, &tiers, &reward("vip", 10, Some(1), None)));
    }
}
