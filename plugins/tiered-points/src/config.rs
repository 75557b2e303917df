//! Tenant configuration of the tiered-points scheme (JSON): tiers on rolling
//! 12-month spend with their earn rates, expiry, welcome bonus, which
//! interaction kinds earn or refund, per-reward minimum tiers. Every field
//! has a documented default (README); unknown fields are refused.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::Error;

/// Largest accepted earn rate, points per currency unit: far above any real
/// scheme, low enough that `amount × rate` cannot overflow i128 maths.
const MAX_POINTS_PER_UNIT: f64 = 1_000_000.0;
/// Expiry is capped at 100 years so `occurred_at + expiry` cannot overflow.
const MAX_EXPIRY_DAYS: u32 = 36_500;

/// One tier of the scheme. `name` and `rank` must match a tier the host
/// knows (WIT `tier`), which supplies the id used in tier changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierRule {
    pub name: String,
    pub rank: i64,
    /// Rolling 12-month spend (minor units) at which the tier starts,
    /// inclusive.
    pub min_spend_minor: i64,
    /// Points per currency unit at this tier (1.5 = 1.5 points per dollar);
    /// held to 3 decimals.
    pub points_per_unit: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The tiers, any order (ranks and thresholds must both increase
    /// together). Empty: no tiers, everyone earns `base_points_per_unit`.
    pub tiers: Vec<TierRule>,
    /// Earn rate for a customer whose spend qualifies for no tier.
    pub base_points_per_unit: f64,
    /// Minor units per currency unit (100 for USD/EUR, 1 for JPY).
    pub minor_units_per_unit: i64,
    /// When set, only interactions in this currency earn or refund points.
    pub currency: Option<String>,
    /// Days until earned points expire, counted from the interaction's
    /// `occurred_at`; 0 means points never expire.
    pub expiry_days: u32,
    /// Points granted once, on the first purchase; 0 disables it.
    pub welcome_bonus: i64,
    /// Interaction kinds that earn points on a positive amount.
    pub earn_kinds: Vec<String>,
    /// Interaction kinds whose amount (taken as positive) claws points back.
    pub refund_kinds: Vec<String>,
    /// Whether the host's `rolling_spend_minor` already includes the
    /// interaction being processed; if false, the scheme adds it.
    pub rolling_spend_includes_current: bool,
    /// Optional per-reward minimum tier by name: reward id → tier name.
    pub reward_min_tier: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        let tier = |name: &str, rank, min_spend_minor, points_per_unit| TierRule {
            name: name.to_string(),
            rank,
            min_spend_minor,
            points_per_unit,
        };
        Self {
            tiers: vec![
                tier("Bronze", 0, 0, 1.0),
                tier("Silver", 1, 50_000, 1.5),
                tier("Gold", 2, 200_000, 2.0),
            ],
            base_points_per_unit: 1.0,
            minor_units_per_unit: 100,
            currency: None,
            expiry_days: 365,
            welcome_bonus: 100,
            earn_kinds: vec!["purchase".to_string()],
            refund_kinds: vec!["refund".to_string()],
            rolling_spend_includes_current: true,
            reward_min_tier: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Parses and validates a tenant configuration; an empty document or
    /// `{}` gives the defaults.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(text).map_err(|e| Error::InvalidConfig(e.to_string()))?
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks everything that does not need the host's tiers.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |why: String| Err(Error::InvalidConfig(why));
        check_rate("base_points_per_unit", self.base_points_per_unit)?;
        if self.minor_units_per_unit < 1 {
            return bad(format!(
                "minor_units_per_unit must be >= 1, got {}",
                self.minor_units_per_unit
            ));
        }
        if self.expiry_days > MAX_EXPIRY_DAYS {
            return bad(format!(
                "expiry_days must be at most {MAX_EXPIRY_DAYS}, got {}",
                self.expiry_days
            ));
        }
        if self.welcome_bonus < 0 {
            return bad(format!("welcome_bonus must be >= 0, got {}", self.welcome_bonus));
        }
        if let Some(kind) = self.earn_kinds.iter().find(|k| self.refund_kinds.contains(k)) {
            return bad(format!("kind {kind:?} is in both earn_kinds and refund_kinds"));
        }
        let mut names = HashSet::new();
        let mut ranks = HashSet::new();
        for tier in &self.tiers {
            if tier.name.trim().is_empty() {
                return bad("a tier has an empty name".to_string());
            }
            if !names.insert(tier.name.as_str()) {
                return bad(format!("tier name {:?} is used twice", tier.name));
            }
            if tier.rank < 0 || !ranks.insert(tier.rank) {
                return bad(format!(
                    "tier {:?}: rank {} is negative or used twice",
                    tier.name, tier.rank
                ));
            }
            if tier.min_spend_minor < 0 {
                return bad(format!("tier {:?}: min_spend_minor must be >= 0", tier.name));
            }
            check_rate(&format!("tier {:?} points_per_unit", tier.name), tier.points_per_unit)?;
        }
        let mut by_rank: Vec<&TierRule> = self.tiers.iter().collect();
        by_rank.sort_by_key(|t| t.rank);
        for pair in by_rank.windows(2) {
            if pair[1].min_spend_minor <= pair[0].min_spend_minor {
                return bad(format!(
                    "tier {:?} (rank {}) must need more spend than tier {:?} (rank {})",
                    pair[1].name, pair[1].rank, pair[0].name, pair[0].rank
                ));
            }
        }
        Ok(())
    }
}

fn check_rate(what: &str, rate: f64) -> Result<(), Error> {
    if rate.is_finite() && (0.0..=MAX_POINTS_PER_UNIT).contains(&rate) {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "{what} must be between 0 and {MAX_POINTS_PER_UNIT}, got {rate}"
        )))
    }
}

/// A validated rate as exact thousandths of a point per currency unit, so
/// earning is integer arithmetic (1.5 → 1500) with one documented rounding.
pub(crate) fn rate_milli(points_per_unit: f64) -> i64 {
    // Validated to 0..=1e6, so the product fits an i64 comfortably.
    (points_per_unit * 1000.0).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_gives_defaults() {
        assert_eq!(Config::from_json("").unwrap(), Config::default());
        let config = Config::from_json("{}").unwrap();
        assert_eq!(config.tiers.len(), 3);
        assert_eq!(config.expiry_days, 365);
        assert_eq!(config.welcome_bonus, 100);
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(matches!(
            Config::from_json(r#"{"expiry_dayz":30}"#),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            Config::from_json(
                r#"{"tiers":[{"name":"A","rank":0,"min_spend_minor":0,"points_per_unit":1,"colour":"red"}]}"#
            ),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn inconsistent_tiers_are_refused() {
        let tiers = |json: &str| Config::from_json(&format!(r#"{{"tiers":{json}}}"#));
        assert!(tiers(r#"[{"name":"A","rank":0,"min_spend_minor":0,"points_per_unit":1},{"name":"A","rank":1,"min_spend_minor":10,"points_per_unit":1}]"#).is_err());
        assert!(tiers(r#"[{"name":"A","rank":0,"min_spend_minor":0,"points_per_unit":1},{"name":"B","rank":0,"min_spend_minor":10,"points_per_unit":1}]"#).is_err());
        assert!(tiers(r#"[{"name":"A","rank":0,"min_spend_minor":100,"points_per_unit":1},{"name":"B","rank":1,"min_spend_minor":100,"points_per_unit":1}]"#).is_err());
        assert!(tiers(r#"[{"name":"A","rank":0,"min_spend_minor":0,"points_per_unit":-1}]"#).is_err());
        assert!(tiers(r#"[{"name":"B","rank":1,"min_spend_minor":100,"points_per_unit":2},{"name":"A","rank":0,"min_spend_minor":0,"points_per_unit":1}]"#).is_ok());
        assert!(tiers("[]").is_ok());
    }

    #[test]
    fn other_ranges_are_checked() {
        assert!(Config::from_json(r#"{"minor_units_per_unit":0}"#).is_err());
        assert!(Config::from_json(r#"{"welcome_bonus":-5}"#).is_err());
        assert!(Config::from_json(r#"{"expiry_days":40000}"#).is_err());
        assert!(Config::from_json(r#"{"earn_kinds":["purchase"],"refund_kinds":["purchase"]}"#).is_err());
    }

    #[test]
    fn rates_are_thousandths() {
        assert_eq!(rate_milli(1.5), 1500);
        assert_eq!(rate_milli(2.0), 2000);
        assert_eq!(rate_milli(0.0015), 2);
    }
}
