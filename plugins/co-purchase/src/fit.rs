//! Mining pair rules from baskets: count SKUs, keep the frequent ones
//! (apriori pruning), count co-occurring frequent pairs in a hash map, then
//! turn pairs into ranked rules. Memory is bounded by the number of
//! distinct frequent pairs that actually co-occur, never by SKUs².

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::Serialize;

use crate::model::{Metrics, Model};
use crate::{Config, ConfigError};

/// Most rules a fit's summary lists: the strongest ones, readable through
/// the host's `GET /v1/plugins/{id}/fit` with their metrics. Bounded so the
/// summary stays far below the output limit whatever the catalogue; every
/// kept rule is in the model (as counts) under the kv key `model`.
pub const SUMMARY_RULES: usize = 100;

/// One rule of a fit's summary, with mlxtend's metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleSummary {
    pub antecedent: String,
    pub consequent: String,
    /// Fraction of baskets holding both.
    pub support: f64,
    pub confidence: f64,
    pub lift: f64,
}

/// What a fit saw and kept, returned to the operator as JSON by the WIT
/// `fit` call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitSummary {
    /// Baskets counted (non-empty, within `max_basket_items`).
    pub baskets: u64,
    /// Baskets left out: empty after dropping blank SKUs.
    pub empty_baskets: u64,
    /// Baskets left out: more distinct SKUs than `max_basket_items`.
    pub oversized_baskets: u64,
    /// Distinct SKUs seen in counted baskets.
    pub skus_seen: u64,
    /// SKUs with support ≥ min_support.
    pub frequent_skus: u64,
    /// Distinct frequent pairs that co-occur at least once.
    pub pairs_counted: u64,
    /// Pairs with support ≥ min_support.
    pub frequent_pairs: u64,
    /// Rules passing min_confidence and min_lift, before the per-antecedent cap.
    pub rules_found: u64,
    /// Rules kept in the model.
    pub rules_kept: u64,
    /// The [`SUMMARY_RULES`] strongest kept rules: highest lift first, then
    /// confidence, then support, then SKUs.
    pub top_rules: Vec<RuleSummary>,
}

/// Fits the model (see [`fit_with_summary`]).
pub fn fit<S: AsRef<str>>(config: &Config, baskets: &[Vec<S>]) -> Result<Model, ConfigError> {
    fit_with_summary(config, baskets).map(|(model, _)| model)
}

/// Fits association rules A → B on `baskets`. Each basket counts each SKU
/// once (duplicates and blank SKUs are ignored); empty baskets and baskets
/// with more than `max_basket_items` distinct SKUs are left out of every
/// count, including the total that supports are fractions of.
pub fn fit_with_summary<S: AsRef<str>>(
    config: &Config,
    baskets: &[Vec<S>],
) -> Result<(Model, FitSummary), ConfigError> {
    config.validate()?;
    let mut summary = FitSummary {
        baskets: 0,
        empty_baskets: 0,
        oversized_baskets: 0,
        skus_seen: 0,
        frequent_skus: 0,
        pairs_counted: 0,
        frequent_pairs: 0,
        rules_found: 0,
        top_rules: Vec::new(),
        rules_kept: 0,
    };

    // Pass 1: basket count and per-SKU basket counts.
    let mut sku_counts: HashMap<&str, u64> = HashMap::new();
    let mut scratch: Vec<&str> = Vec::new();
    for basket in baskets {
        match distinct_skus(basket, config.max_basket_items, &mut scratch) {
            BasketCheck::Empty => summary.empty_baskets += 1,
            BasketCheck::Oversized => summary.oversized_baskets += 1,
            BasketCheck::Counted => {
                summary.baskets += 1;
                for &sku in &scratch {
                    *sku_counts.entry(sku).or_insert(0) += 1;
                }
            }
        }
    }
    summary.skus_seen = sku_counts.len() as u64;
    let n = summary.baskets;
    if n == 0 {
        return Ok((Model::from_parts(0, vec![], vec![], vec![]), summary));
    }
    let is_frequent = |count: u64| count as f64 / n as f64 >= config.min_support;

    // Frequent SKUs get dense ids in SKU order, so pair keys are u64s.
    let mut frequent: Vec<(&str, u64)> = sku_counts
        .iter()
        .filter(|&(_, &count)| is_frequent(count))
        .map(|(&sku, &count)| (sku, count))
        .collect();
    frequent.sort_unstable_by(|a, b| a.0.cmp(b.0));
    drop(sku_counts);
    summary.frequent_skus = frequent.len() as u64;
    let id_of: HashMap<&str, u32> = frequent
        .iter()
        .enumerate()
        .map(|(id, &(sku, _))| (sku, id as u32))
        .collect();

    // Pass 2: co-occurrence counts of frequent pairs (lower id first).
    let mut pair_counts: HashMap<u64, u64> = HashMap::new();
    let mut ids: Vec<u32> = Vec::new();
    for basket in baskets {
        if distinct_skus(basket, config.max_basket_items, &mut scratch) != BasketCheck::Counted {
            continue;
        }
        ids.clear();
        ids.extend(scratch.iter().filter_map(|sku| id_of.get(sku).copied()));
        ids.sort_unstable();
        for (i, &low) in ids.iter().enumerate() {
            for &high in &ids[i + 1..] {
                *pair_counts.entry(pair_key(low, high)).or_insert(0) += 1;
            }
        }
    }
    summary.pairs_counted = pair_counts.len() as u64;

    // Both directions of every frequent pair that pass the rule thresholds.
    let mut rules: Vec<(u32, u32, u64, Metrics)> = Vec::new();
    for (&key, &count_ac) in &pair_counts {
        if !is_frequent(count_ac) {
            continue;
        }
        summary.frequent_pairs += 1;
        let (low, high) = ((key >> 32) as u32, key as u32);
        for (a, c) in [(low, high), (high, low)] {
            let m = Metrics::new(n, frequent[a as usize].1, frequent[c as usize].1, count_ac);
            if m.confidence >= config.min_confidence && m.lift >= config.min_lift {
                rules.push((a, c, count_ac, m));
            }
        }
    }
    drop(pair_counts);
    summary.rules_found = rules.len() as u64;

    // Rank within each antecedent, then cap.
    rules.sort_unstable_by(|x, y| {
        x.0.cmp(&y.0)
            .then_with(|| rank(&x.3, &y.3))
            .then_with(|| frequent[x.1 as usize].0.cmp(frequent[y.1 as usize].0))
    });
    if config.max_rules_per_antecedent > 0 {
        let mut kept_for_current = 0usize;
        let mut current = None;
        rules.retain(|rule| {
            if current != Some(rule.0) {
                current = Some(rule.0);
                kept_for_current = 0;
            }
            kept_for_current += 1;
            kept_for_current <= config.max_rules_per_antecedent
        });
    }
    summary.rules_kept = rules.len() as u64;
    summary.top_rules = top_rules(&rules, &frequent);

    // Keep only the SKUs rules mention, re-indexed (still in SKU order, so
    // grouping by antecedent survives the renumbering).
    let mut new_id: Vec<Option<u32>> = vec![None; frequent.len()];
    for rule in &rules {
        new_id[rule.0 as usize] = Some(0);
        new_id[rule.1 as usize] = Some(0);
    }
    let mut skus = Vec::new();
    let mut counts = Vec::new();
    for (old, slot) in new_id.iter_mut().enumerate() {
        if slot.is_some() {
            *slot = Some(skus.len() as u32);
            skus.push(frequent[old].0.to_string());
            counts.push(frequent[old].1);
        }
    }
    let renumber = |old: u32| new_id[old as usize].unwrap_or(0);
    let rules = rules
        .into_iter()
        .map(|(a, c, count_ac, _)| (renumber(a), renumber(c), count_ac))
        .collect();
    Ok((Model::from_parts(n, skus, counts, rules), summary))
}

/// Best rule first: higher confidence, then higher lift.
/// The strongest rules for the summary (see [`FitSummary::top_rules`]).
fn top_rules(rules: &[(u32, u32, u64, Metrics)], frequent: &[(&str, u64)]) -> Vec<RuleSummary> {
    let mut order: Vec<&(u32, u32, u64, Metrics)> = rules.iter().collect();
    let name = |i: u32| frequent[i as usize].0;
    order.sort_unstable_by(|x, y| {
        y.3.lift
            .total_cmp(&x.3.lift)
            .then_with(|| y.3.confidence.total_cmp(&x.3.confidence))
            .then_with(|| y.3.support.total_cmp(&x.3.support))
            .then_with(|| (name(x.0), name(x.1)).cmp(&(name(y.0), name(y.1))))
    });
    order
        .into_iter()
        .take(SUMMARY_RULES)
        .map(|(a, c, _, m)| RuleSummary {
            antecedent: name(*a).to_string(),
            consequent: name(*c).to_string(),
            support: m.support,
            confidence: m.confidence,
            lift: m.lift,
        })
        .collect()
}

fn rank(x: &Metrics, y: &Metrics) -> Ordering {
    y.confidence
        .total_cmp(&x.confidence)
        .then_with(|| y.lift.total_cmp(&x.lift))
}

fn pair_key(low: u32, high: u32) -> u64 {
    (u64::from(low) << 32) | u64::from(high)
}

#[derive(Debug, PartialEq, Eq)]
enum BasketCheck {
    Counted,
    Empty,
    Oversized,
}

/// Fills `out` with the basket's distinct non-blank SKUs and says whether
/// the basket counts.
fn distinct_skus<'a, S: AsRef<str>>(basket: &'a [S], max_items: usize, out: &mut Vec<&'a str>) -> BasketCheck {
    out.clear();
    out.extend(
        basket
            .iter()
            .map(|sku| sku.as_ref())
            .filter(|sku| !sku.trim().is_empty()),
    );
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        BasketCheck::Empty
    } else if max_items > 0 && out.len() > max_items {
        BasketCheck::Oversized
    } else {
        BasketCheck::Counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baskets(text: &[&str]) -> Vec<Vec<String>> {
        text.iter()
            .map(|b| b.split_whitespace().map(String::from).collect())
            .collect()
    }

    fn loose() -> Config {
        Config {
            min_support: 0.01,
            min_confidence: 0.0,
            min_lift: 0.0,
            max_rules_per_antecedent: 0,
            ..Config::default()
        }
    }

    #[test]
    fn counts_and_metrics_on_a_small_example() {
        // 5 baskets: a in 4, b in 3, c in 2; ab in 3, ac in 1, bc in 1.
        let data = baskets(&["a b", "a b c", "a b", "a c", "d"]);
        let (model, summary) = fit_with_summary(&loose(), &data).unwrap();
        assert_eq!(summary.baskets, 5);
        assert_eq!(summary.skus_seen, 4);
        assert_eq!(summary.frequent_pairs, 3);
        assert_eq!(model.rule_count(), 6);
        let ab = model
            .rules()
            .find(|r| r.antecedent == "a" && r.consequent == "b")
            .unwrap();
        assert!((ab.support - 0.6).abs() < 1e-12);
        assert!((ab.confidence - 0.75).abs() < 1e-12);
        assert!((ab.lift - 0.75 / 0.6).abs() < 1e-12);
        let ba = model
            .rules()
            .find(|r| r.antecedent == "b" && r.consequent == "a")
            .unwrap();
        assert_eq!(ba.confidence, 1.0);
        assert_eq!(ba.conviction, None);
        // "d" is in no pair, so the model does not carry it.
        assert_eq!(model.skus(), ["a", "b", "c"]);
    }

    #[test]
    fn duplicates_blanks_empty_and_oversized_baskets() {
        let data = baskets(&["a a b", "", "a b c d e", "a b"]);
        let config = Config {
            max_basket_items: 4,
            ..loose()
        };
        let mut with_blank = data.clone();
        with_blank[3].push("  ".to_string());
        let (model, summary) = fit_with_summary(&config, &with_blank).unwrap();
        assert_eq!(summary.baskets, 2);
        assert_eq!(summary.empty_baskets, 1);
        assert_eq!(summary.oversized_baskets, 1);
        let ab = model.rules().next().unwrap();
        assert_eq!((ab.antecedent, ab.consequent), ("a", "b"));
        assert_eq!(ab.support, 1.0);
    }

    #[test]
    fn thresholds_are_inclusive_and_prune() {
        // 4 baskets: a 3, b 2, ab 2 → support(ab)=0.5, conf(a→b)=2/3, conf(b→a)=1.
        let data = baskets(&["a b", "a b", "a", "c"]);
        let config = Config {
            min_support: 0.5,
            ..loose()
        };
        assert_eq!(fit(&config, &data).unwrap().rule_count(), 2);
        let config = Config {
            min_support: 0.51,
            ..loose()
        };
        assert_eq!(fit(&config, &data).unwrap().rule_count(), 0);
        let config = Config {
            min_confidence: 1.0,
            ..loose()
        };
        let model = fit(&config, &data).unwrap();
        let kept: Vec<_> = model.rules().map(|r| (r.antecedent, r.consequent)).collect();
        assert_eq!(kept, [("b", "a")]);
        // lift(a→b) = (2/3)/(1/2) = 4/3.
        let config = Config {
            min_lift: 1.34,
            ..loose()
        };
        assert_eq!(fit(&config, &data).unwrap().rule_count(), 0);
    }

    #[test]
    fn cap_keeps_the_best_rules_per_antecedent() {
        // a→b conf 3/4, a→c 2/4, a→d 1/4.
        let data = baskets(&["a b c d", "a b c", "a b", "a", "b", "c"]);
        let config = Config {
            max_rules_per_antecedent: 2,
            ..loose()
        };
        let model = fit(&config, &data).unwrap();
        let from_a: Vec<_> = model
            .rules()
            .filter(|r| r.antecedent == "a")
            .map(|r| r.consequent)
            .collect();
        assert_eq!(from_a, ["b", "c"]);
    }

    #[test]
    fn no_baskets_gives_an_empty_model() {
        let data: Vec<Vec<String>> = vec![];
        let (model, summary) = fit_with_summary(&Config::default(), &data).unwrap();
        assert_eq!(model.rule_count(), 0);
        assert_eq!(summary.baskets, 0);
    }

    #[test]
    fn invalid_config_is_refused() {
        let config = Config {
            min_support: 0.0,
            ..Config::default()
        };
        let data = baskets(&["a b"]);
        assert_eq!(fit(&config, &data), Err(ConfigError::MinSupport(0.0)));
    }
}
