//! Behaviour of `on_interaction` through the public API: exact points per
//! tier and rounding, upgrades and downgrades across thresholds, expiry
//! dates, the welcome bonus exactly once, kinds that earn nothing, refunds.

use rapport_plugin_tiered_points::{
    AdjustIntent, Config, EarnIntent, Error, Interaction, InteractionContext, LedgerIntent, LoyaltyAccount, Money,
    Outcome, Tier, TierChange, on_interaction,
};

const DAY_MS: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

fn host_tiers() -> Vec<Tier> {
    [("t-bronze", "Bronze"), ("t-silver", "Silver"), ("t-gold", "Gold")]
        .iter()
        .enumerate()
        .map(|(rank, (id, name))| Tier {
            id: id.to_string(),
            name: name.to_string(),
            rank: rank as i64,
            min_points: 0,
        })
        .collect()
}

/// A purchase context: `amount_minor` USD, account in `tier` with
/// `lifetime_earned` 1000 (so no welcome bonus unless a test says so),
/// rolling spend as given.
fn ctx(kind: &str, amount_minor: i64, tier: Option<&str>, rolling_spend_minor: i64) -> InteractionContext {
    InteractionContext {
        interaction: Interaction {
            id: "i1".into(),
            kind: kind.into(),
            occurred_at: T0,
            amount: Some(Money {
                currency: "USD".into(),
                amount_minor,
            }),
        },
        account: LoyaltyAccount {
            customer_id: "c1".into(),
            balance: 1000,
            lifetime_earned: 1000,
            tier_id: tier.map(String::from),
        },
        tiers: host_tiers(),
        rolling_spend_minor,
        now: T0,
    }
}

fn run(ctx: &InteractionContext) -> Outcome {
    on_interaction(&Config::default(), ctx).unwrap()
}

/// Points of the earn intents, in order.
fn earned(outcome: &Outcome) -> Vec<i64> {
    outcome
        .ledger
        .iter()
        .filter_map(|intent| match intent {
            LedgerIntent::Earn(EarnIntent { points, .. }) => Some(*points),
            LedgerIntent::Adjust(_) => None,
        })
        .collect()
}

fn adjusted(outcome: &Outcome) -> Vec<i64> {
    outcome
        .ledger
        .iter()
        .filter_map(|intent| match intent {
            LedgerIntent::Adjust(AdjustIntent { points, .. }) => Some(*points),
            LedgerIntent::Earn(_) => None,
        })
        .collect()
}

// Default tiers: Bronze ≥ 0 (1x), Silver ≥ 500.00 (1.5x), Gold ≥ 2000.00 (2x).

#[test]
fn exact_points_for_each_tier() {
    // 123.45 USD.
    let bronze = run(&ctx("purchase", 12_345, Some("t-bronze"), 12_345));
    assert_eq!(earned(&bronze), [123]);
    assert_eq!(bronze.tier_change, None);
    let silver = run(&ctx("purchase", 12_345, Some("t-silver"), 60_000));
    assert_eq!(earned(&silver), [185]); // 185.175 floored
    let gold = run(&ctx("purchase", 12_345, Some("t-gold"), 250_000));
    assert_eq!(earned(&gold), [246]); // 246.9 floored
    match &gold.ledger[0] {
        LedgerIntent::Earn(earn) => {
            assert_eq!(earn.reason, "purchase of 123.45 USD at Gold rate 2x")
        }
        other => panic!("expected an earn, got {other:?}"),
    }
}

#[test]
fn rounding_is_floor() {
    let points = |amount, tier: &str, spend| earned(&run(&ctx("purchase", amount, Some(tier), spend)));
    assert_eq!(points(99, "t-bronze", 0), Vec::<i64>::new()); // 0.99 → 0: no zero-point earn
    assert_eq!(points(100, "t-bronze", 0), [1]);
    assert_eq!(points(199, "t-bronze", 0), [1]);
    assert_eq!(points(66, "t-silver", 60_000), Vec::<i64>::new()); // 0.99
    assert_eq!(points(67, "t-silver", 60_000), [1]); // 1.005
    assert_eq!(points(133, "t-silver", 60_000), [1]); // 1.995
    assert_eq!(points(134, "t-silver", 60_000), [2]); // 2.01
    assert_eq!(points(49, "t-gold", 300_000), Vec::<i64>::new()); // 0.98
    assert_eq!(points(50, "t-gold", 300_000), [1]);

    // A rate with three decimals and a zero-decimal currency.
    let config = Config::from_json(
        r#"{"tiers":[{"name":"Bronze","rank":0,"min_spend_minor":0,"points_per_unit":1.25}],
            "minor_units_per_unit":1,"currency":"JPY","welcome_bonus":0}"#,
    )
    .unwrap();
    let mut jpy = ctx("purchase", 399, Some("t-bronze"), 399);
    jpy.interaction.amount = Some(Money {
        currency: "JPY".into(),
        amount_minor: 399,
    });
    assert_eq!(earned(&on_interaction(&config, &jpy).unwrap()), [498]); // 498.75
}

#[test]
fn upgrade_is_immediate_and_the_purchase_earns_at_the_new_rate() {
    // Bronze → Silver exactly at the threshold.
    let outcome = run(&ctx("purchase", 10_000, Some("t-bronze"), 50_000));
    assert_eq!(
        outcome.tier_change,
        Some(TierChange {
            tier_id: Some("t-silver".into()),
            reason: "upgraded to Silver: rolling 12-month spend 500.00 reached 500.00".into(),
        })
    );
    assert_eq!(earned(&outcome), [150]);
    // One minor unit short: stays Bronze.
    let outcome = run(&ctx("purchase", 10_000, Some("t-bronze"), 49_999));
    assert_eq!(outcome.tier_change, None);
    assert_eq!(earned(&outcome), [100]);
    // Straight from Bronze to Gold.
    let outcome = run(&ctx("purchase", 10_000, Some("t-bronze"), 200_000));
    assert_eq!(outcome.tier_change.as_ref().unwrap().tier_id.as_deref(), Some("t-gold"));
    // A new account gets its first tier.
    let outcome = run(&ctx("purchase", 10_000, None, 10_000));
    assert_eq!(
        outcome.tier_change.as_ref().unwrap().tier_id.as_deref(),
        Some("t-bronze")
    );
}

#[test]
fn downgrade_when_rolling_spend_falls_below() {
    // A visit is enough to re-evaluate; it earns nothing.
    let outcome = run(&ctx("visit", 0, Some("t-gold"), 199_999));
    assert_eq!(
        outcome.tier_change,
        Some(TierChange {
            tier_id: Some("t-silver".into()),
            reason: "downgraded from Gold to Silver: rolling 12-month spend 1999.99 is below 2000.00".into(),
        })
    );
    assert!(outcome.ledger.is_empty());
    // Still at the threshold: no change.
    assert_eq!(run(&ctx("visit", 0, Some("t-gold"), 200_000)).tier_change, None);
    // Gold → Bronze in one step.
    let outcome = run(&ctx("purchase", 1_000, Some("t-gold"), 1_000));
    assert_eq!(
        outcome.tier_change.as_ref().unwrap().tier_id.as_deref(),
        Some("t-bronze")
    );
    assert_eq!(earned(&outcome), [10]); // at the Bronze rate

    // Below the lowest threshold: the tier is removed.
    let config =
        Config::from_json(r#"{"tiers":[{"name":"Bronze","rank":0,"min_spend_minor":10000,"points_per_unit":1}]}"#)
            .unwrap();
    let outcome = on_interaction(&config, &ctx("visit", 0, Some("t-bronze"), 9_999)).unwrap();
    assert_eq!(
        outcome.tier_change,
        Some(TierChange {
            tier_id: None,
            reason: "Bronze removed: rolling 12-month spend 99.99 is below 100.00".into(),
        })
    );
    // And no tier stays no tier.
    assert_eq!(
        on_interaction(&config, &ctx("visit", 0, None, 9_999))
            .unwrap()
            .tier_change,
        None
    );
}

#[test]
fn rolling_spend_can_exclude_the_current_purchase() {
    let config = Config {
        rolling_spend_includes_current: false,
        ..Config::default()
    };
    let outcome = on_interaction(&config, &ctx("purchase", 1_000, Some("t-bronze"), 49_000)).unwrap();
    assert_eq!(
        outcome.tier_change.as_ref().unwrap().tier_id.as_deref(),
        Some("t-silver")
    );
    assert_eq!(earned(&outcome), [15]);
}

#[test]
fn points_expire_expiry_days_after_the_purchase() {
    let mut purchase = ctx("purchase", 10_000, Some("t-bronze"), 10_000);
    purchase.now = T0 + 3_600_000; // processed an hour later: expiry counts from occurred_at
    let outcome = run(&purchase);
    assert_eq!(
        outcome.ledger,
        [LedgerIntent::Earn(EarnIntent {
            points: 100,
            reason: "purchase of 100.00 USD at Bronze rate 1x".into(),
            expires_at: Some(T0 + 365 * DAY_MS),
        })]
    );
    // 30-day expiry.
    let config = Config {
        expiry_days: 30,
        ..Config::default()
    };
    let outcome = on_interaction(&config, &purchase).unwrap();
    assert!(matches!(&outcome.ledger[0], LedgerIntent::Earn(e) if e.expires_at == Some(T0 + 30 * DAY_MS)));
    // 0: never.
    let config = Config {
        expiry_days: 0,
        ..Config::default()
    };
    let outcome = on_interaction(&config, &purchase).unwrap();
    assert!(matches!(&outcome.ledger[0], LedgerIntent::Earn(e) if e.expires_at.is_none()));
    // A back-filled purchase whose points would already have expired earns nothing.
    let mut old = purchase.clone();
    old.now = T0 + 365 * DAY_MS;
    assert!(run(&old).ledger.is_empty());
    old.now = T0 + 365 * DAY_MS - 1;
    assert_eq!(earned(&run(&old)), [100]);
}

#[test]
fn welcome_bonus_exactly_once() {
    let mut first = ctx("purchase", 2_550, None, 2_550);
    first.account.balance = 0;
    first.account.lifetime_earned = 0;
    let outcome = run(&first);
    assert_eq!(earned(&outcome), [25, 100]);
    match &outcome.ledger[1] {
        LedgerIntent::Earn(e) => {
            assert_eq!(e.reason, "welcome bonus on first purchase");
            assert_eq!(e.expires_at, Some(T0 + 365 * DAY_MS));
        }
        other => panic!("expected the welcome earn, got {other:?}"),
    }

    // The host applies the earns: lifetime_earned > 0, so never again.
    let mut second = first.clone();
    second.account.lifetime_earned = earned(&outcome).iter().sum();
    second.account.balance = second.account.lifetime_earned;
    second.account.tier_id = Some("t-bronze".into());
    assert_eq!(earned(&run(&second)), [25]);

    // Even a first purchase too small to earn points brings the bonus.
    let mut tiny = first.clone();
    tiny.interaction.amount.as_mut().unwrap().amount_minor = 50;
    assert_eq!(earned(&run(&tiny)), [100]);

    // Not on non-purchases or refunds.
    let mut visit = first.clone();
    visit.interaction.kind = "visit".into();
    assert!(run(&visit).ledger.is_empty());
    let mut refund = first.clone();
    refund.interaction.kind = "refund".into();
    assert!(run(&refund).ledger.is_empty());

    // Disabled with 0.
    let config = Config {
        welcome_bonus: 0,
        ..Config::default()
    };
    assert_eq!(earned(&on_interaction(&config, &first).unwrap()), [25]);
}

#[test]
fn non_purchase_interactions_earn_nothing() {
    for kind in [
        "visit",
        "email_open",
        "email_click",
        "support_ticket",
        "complaint",
        "referral",
    ] {
        let outcome = run(&ctx(kind, 50_000, Some("t-bronze"), 10_000));
        assert!(outcome.ledger.is_empty(), "{kind} earned {:?}", outcome.ledger);
    }
    // A purchase without an amount earns nothing either.
    let mut no_amount = ctx("purchase", 0, Some("t-bronze"), 10_000);
    no_amount.interaction.amount = None;
    assert_eq!(run(&no_amount), Outcome::default());
    // Zero amount.
    assert_eq!(run(&ctx("purchase", 0, Some("t-bronze"), 10_000)), Outcome::default());
    // Other currency when the scheme is restricted to one.
    let config = Config {
        currency: Some("EUR".into()),
        ..Config::default()
    };
    assert!(
        on_interaction(&config, &ctx("purchase", 10_000, Some("t-bronze"), 10_000))
            .unwrap()
            .ledger
            .is_empty()
    );
    // Extra earn kinds are configurable.
    let config = Config {
        earn_kinds: vec!["purchase".into(), "in_store_purchase".into()],
        ..Config::default()
    };
    let outcome = on_interaction(&config, &ctx("in_store_purchase", 10_000, Some("t-bronze"), 10_000)).unwrap();
    assert_eq!(earned(&outcome), [100]);
}

#[test]
fn refunds_claw_back_capped_at_the_balance() {
    // 50.00 refunded at Silver: -75.
    let outcome = run(&ctx("refund", 5_000, Some("t-silver"), 60_000));
    assert_eq!(
        outcome.ledger,
        [LedgerIntent::Adjust(AdjustIntent {
            points: -75,
            reason: "refund of 50.00 USD at Silver rate 1.5x".into(),
        })]
    );
    // The refund amount's sign does not matter for a refund kind.
    assert_eq!(adjusted(&run(&ctx("refund", -5_000, Some("t-silver"), 60_000))), [-75]);
    // A negative purchase is a refund too.
    let outcome = run(&ctx("purchase", -5_000, Some("t-silver"), 60_000));
    assert_eq!(adjusted(&outcome), [-75]);
    assert!(earned(&outcome).is_empty());
    // Capped at the balance: never below zero.
    let mut poor = ctx("refund", 5_000, Some("t-silver"), 60_000);
    poor.account.balance = 40;
    let outcome = run(&poor);
    assert_eq!(
        outcome.ledger,
        [LedgerIntent::Adjust(AdjustIntent {
            points: -40,
            reason: "refund of 50.00 USD at Silver rate 1.5x (capped at the balance, 75 due)".into(),
        })]
    );
    poor.account.balance = 0;
    assert!(run(&poor).ledger.is_empty());
    // Too small to be worth a point: nothing.
    assert!(run(&ctx("refund", 50, Some("t-silver"), 60_000)).ledger.is_empty());
}

#[test]
fn hand_assigned_tiers_are_left_alone() {
    let mut tiers = host_tiers();
    tiers.push(Tier {
        id: "t-staff".into(),
        name: "Staff".into(),
        rank: 9,
        min_points: 0,
    });
    let mut staff = ctx("purchase", 10_000, Some("t-staff"), 300_000);
    staff.tiers = tiers;
    let outcome = run(&staff);
    assert_eq!(outcome.tier_change, None);
    assert_eq!(earned(&outcome), [100]); // base rate
    // An id the host does not know at all is replaced.
    let outcome = run(&ctx("purchase", 10_000, Some("t-ghost"), 300_000));
    assert_eq!(outcome.tier_change.as_ref().unwrap().tier_id.as_deref(), Some("t-gold"));
}

#[test]
fn configuration_must_match_the_host_tiers() {
    let mut missing = ctx("purchase", 10_000, None, 0);
    missing.tiers.pop();
    assert!(matches!(run_err(&missing), Error::InvalidConfig(m) if m.contains("Gold")));
    let mut wrong_rank = ctx("purchase", 10_000, None, 0);
    wrong_rank.tiers[2].rank = 7;
    assert!(matches!(run_err(&wrong_rank), Error::InvalidConfig(m) if m.contains("rank")));
    // No tiers configured: no tier changes, base rate.
    let config = Config {
        tiers: vec![],
        ..Config::default()
    };
    let outcome = on_interaction(&config, &ctx("purchase", 10_000, None, 900_000)).unwrap();
    assert_eq!(outcome.tier_change, None);
    assert_eq!(earned(&outcome), [100]);
}

#[test]
fn huge_amounts_do_not_overflow() {
    let outcome = run(&ctx("purchase", i64::MAX, Some("t-gold"), i64::MAX));
    assert_eq!(earned(&outcome), [(i128::from(i64::MAX) * 2 / 100) as i64]);
    let config = Config::from_json(r#"{"tiers":[],"base_points_per_unit":1000000,"minor_units_per_unit":1}"#).unwrap();
    assert!(matches!(
        on_interaction(&config, &ctx("purchase", i64::MAX, None, 0)),
        Err(Error::InvalidInput(_))
    ));
    let mut late = ctx("purchase", 100, None, 0);
    late.interaction.occurred_at = i64::MAX - 1;
    assert!(matches!(run_err(&late), Error::InvalidInput(_)));
}

fn run_err(ctx: &InteractionContext) -> Error {
    on_interaction(&Config::default(), ctx).unwrap_err()
}
