//! The component layer: the SDK's [`RewardScheme`] over this crate's
//! logic. Both calls read the tenant's configuration ([`Config`]), copy
//! the SDK records field by field into [`crate::types`], and copy the
//! outcome back. Stateless: no kv, no model.
//!
//! Capabilities: `config`. Errors map one to one: [`Error::InvalidConfig`]
//! is `invalid-config`, [`Error::InvalidInput`] is `invalid-input`.

use rapport_plugin_sdk::{self as sdk, PluginError, RewardScheme};

use crate::types::{InteractionContext, LedgerIntent, LoyaltyAccount, Money, Outcome, Reward, Tier};
use crate::{Config, Error, Interaction};

/// The exported reward scheme.
pub struct TieredPointsPlugin;

sdk::export_reward_scheme!(TieredPointsPlugin);

fn plugin_error(err: Error) -> PluginError {
    match err {
        Error::InvalidConfig(m) => PluginError::InvalidConfig(m),
        Error::InvalidInput(m) => PluginError::InvalidInput(m),
    }
}

fn load_config() -> Result<Config, PluginError> {
    Config::from_json(&sdk::config_json()).map_err(plugin_error)
}

fn account(a: &sdk::LoyaltyAccount) -> LoyaltyAccount {
    LoyaltyAccount {
        customer_id: a.customer_id.clone(),
        balance: a.balance,
        lifetime_earned: a.lifetime_earned,
        tier_id: a.tier_id.clone(),
    }
}

fn tier(t: &sdk::Tier) -> Tier {
    Tier {
        id: t.id.clone(),
        name: t.name.clone(),
        rank: t.rank,
        min_points: t.min_points,
    }
}

fn reward(r: &sdk::Reward) -> Reward {
    Reward {
        id: r.id.clone(),
        name: r.name.clone(),
        cost_points: r.cost_points,
        min_tier_rank: r.min_tier_rank,
        stock: r.stock,
    }
}

fn outcome(o: Outcome) -> sdk::RewardOutcome {
    sdk::RewardOutcome {
        ledger: o
            .ledger
            .into_iter()
            .map(|intent| match intent {
                LedgerIntent::Earn(e) => sdk::LedgerIntent::Earn(sdk::EarnIntent {
                    points: e.points,
                    reason: e.reason,
                    expires_at: e.expires_at,
                }),
                LedgerIntent::Adjust(a) => sdk::LedgerIntent::Adjust(sdk::AdjustIntent {
                    points: a.points,
                    reason: a.reason,
                }),
            })
            .collect(),
        tier_change: o.tier_change.map(|t| sdk::TierChange {
            tier_id: t.tier_id,
            reason: t.reason,
        }),
    }
}

impl RewardScheme for TieredPointsPlugin {
    fn on_interaction(context: &sdk::InteractionContext) -> Result<sdk::RewardOutcome, PluginError> {
        let config = load_config()?;
        let i = &context.interaction;
        let context = InteractionContext {
            interaction: Interaction {
                id: i.id.clone(),
                kind: i.kind.clone(),
                occurred_at: i.occurred_at,
                amount: i.amount.as_ref().map(|m| Money {
                    currency: m.currency.clone(),
                    amount_minor: m.amount_minor,
                }),
            },
            account: account(&context.account),
            tiers: context.tiers.iter().map(tier).collect(),
            rolling_spend_minor: context.rolling_spend_minor,
            now: context.now,
        };
        crate::on_interaction(&config, &context)
            .map(outcome)
            .map_err(plugin_error)
    }

    fn redeemable(
        account_in: &sdk::LoyaltyAccount,
        tiers: &[sdk::Tier],
        rewards: &[sdk::Reward],
    ) -> Result<Vec<String>, PluginError> {
        let config = load_config()?;
        let tiers: Vec<Tier> = tiers.iter().map(tier).collect();
        let rewards: Vec<Reward> = rewards.iter().map(reward).collect();
        crate::redeemable(&config, &account(account_in), &tiers, &rewards).map_err(plugin_error)
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use rapport_plugin_sdk::testing;

    const DAY_MS: i64 = 86_400_000;
    const T0: i64 = 1_767_225_600_000;

    fn host_tiers() -> Vec<sdk::Tier> {
        ["Bronze", "Silver", "Gold"]
            .iter()
            .enumerate()
            .map(|(rank, name)| sdk::Tier {
                id: format!("t-{}", name.to_lowercase()),
                name: name.to_string(),
                rank: rank as i64,
                min_points: 0,
            })
            .collect()
    }

    fn context(amount_minor: i64, lifetime_earned: i64, rolling: i64) -> sdk::InteractionContext {
        sdk::InteractionContext {
            interaction: sdk::Interaction {
                id: "i1".into(),
                customer_id: "c1".into(),
                kind: "purchase".into(),
                channel: None,
                occurred_at: T0,
                amount: Some(sdk::Money::new("USD", amount_minor)),
                items: vec![],
                payload: serde_json::json!({}),
            },
            account: sdk::LoyaltyAccount {
                customer_id: "c1".into(),
                balance: 0,
                lifetime_earned,
                tier_id: Some("t-bronze".into()),
            },
            tiers: host_tiers(),
            rolling_spend_minor: rolling,
            now: T0,
        }
    }

    #[test]
    fn a_first_purchase_upgrading_to_silver_earns_at_the_new_rate_plus_the_bonus() {
        testing::reset();
        // 123.45 USD at Silver's 1.5x = 185.175 → 185, plus the welcome bonus.
        let out = TieredPointsPlugin::on_interaction(&context(12_345, 0, 60_000)).unwrap();
        let expires = Some(T0 + 365 * DAY_MS);
        assert_eq!(
            out.tier_change.as_ref().map(|t| t.tier_id.as_deref()),
            Some(Some("t-silver"))
        );
        let points: Vec<(i64, Option<i64>)> = out
            .ledger
            .iter()
            .map(|i| match i {
                sdk::LedgerIntent::Earn(e) => (e.points, e.expires_at),
                sdk::LedgerIntent::Adjust(a) => (a.points, None),
            })
            .collect();
        assert_eq!(points, vec![(185, expires), (100, expires)]);
    }

    #[test]
    fn config_is_read_per_tenant_and_errors_map() {
        testing::reset();
        testing::set_config(serde_json::json!({"welcome_bonus": 0, "expiry_days": 0}));
        let out = TieredPointsPlugin::on_interaction(&context(10_000, 0, 10_000)).unwrap();
        assert_eq!(
            out.ledger,
            vec![sdk::LedgerIntent::Earn(sdk::EarnIntent {
                points: 100,
                reason: out_reason(&out),
                expires_at: None,
            })]
        );
        testing::set_config(serde_json::json!({"bogus": 1}));
        assert!(matches!(
            TieredPointsPlugin::on_interaction(&context(1, 0, 1)),
            Err(PluginError::InvalidConfig(_))
        ));
    }

    fn out_reason(out: &sdk::RewardOutcome) -> String {
        match &out.ledger[0] {
            sdk::LedgerIntent::Earn(e) => e.reason.clone(),
            sdk::LedgerIntent::Adjust(a) => a.reason.clone(),
        }
    }

    #[test]
    fn redeemable_filters_by_balance_stock_and_tier() {
        testing::reset();
        let account = sdk::LoyaltyAccount {
            customer_id: "c1".into(),
            balance: 500,
            lifetime_earned: 500,
            tier_id: Some("t-silver".into()),
        };
        let reward = |id: &str, cost: i64, min_rank: Option<i64>, stock: Option<i64>| sdk::Reward {
            id: id.into(),
            name: id.into(),
            cost_points: cost,
            min_tier_rank: min_rank,
            stock,
        };
        let rewards = vec![
            reward("mug", 200, None, None),
            reward("too-dear", 600, None, None),
            reward("gold-only", 100, Some(2), None),
            reward("sold-out", 100, None, Some(0)),
            reward("silver", 500, Some(1), Some(3)),
        ];
        assert_eq!(
            TieredPointsPlugin::redeemable(&account, &host_tiers(), &rewards),
            Ok(vec!["mug".to_string(), "silver".to_string()])
        );
    }
}
