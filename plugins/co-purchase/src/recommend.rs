//! Recommending from a fitted model: fire the rules whose antecedent is in
//! the basket (or, without one, in what the customer owns), drop what the
//! customer already has, score each candidate by its best rule.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use crate::Model;

/// One product to offer.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub sku: String,
    /// Confidence of the best rule recommending this SKU, in [0, 1].
    pub score: f64,
    /// e.g. "bought with X by 23% of X buyers (lift 3.1)".
    pub reason: String,
}

/// A model with its lookup tables built, for many `recommend` calls (batch
/// scoring) without re-indexing each time.
pub struct Recommender<'m> {
    model: &'m Model,
    id_of: HashMap<&'m str, u32>,
    /// Rules of antecedent i are `rules[start[i]..start[i + 1]]`.
    start: Vec<usize>,
}

impl<'m> Recommender<'m> {
    pub fn new(model: &'m Model) -> Self {
        let id_of = model
            .skus()
            .iter()
            .enumerate()
            .map(|(id, sku)| (sku.as_str(), id as u32))
            .collect();
        // Rules are grouped by ascending antecedent (validated on load).
        let sku_count = model.skus().len();
        let mut start = vec![0usize; sku_count + 1];
        for &(a, _, _) in model.raw_rules() {
            start[a as usize + 1] += 1;
        }
        for i in 0..sku_count {
            start[i + 1] += start[i];
        }
        Self { model, id_of, start }
    }

    /// Up to `limit` recommendations, best first (score, then lift, then
    /// SKU). Rules fire from `basket` when it is given and non-empty, else
    /// from `owned_skus`; SKUs in either are never recommended.
    pub fn recommend<S: AsRef<str>>(
        &self,
        owned_skus: &[S],
        basket: Option<&[S]>,
        limit: usize,
    ) -> Vec<Recommendation> {
        if limit == 0 {
            return Vec::new();
        }
        let basket = basket.filter(|b| !b.is_empty());
        let sources: &[S] = basket.unwrap_or(owned_skus);
        let excluded: HashSet<&str> = owned_skus
            .iter()
            .chain(basket.unwrap_or(&[]))
            .map(|s| s.as_ref())
            .collect();

        // Best rule per candidate consequent: (rule index).
        let mut best: HashMap<u32, usize> = HashMap::new();
        let mut seen_sources = HashSet::new();
        for source in sources {
            let Some(&a) = self.id_of.get(source.as_ref()) else {
                continue;
            };
            if !seen_sources.insert(a) {
                continue;
            }
            for i in self.start[a as usize]..self.start[a as usize + 1] {
                let (_, c, _) = self.model.raw_rules()[i];
                if excluded.contains(self.model.skus()[c as usize].as_str()) {
                    continue;
                }
                best.entry(c)
                    .and_modify(|current| {
                        if self.better(i, *current) == Ordering::Less {
                            *current = i;
                        }
                    })
                    .or_insert(i);
            }
        }

        let mut chosen: Vec<usize> = best.into_values().collect();
        chosen.sort_unstable_by(|&x, &y| {
            let (rx, ry) = (self.model.rule(x), self.model.rule(y));
            ry.confidence
                .total_cmp(&rx.confidence)
                .then_with(|| ry.lift.total_cmp(&rx.lift))
                .then_with(|| rx.consequent.cmp(ry.consequent))
        });
        chosen.truncate(limit);
        chosen
            .into_iter()
            .map(|i| {
                let rule = self.model.rule(i);
                Recommendation {
                    sku: rule.consequent.to_string(),
                    score: rule.confidence,
                    reason: format!(
                        "bought with {a} by {pct:.0}% of {a} buyers (lift {lift:.1})",
                        a = rule.antecedent,
                        pct = rule.confidence * 100.0,
                        lift = rule.lift,
                    ),
                }
            })
            .collect()
    }

    /// Orders two rules for the same consequent: `Less` when `x` is the
    /// better reason (higher confidence, then higher lift, then the
    /// alphabetically first antecedent, so results are deterministic).
    fn better(&self, x: usize, y: usize) -> Ordering {
        let (rx, ry) = (self.model.rule(x), self.model.rule(y));
        ry.confidence
            .total_cmp(&rx.confidence)
            .then_with(|| ry.lift.total_cmp(&rx.lift))
            .then_with(|| rx.antecedent.cmp(ry.antecedent))
    }
}

/// One-shot [`Recommender::recommend`].
pub fn recommend<S: AsRef<str>>(
    model: &Model,
    owned_skus: &[S],
    basket: Option<&[S]>,
    limit: usize,
) -> Vec<Recommendation> {
    Recommender::new(model).recommend(owned_skus, basket, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, fit};

    fn model() -> Model {
        // 10 baskets. a: 5, b: 4, c: 3, d: 2, e: 1.
        // ab 4, ac 2, bc 1, cd 2, de 1.
        let text = ["a b", "a b", "a b c", "a b", "a c", "c d", "c d", "d e", "x", "y"];
        // (cd appears twice: "c d" ×2; d also in "d e": d = 3, c = 4.)
        let baskets: Vec<Vec<String>> = text
            .iter()
            .map(|b| b.split_whitespace().map(String::from).collect())
            .collect();
        let config = Config {
            min_support: 0.1,
            min_confidence: 0.0,
            min_lift: 0.0,
            max_rules_per_antecedent: 0,
            ..Config::default()
        };
        fit(&config, &baskets).unwrap()
    }

    fn skus(recs: &[Recommendation]) -> Vec<&str> {
        recs.iter().map(|r| r.sku.as_str()).collect()
    }

    #[test]
    fn recommends_from_owned_when_there_is_no_basket() {
        let model = model();
        let recs = recommend(&model, &["a"], None, 10);
        // a→b conf 4/5, a→c conf 2/5.
        assert_eq!(skus(&recs), ["b", "c"]);
        assert!((recs[0].score - 0.8).abs() < 1e-12);
        // lift(a→b) = 0.8 / 0.4 = 2.0
        assert_eq!(recs[0].reason, "bought with a by 80% of a buyers (lift 2.0)");
    }

    #[test]
    fn basket_drives_rules_and_owned_is_excluded() {
        let model = model();
        // Basket c: c→a 2/4, c→d 2/4, c→b 1/4. Owned a is excluded.
        let recs = recommend(&model, &["a"], Some(&["c"][..]), 10);
        assert_eq!(skus(&recs), ["d", "b"]);
        // c→d: conf 0.5, lift 0.5/0.3.
        assert_eq!(recs[0].reason, "bought with c by 50% of c buyers (lift 1.7)");
        // Empty basket falls back to owned.
        let recs = recommend(&model, &["a"], Some(&[][..]), 10);
        assert_eq!(skus(&recs), ["b", "c"]);
    }

    #[test]
    fn best_rule_wins_and_limit_applies() {
        let model = model();
        // From a and d: candidate c via a→c (0.4) and d→c (2/3): d→c wins.
        let recs = recommend(&model, &["a", "d"], None, 10);
        assert_eq!(skus(&recs), ["b", "c", "e"]);
        assert!((recs[1].score - 2.0 / 3.0).abs() < 1e-12);
        assert!(recs[1].reason.starts_with("bought with d by 67% of d buyers"));
        assert_eq!(skus(&recommend(&model, &["a", "d"], None, 1)), ["b"]);
        assert!(recommend(&model, &["a"], None, 0).is_empty());
    }

    #[test]
    fn unknown_skus_give_nothing() {
        let model = model();
        assert!(recommend(&model, &["zzz"], None, 5).is_empty());
        let empty: [&str; 0] = [];
        assert!(recommend(&model, &empty, None, 5).is_empty());
    }

    #[test]
    fn works_on_a_reloaded_model() {
        let model = Model::from_json(&model().to_json()).unwrap();
        assert_eq!(skus(&recommend(&model, &["a"], None, 10)), ["b", "c"]);
    }
}
