//! Tenant configuration of the co-purchase plugin (JSON), with the defaults
//! documented in the README and checked before any fitting happens.

use serde::{Deserialize, Serialize};

/// What one basket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BasketMode {
    /// The SKUs of one purchase (the default): "bought together".
    #[default]
    PerPurchase,
    /// Every SKU one customer ever bought: "bought by the same people",
    /// denser signal for catalogues where people buy one item at a time.
    PerCustomer,
}

/// Mining thresholds and limits. Unknown fields are refused so that a typo
/// in the tenant's configuration is reported instead of silently ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Minimum fraction of baskets that must contain a SKU, and a pair, for
    /// it to be considered (mlxtend `apriori(min_support=...)`, inclusive).
    pub min_support: f64,
    /// Minimum confidence of a rule A → B (inclusive).
    pub min_confidence: f64,
    /// Minimum lift of a rule (inclusive); 1.0 keeps only pairs bought
    /// together more often than chance.
    pub min_lift: f64,
    /// Most rules kept per antecedent, best first (by confidence, then
    /// lift, then consequent SKU); 0 keeps all.
    pub max_rules_per_antecedent: usize,
    /// Baskets with more distinct SKUs than this are left out of the fit
    /// entirely (they count in no support), because one bulk order with k
    /// items costs k²/2 pair updates and says little about affinity;
    /// 0 disables the cap.
    pub max_basket_items: usize,
    /// How baskets are formed from purchases (see [`crate::group_baskets`]).
    pub basket: BasketMode,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            min_support: 0.001,
            min_confidence: 0.05,
            min_lift: 1.0,
            max_rules_per_antecedent: 20,
            max_basket_items: 200,
            basket: BasketMode::PerPurchase,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("configuration is not valid JSON for this plugin: {0}")]
    Json(String),
    #[error("min_support must be in (0, 1], got {0}")]
    MinSupport(f64),
    #[error("min_confidence must be in [0, 1], got {0}")]
    MinConfidence(f64),
    #[error("min_lift must be a finite number >= 0, got {0}")]
    MinLift(f64),
}

impl Config {
    /// Parses and validates a tenant configuration; an empty document or
    /// `{}` gives the defaults.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the ranges. A zero min_support is refused because it would
    /// make every SKU and every co-occurring pair "frequent", which is
    /// exactly the unbounded memory the threshold exists to prevent.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.min_support > 0.0 && self.min_support <= 1.0) {
            return Err(ConfigError::MinSupport(self.min_support));
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(ConfigError::MinConfidence(self.min_confidence));
        }
        if !(self.min_lift.is_finite() && self.min_lift >= 0.0) {
            return Err(ConfigError::MinLift(self.min_lift));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_gives_defaults() {
        assert_eq!(Config::from_json("").unwrap(), Config::default());
        assert_eq!(Config::from_json("{}").unwrap(), Config::default());
    }

    #[test]
    fn fields_override_defaults() {
        let config = Config::from_json(r#"{"min_support":0.01,"basket":"per_customer"}"#).unwrap();
        assert_eq!(config.min_support, 0.01);
        assert_eq!(config.basket, BasketMode::PerCustomer);
        assert_eq!(config.min_confidence, 0.05);
    }

    #[test]
    fn unknown_fields_and_bad_ranges_are_refused() {
        assert!(matches!(
            Config::from_json(r#"{"min_suport":0.01}"#),
            Err(ConfigError::Json(_))
        ));
        assert_eq!(
            Config::from_json(r#"{"min_support":0}"#),
            Err(ConfigError::MinSupport(0.0))
        );
        assert_eq!(
            Config::from_json(r#"{"min_confidence":1.5}"#),
            Err(ConfigError::MinConfidence(1.5))
        );
        assert_eq!(Config::from_json(r#"{"min_lift":-1}"#), Err(ConfigError::MinLift(-1.0)));
    }
}
