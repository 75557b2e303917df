//! `{{name}}`: a Rapport reward-scheme plugin.
//!
//! `on-interaction`: a purchase earns `points_per_unit` points (tenant
//! config, default 1) per whole currency unit spent (`amount-minor / 100`),
//! no expiry; other interactions earn nothing. `redeemable`: rewards whose
//! cost the balance covers, in stock, and whose minimum tier rank the
//! account's tier reaches. Replace [`earn`] and [`can_redeem`] with your
//! own scheme: they are plain Rust, tested natively by `cargo test`.
//!
//! Capabilities imported: `config` (only what the code calls is imported).

wit_bindgen::generate!({ path: "wit/crm@0.1.0", world: "reward-scheme" });

use exports::rapport::crm::rewards::{EarnIntent, Guest, InteractionContext, LedgerIntent, RewardOutcome};
use rapport::crm::types::{Interaction, LoyaltyAccount, PluginError, Reward, Tier};

/// Points per currency unit, from the tenant's config.
pub fn points_per_unit(config: &str) -> Result<i64, PluginError> {
    let config: serde_json::Value = serde_json::from_str(config)
        .map_err(|e| PluginError::InvalidConfig(format!("config is not JSON: {e}")))?;
    match config.get("points_per_unit") {
        None => Ok(1),
        Some(v) => v
            .as_i64()
            .filter(|p| *p > 0)
            .ok_or_else(|| PluginError::InvalidConfig("\"points_per_unit\" must be a positive integer".into())),
    }
}

/// The business logic: what one interaction earns.
pub fn earn(interaction: &Interaction, points_per_unit: i64) -> Option<EarnIntent> {
    if interaction.kind != "purchase" {
        return None;
    }
    let units = interaction.amount.as_ref()?.amount_minor / 100;
    let points = units.saturating_mul(points_per_unit);
    (points > 0).then(|| EarnIntent {
        points,
        reason: format!("{points_per_unit} point(s) per unit spent"),
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

struct Plugin;

impl Guest for Plugin {
    fn on_interaction(context: InteractionContext) -> Result<RewardOutcome, PluginError> {
        let per_unit = points_per_unit(&rapport::crm::config::get_config())?;
        Ok(RewardOutcome {
            ledger: earn(&context.interaction, per_unit).map(LedgerIntent::Earn).into_iter().collect(),
            tier_change: None,
        })
    }

    fn redeemable(account: LoyaltyAccount, tiers: Vec<Tier>, rewards: Vec<Reward>) -> Result<Vec<String>, PluginError> {
        Ok(rewards.iter().filter(|r| can_redeem(&account, &tiers, r)).map(|r| r.id.clone()).collect())
    }
}

// Only the WebAssembly build exports: export names such as
// `rapport:crm/...@0.1.0#fn` cannot be linked into a native library, and
// `cargo test` builds one.
#[cfg(target_arch = "wasm32")]
export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use rapport::crm::types::Money;

    fn interaction(kind: &str, amount_minor: Option<i64>) -> Interaction {
        Interaction {
            id: "i1".into(),
            customer_id: "c1".into(),
            kind: kind.into(),
            channel: None,
            occurred_at: 0,
            amount: amount_minor.map(|amount_minor| Money { currency: "USD".into(), amount_minor }),
            items: vec![],
            payload: "{}".into(),
        }
    }

    #[test]
    fn purchases_earn_points_per_whole_unit() {
        let intent = earn(&interaction("purchase", Some(2999)), 2).unwrap();
        assert_eq!((intent.points, intent.reason.as_str()), (58, "2 point(s) per unit spent"));
        assert!(earn(&interaction("purchase", Some(99)), 1).is_none());
        assert!(earn(&interaction("visit", None), 1).is_none());
        assert_eq!(points_per_unit("{}").unwrap(), 1);
        assert!(points_per_unit(r#"{"points_per_unit": 0}"#).is_err());
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
