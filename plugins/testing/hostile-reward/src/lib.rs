//! `hostile-reward` (reward-scheme): returns ledger intents the host must
//! refuse, so tests can check that a refused plugin never costs the
//! interaction and that its effects are applied all or nothing.
//!
//! `on-interaction` picks its misbehaviour from the interaction's `channel`:
//! - `"overdraw"`: `earn` 10 points (reason `"bait"`), then `adjust` by
//!   -1000000 points (reason `"overdraw"`). The adjust would take the balance
//!   below zero, so the host must refuse it *and* roll back the earn.
//! - `"unknown-tier"`: `earn` 10 points (reason `"bait"`) and a tier change
//!   to the tier id `"no-such-tier"` (reason `"bogus tier"`): refused as a
//!   whole, the earn included.
//! - `"panic"`: panics (`"hostile reward plugin panicked on purpose"`), which
//!   ends in an `unreachable` trap.
//! - `"error"`: returns `plugin-error::internal("refusing on purpose")`.
//! - `"kv-write"`: writes its kv key `"last"` (value: the interaction id).
//!   On success, `earn` 1 point (reason `"kv written"`); on a host error,
//!   returns `plugin-error::unavailable("kv: {error:?}")`. (Not hostile as
//!   such: it shows what a stateful reward plugin meets on the ingest path.)
//! - `"loop"`: writes its kv key `"started"` (value: the interaction id),
//!   then spins forever (`black_box` loop, no calls): the host must end it
//!   at its deadline without having held the database's write lock
//!   meanwhile.
//! - `"wait"`: adds one to its kv counter `"runs"` (a decimal string),
//!   writes `"started"` like `"loop"`, then polls its kv key `"go"` until it
//!   exists, then `earn`s 1 point (reason `"waited"`): lets a test change
//!   the account while the plugin runs.
//! - anything else (or no channel): one `earn` intent of -5 points (reason
//!   `"negative earn"`), which the host must reject (earn points must be
//!   greater than 0).
//!
//! `redeemable`: the ids of *all* rewards it is given, in input order, so a
//! host that intersects plugin answers with its own rules still shows only
//! what the stricter rules allow.
//!
//! Capabilities imported: `kv` (used by `"kv-write"`, `"loop"`, `"wait"`).

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "reward-scheme",
});

use exports::rapport::crm::rewards::{
    AdjustIntent, EarnIntent, Guest, InteractionContext, LedgerIntent, RewardOutcome, TierChange,
};
use rapport::crm::kv;
use rapport::crm::types::{LoyaltyAccount, PluginError, Reward, Tier};

struct HostileReward;

fn bait() -> LedgerIntent {
    LedgerIntent::Earn(EarnIntent {
        points: 10,
        reason: "bait".to_string(),
        expires_at: None,
    })
}

impl Guest for HostileReward {
    fn on_interaction(context: InteractionContext) -> Result<RewardOutcome, PluginError> {
        match context.interaction.channel.as_deref() {
            Some("overdraw") => Ok(RewardOutcome {
                ledger: vec![
                    bait(),
                    LedgerIntent::Adjust(AdjustIntent {
                        points: -1_000_000,
                        reason: "overdraw".to_string(),
                    }),
                ],
                tier_change: None,
            }),
            Some("unknown-tier") => Ok(RewardOutcome {
                ledger: vec![bait()],
                tier_change: Some(TierChange {
                    tier_id: Some("no-such-tier".to_string()),
                    reason: "bogus tier".to_string(),
                }),
            }),
            Some("panic") => panic!("hostile reward plugin panicked on purpose"),
            Some("error") => Err(PluginError::Internal("refusing on purpose".to_string())),
            Some("kv-write") => match kv::set("last", context.interaction.id.as_bytes()) {
                Ok(()) => Ok(RewardOutcome {
                    ledger: vec![LedgerIntent::Earn(EarnIntent {
                        points: 1,
                        reason: "kv written".to_string(),
                        expires_at: None,
                    })],
                    tier_change: None,
                }),
                Err(error) => Err(PluginError::Unavailable(format!("kv: {error:?}"))),
            },
            Some("loop") => {
                let _ = kv::set("started", context.interaction.id.as_bytes());
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("wait") => {
                let runs = kv::get("runs")
                    .ok()
                    .flatten()
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                kv::set("runs", (runs + 1).to_string().as_bytes())
                    .map_err(|error| PluginError::Unavailable(format!("kv: {error:?}")))?;
                kv::set("started", context.interaction.id.as_bytes())
                    .map_err(|error| PluginError::Unavailable(format!("kv: {error:?}")))?;
                while !matches!(kv::get("go"), Ok(Some(_))) {
                    // Spin a little between polls rather than hammer the host.
                    let mut n: u64 = 0;
                    for _ in 0..200_000 {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                Ok(RewardOutcome {
                    ledger: vec![LedgerIntent::Earn(EarnIntent {
                        points: 1,
                        reason: "waited".to_string(),
                        expires_at: None,
                    })],
                    tier_change: None,
                })
            }
            _ => Ok(RewardOutcome {
                ledger: vec![LedgerIntent::Earn(EarnIntent {
                    points: -5,
                    reason: "negative earn".to_string(),
                    expires_at: None,
                })],
                tier_change: None,
            }),
        }
    }

    fn redeemable(
        _account: LoyaltyAccount,
        _tiers: Vec<Tier>,
        rewards: Vec<Reward>,
    ) -> Result<Vec<String>, PluginError> {
        Ok(rewards.into_iter().map(|reward| reward.id).collect())
    }
}

export!(HostileReward);
