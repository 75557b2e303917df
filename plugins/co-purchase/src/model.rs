//! The fitted model: SKU counts and pair counts of the kept rules, from
//! which every metric is derived with mlxtend's formulas. Storing counts
//! (integers) rather than metrics keeps the JSON compact and exact.

use serde::{Deserialize, Serialize};

/// Format version of the serialised model; bumped on incompatible changes
/// so an old model in the key-value store is refused (and refitted) rather
/// than misread.
pub const MODEL_VERSION: u32 = 1;

/// Association rules mined by [`crate::fit`]. Serialises to compact JSON:
/// `{"version":1,"baskets":N,"skus":[..],"counts":[..],"rules":[[a,c,n],..]}`
/// where `counts[i]` is the number of baskets holding `skus[i]` and a rule
/// `[a, c, n]` is `skus[a] → skus[c]`, both bought in `n` baskets. Rules are
/// grouped by antecedent (ascending index) and ranked within a group.
/// Deserialising validates all of that, so a [`Model`] is always consistent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawModel", into = "RawModel")]
pub struct Model {
    baskets: u64,
    skus: Vec<String>,
    counts: Vec<u64>,
    rules: Vec<(u32, u32, u64)>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    version: u32,
    baskets: u64,
    skus: Vec<String>,
    counts: Vec<u64>,
    rules: Vec<(u32, u32, u64)>,
}

/// Why a stored model could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("model is not valid JSON: {0}")]
    Json(String),
    #[error("model version {found} is not supported (expected {MODEL_VERSION})")]
    Version { found: u32 },
    #[error("model is inconsistent: {0}")]
    Inconsistent(String),
}

/// One rule A → B with its metrics, as mlxtend computes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule<'a> {
    pub antecedent: &'a str,
    pub consequent: &'a str,
    pub antecedent_support: f64,
    pub consequent_support: f64,
    /// support(A ∪ B): fraction of baskets holding both.
    pub support: f64,
    pub confidence: f64,
    pub lift: f64,
    pub leverage: f64,
    /// `None` when confidence is 1 (mlxtend reports +inf, which JSON cannot
    /// carry).
    pub conviction: Option<f64>,
}

/// The metrics of A → B from basket counts, with mlxtend's exact
/// floating-point expressions (supports are `count / n`; confidence is
/// `(sAC * n) / (sA * n)` as in `association_rules` without null values) so
/// that threshold decisions agree with it to the last bit.
pub(crate) struct Metrics {
    pub antecedent_support: f64,
    pub consequent_support: f64,
    pub support: f64,
    pub confidence: f64,
    pub lift: f64,
    pub leverage: f64,
    pub conviction: Option<f64>,
}

impl Metrics {
    pub(crate) fn new(baskets: u64, count_a: u64, count_c: u64, count_ac: u64) -> Self {
        let n = baskets as f64;
        let s_a = count_a as f64 / n;
        let s_c = count_c as f64 / n;
        let s_ac = count_ac as f64 / n;
        let confidence = (s_ac * n) / (s_a * n);
        let lift = confidence / s_c;
        let leverage = s_ac - s_a * s_c;
        let conviction = (confidence < 1.0).then(|| (1.0 - s_c) / (1.0 - confidence));
        Self {
            antecedent_support: s_a,
            consequent_support: s_c,
            support: s_ac,
            confidence,
            lift,
            leverage,
            conviction,
        }
    }
}

impl Model {
    /// Builds a model from parts `fit` has already made consistent.
    pub(crate) fn from_parts(baskets: u64, skus: Vec<String>, counts: Vec<u64>, rules: Vec<(u32, u32, u64)>) -> Self {
        Self {
            baskets,
            skus,
            counts,
            rules,
        }
    }

    /// Reads a model stored with [`Model::to_json`].
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let raw: RawModel = serde_json::from_str(text).map_err(|e| ModelError::Json(e.to_string()))?;
        Model::try_from(raw)
    }

    /// Compact JSON for the key-value store.
    pub fn to_json(&self) -> String {
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// Number of baskets the model was fitted on.
    pub fn basket_count(&self) -> u64 {
        self.baskets
    }

    /// Number of rules kept.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// SKUs that appear in at least one rule, ascending.
    pub fn skus(&self) -> &[String] {
        &self.skus
    }

    /// Every rule with its metrics, grouped by antecedent, best first.
    pub fn rules(&self) -> impl Iterator<Item = Rule<'_>> {
        (0..self.rules.len()).map(|i| self.rule(i))
    }

    pub(crate) fn raw_rules(&self) -> &[(u32, u32, u64)] {
        &self.rules
    }

    pub(crate) fn rule(&self, i: usize) -> Rule<'_> {
        let (a, c, n_ac) = self.rules[i];
        let (a, c) = (a as usize, c as usize);
        let m = Metrics::new(self.baskets, self.counts[a], self.counts[c], n_ac);
        Rule {
            antecedent: &self.skus[a],
            consequent: &self.skus[c],
            antecedent_support: m.antecedent_support,
            consequent_support: m.consequent_support,
            support: m.support,
            confidence: m.confidence,
            lift: m.lift,
            leverage: m.leverage,
            conviction: m.conviction,
        }
    }
}

impl TryFrom<RawModel> for Model {
    type Error = ModelError;

    fn try_from(raw: RawModel) -> Result<Self, Self::Error> {
        if raw.version != MODEL_VERSION {
            return Err(ModelError::Version { found: raw.version });
        }
        let bad = |why: String| Err(ModelError::Inconsistent(why));
        if raw.skus.len() != raw.counts.len() {
            return bad(format!("{} skus but {} counts", raw.skus.len(), raw.counts.len()));
        }
        if let Some(count) = raw.counts.iter().find(|&&c| c == 0 || c > raw.baskets) {
            return bad(format!("sku count {count} outside 1..={}", raw.baskets));
        }
        let len = raw.skus.len();
        let mut previous_antecedent = 0u32;
        for &(a, c, n) in &raw.rules {
            if a as usize >= len || c as usize >= len || a == c {
                return bad(format!("rule [{a}, {c}] does not name two distinct skus"));
            }
            if n == 0 || n > raw.counts[a as usize].min(raw.counts[c as usize]) {
                return bad(format!("rule [{a}, {c}] has impossible pair count {n}"));
            }
            if a < previous_antecedent {
                return bad("rules are not grouped by antecedent".to_string());
            }
            previous_antecedent = a;
        }
        Ok(Model {
            baskets: raw.baskets,
            skus: raw.skus,
            counts: raw.counts,
            rules: raw.rules,
        })
    }
}

impl From<Model> for RawModel {
    fn from(model: Model) -> Self {
        RawModel {
            version: MODEL_VERSION,
            baskets: model.baskets,
            skus: model.skus,
            counts: model.counts,
            rules: model.rules,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_computation() {
        // 10 baskets, A in 4, C in 5, both in 3.
        let m = Metrics::new(10, 4, 5, 3);
        assert_eq!(m.support, 0.3);
        assert!((m.confidence - 0.75).abs() < 1e-15);
        assert!((m.lift - 1.5).abs() < 1e-15);
        assert!((m.leverage - (0.3 - 0.4 * 0.5)).abs() < 1e-15);
        assert!((m.conviction.unwrap() - 2.0).abs() < 1e-12);
        // Confidence 1 → infinite conviction → None.
        assert_eq!(Metrics::new(10, 3, 5, 3).conviction, None);
    }

    #[test]
    fn json_round_trip_and_validation() {
        let model = Model::from_parts(10, vec!["a".into(), "b".into()], vec![4, 5], vec![(0, 1, 3), (1, 0, 3)]);
        let json = model.to_json();
        assert_eq!(
            json,
            r#"{"version":1,"baskets":10,"skus":["a","b"],"counts":[4,5],"rules":[[0,1,3],[1,0,3]]}"#
        );
        assert_eq!(Model::from_json(&json).unwrap(), model);

        assert_eq!(
            Model::from_json(&json.replace(r#""version":1"#, r#""version":7"#)),
            Err(ModelError::Version { found: 7 })
        );
        assert!(matches!(
            Model::from_json(&json.replace("[0,1,3]", "[0,1,9]")),
            Err(ModelError::Inconsistent(_))
        ));
        assert!(matches!(
            Model::from_json(&json.replace("[0,1,3]", "[0,2,3]")),
            Err(ModelError::Inconsistent(_))
        ));
        assert!(matches!(Model::from_json("not json"), Err(ModelError::Json(_))));
    }
}
