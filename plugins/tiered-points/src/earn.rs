//! Reacting to one interaction: re-evaluate the tier on rolling spend, earn
//! points on purchases at the (new) tier's rate, grant the welcome bonus on
//! the first purchase, claw points back on refunds.

use crate::config::rate_milli;
use crate::money::{format_minor, format_rate};
use crate::tiers::{ResolvedTier, qualifying, resolve};
use crate::{AdjustIntent, Config, EarnIntent, Error, InteractionContext, LedgerIntent, Outcome, TierChange};

const DAY_MS: i64 = 86_400_000;

/// What the interaction does to the account. See the README for every rule;
/// in short:
/// 1. Tier: the highest configured tier whose `min_spend_minor` the rolling
///    spend reaches; a different tier than the account's is a tier change
///    (up or down, on any interaction kind). A current tier the
///    configuration does not name (assigned by hand) is left alone.
/// 2. Earn kinds with a positive amount earn
///    `floor(amount_minor × rate / minor_units_per_unit)` points at the rate
///    of the tier from step 1, expiring `expiry_days` after `occurred_at`.
/// 3. The welcome bonus comes with a positive earn-kind purchase when the
///    account's `lifetime_earned` is 0.
/// 4. Refund kinds, and earn kinds with a negative amount, adjust by
///    `-floor(|amount| × rate / unit)`, capped at the balance.
pub fn on_interaction(config: &Config, ctx: &InteractionContext) -> Result<Outcome, Error> {
    config.validate()?;
    let resolved = resolve(config, &ctx.tiers)?;
    let interaction = &ctx.interaction;

    // The signed amount this scheme acts on: None for kinds it ignores,
    // missing amounts and other currencies.
    let is_earn_kind = config.earn_kinds.contains(&interaction.kind);
    let is_refund_kind = config.refund_kinds.contains(&interaction.kind);
    let amount = interaction
        .amount
        .as_ref()
        .filter(|_| is_earn_kind || is_refund_kind)
        .filter(|money| config.currency.as_ref().is_none_or(|c| *c == money.currency));
    let signed_amount = amount.map(|money| {
        if is_refund_kind {
            -money.amount_minor.saturating_abs()
        } else {
            money.amount_minor
        }
    });

    // 1. Tier.
    let spend = if config.rolling_spend_includes_current {
        ctx.rolling_spend_minor
    } else {
        ctx.rolling_spend_minor.saturating_add(signed_amount.unwrap_or(0))
    };
    let (tier_change, effective) = evaluate_tier(config, ctx, &resolved, spend);
    let (rate, rate_label) = match effective {
        Some(tier) => (
            tier.rate_milli,
            format!("{} rate {}", tier.rule.name, format_rate(tier.rate_milli)),
        ),
        None => {
            let rate = rate_milli(config.base_points_per_unit);
            (rate, format!("base rate {}", format_rate(rate)))
        }
    };

    let mut ledger = Vec::new();
    if let (Some(money), Some(signed)) = (amount, signed_amount) {
        let shown = format!(
            "{} {}",
            format_minor(signed.saturating_abs(), config.minor_units_per_unit),
            money.currency
        );
        let points = points_for(signed.unsigned_abs(), rate, config.minor_units_per_unit)?;
        if signed > 0 {
            // 2. Earn, and 3. welcome bonus; nothing if already expired
            // (a back-filled old purchase would only add and expire again).
            let expires_at = expiry(config, interaction.occurred_at)?;
            let live = expires_at.is_none_or(|at| at > ctx.now);
            if live && points > 0 {
                ledger.push(LedgerIntent::Earn(EarnIntent {
                    points,
                    reason: format!("{} of {shown} at {rate_label}", interaction.kind),
                    expires_at,
                }));
            }
            if live && config.welcome_bonus > 0 && ctx.account.lifetime_earned == 0 {
                ledger.push(LedgerIntent::Earn(EarnIntent {
                    points: config.welcome_bonus,
                    reason: "welcome bonus on first purchase".to_string(),
                    expires_at,
                }));
            }
        } else if signed < 0 {
            // 4. Refund: never below zero (the host refuses that outright,
            // which would fail the whole interaction).
            let balance = ctx.account.balance.max(0);
            let taken = points.min(balance);
            if taken > 0 {
                let capped = if taken < points {
                    format!(" (capped at the balance, {points} due)")
                } else {
                    String::new()
                };
                ledger.push(LedgerIntent::Adjust(AdjustIntent {
                    points: -taken,
                    reason: format!(
                        "{} of {shown} at {rate_label}{capped}",
                        if is_refund_kind {
                            interaction.kind.as_str()
                        } else {
                            "negative purchase"
                        }
                    ),
                }));
            }
        }
    }
    Ok(Outcome { ledger, tier_change })
}

/// Step 1: the tier change, if any, and the tier whose rate applies now.
fn evaluate_tier<'r, 'a>(
    config: &Config,
    ctx: &InteractionContext,
    resolved: &'r [ResolvedTier<'a>],
    spend: i64,
) -> (Option<TierChange>, Option<&'r ResolvedTier<'a>>) {
    let current_id = ctx.account.tier_id.as_deref();
    let current = current_id.and_then(|id| resolved.iter().find(|t| t.host.id == id));
    let hand_assigned = current_id.is_some_and(|id| current.is_none() && ctx.tiers.iter().any(|t| t.id == id));
    if hand_assigned || resolved.is_empty() {
        return (None, None);
    }
    let target = qualifying(resolved, spend);
    let same = match (current, target) {
        (Some(c), Some(t)) => c.host.id == t.host.id,
        (None, None) => current_id.is_none(),
        _ => false,
    };
    if same {
        return (None, target);
    }
    let unit = config.minor_units_per_unit;
    let spend_text = format_minor(spend, unit);
    let reason = match (current, target) {
        (Some(c), Some(t)) if t.rule.rank < c.rule.rank => format!(
            "downgraded from {} to {}: rolling 12-month spend {spend_text} is below {}",
            c.rule.name,
            t.rule.name,
            format_minor(c.rule.min_spend_minor, unit)
        ),
        (Some(c), None) => format!(
            "{} removed: rolling 12-month spend {spend_text} is below {}",
            c.rule.name,
            format_minor(c.rule.min_spend_minor, unit)
        ),
        (None, None) => format!("unknown tier removed: rolling 12-month spend {spend_text} qualifies for no tier"),
        (_, Some(t)) => format!(
            "upgraded to {}: rolling 12-month spend {spend_text} reached {}",
            t.rule.name,
            format_minor(t.rule.min_spend_minor, unit)
        ),
    };
    let change = TierChange {
        tier_id: target.map(|t| t.host.id.clone()),
        reason,
    };
    (Some(change), target)
}

/// floor(amount_minor × rate_milli / (minor_units_per_unit × 1000)), in
/// i128 so no realistic amount overflows; refused if it exceeds i64.
fn points_for(amount_minor: u64, rate_milli: i64, minor_units_per_unit: i64) -> Result<i64, Error> {
    let points = i128::from(amount_minor) * i128::from(rate_milli) / (i128::from(minor_units_per_unit) * 1000);
    i64::try_from(points).map_err(|_| Error::InvalidInput(format!("amount {amount_minor} earns too many points")))
}

fn expiry(config: &Config, occurred_at: i64) -> Result<Option<i64>, Error> {
    if config.expiry_days == 0 {
        return Ok(None);
    }
    occurred_at
        .checked_add(i64::from(config.expiry_days) * DAY_MS)
        .map(Some)
        .ok_or_else(|| Error::InvalidInput(format!("occurred_at {occurred_at} is out of range")))
}
