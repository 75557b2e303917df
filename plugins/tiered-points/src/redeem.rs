//! Which rewards an account may redeem now: affordable, in stock, and the
//! account's tier is high enough (by the reward's own minimum rank and by
//! the tenant's optional per-reward minimum tier name).

use crate::{Config, Error, LoyaltyAccount, Reward, Tier};

/// Ids of the `rewards` the account can redeem, in input order. A reward
/// qualifies when `cost_points <= balance` (and is positive), its stock is
/// unlimited or above zero, the account's tier rank is at least
/// `min_tier_rank` (if set; an account without a tier has no rank and
/// fails it), and at least the rank of the tier named for this reward in
/// `config.reward_min_tier` (if any).
pub fn redeemable(
    config: &Config,
    account: &LoyaltyAccount,
    tiers: &[Tier],
    rewards: &[Reward],
) -> Result<Vec<String>, Error> {
    config.validate()?;
    let account_rank = account
        .tier_id
        .as_deref()
        .and_then(|id| tiers.iter().find(|t| t.id == id))
        .map(|t| t.rank);
    let rank_at_least = |needed: i64| account_rank.is_some_and(|rank| rank >= needed);

    let mut ids = Vec::new();
    for reward in rewards {
        let affordable = reward.cost_points > 0 && reward.cost_points <= account.balance;
        let in_stock = reward.stock.is_none_or(|stock| stock > 0);
        let rank_ok = reward.min_tier_rank.is_none_or(rank_at_least);
        let named_tier_ok = match config.reward_min_tier.get(&reward.id) {
            None => true,
            Some(name) => {
                let tier = tiers.iter().find(|t| &t.name == name).ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "reward_min_tier: reward {:?} needs tier {name:?}, which the host does not have",
                        reward.id
                    ))
                })?;
                rank_at_least(tier.rank)
            }
        };
        if affordable && in_stock && rank_ok && named_tier_ok {
            ids.push(reward.id.clone());
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers() -> Vec<Tier> {
        ["Bronze", "Silver", "Gold"]
            .iter()
            .enumerate()
            .map(|(rank, name)| Tier {
                id: format!("t-{}", name.to_lowercase()),
                name: name.to_string(),
                rank: rank as i64,
                min_points: 0,
            })
            .collect()
    }

    fn account(balance: i64, tier: Option<&str>) -> LoyaltyAccount {
        LoyaltyAccount {
            customer_id: "c1".into(),
            balance,
            lifetime_earned: balance,
            tier_id: tier.map(String::from),
        }
    }

    fn reward(id: &str, cost: i64, min_rank: Option<i64>, stock: Option<i64>) -> Reward {
        Reward {
            id: id.into(),
            name: id.into(),
            cost_points: cost,
            min_tier_rank: min_rank,
            stock,
        }
    }

    #[test]
    fn cost_must_fit_the_balance() {
        let rewards = [
            reward("cheap", 100, None, None),
            reward("exact", 500, None, None),
            reward("dear", 501, None, None),
        ];
        let ids = redeemable(&Config::default(), &account(500, None), &tiers(), &rewards).unwrap();
        assert_eq!(ids, ["cheap", "exact"]);
        assert!(
            redeemable(&Config::default(), &account(0, None), &tiers(), &rewards)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn stock_zero_is_out_none_is_unlimited() {
        let rewards = [
            reward("gone", 10, None, Some(0)),
            reward("last", 10, None, Some(1)),
            reward("unlimited", 10, None, None),
        ];
        let ids = redeemable(&Config::default(), &account(50, None), &tiers(), &rewards).unwrap();
        assert_eq!(ids, ["last", "unlimited"]);
    }

    #[test]
    fn tier_rank_gates_rewards() {
        let rewards = [
            reward("any", 10, None, None),
            reward("entry", 10, Some(0), None),
            reward("silver+", 10, Some(1), None),
            reward("gold", 10, Some(2), None),
        ];
        let config = Config::default();
        let ids = |tier| redeemable(&config, &account(50, tier), &tiers(), &rewards).unwrap();
        assert_eq!(ids(None), ["any"]);
        assert_eq!(ids(Some("t-bronze")), ["any", "entry"]);
        assert_eq!(ids(Some("t-silver")), ["any", "entry", "silver+"]);
        assert_eq!(ids(Some("t-gold")), ["any", "entry", "silver+", "gold"]);
        // A tier id the host does not list counts as no tier.
        assert_eq!(ids(Some("t-ghost")), ["any"]);
    }

    #[test]
    fn per_reward_minimum_tier_by_name() {
        let mut config = Config::default();
        config.reward_min_tier.insert("lounge".into(), "Gold".into());
        let rewards = [reward("lounge", 10, None, None), reward("mug", 10, None, None)];
        let ids = |tier| redeemable(&config, &account(50, tier), &tiers(), &rewards).unwrap();
        assert_eq!(ids(Some("t-silver")), ["mug"]);
        assert_eq!(ids(Some("t-gold")), ["lounge", "mug"]);

        config.reward_min_tier.insert("mug".into(), "Platinum".into());
        assert!(matches!(
            redeemable(&config, &account(50, Some("t-gold")), &tiers(), &rewards),
            Err(Error::InvalidConfig(_))
        ));
    }
}
