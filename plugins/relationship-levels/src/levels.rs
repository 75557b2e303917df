//! The levels, the tenant's configuration and the assignment rule.
//!
//! Lifetime margin = CLV (the `clv` plugin's: expected purchases over the
//! horizon x expected spend, discounted) x `margin_rate`. The level is the
//! highest whose threshold the lifetime margin reaches; below `reactive`'s
//! it is `basic`. Thresholds are in major units of the currency and must
//! rise from `reactive` to `partnership`.

use serde::{Deserialize, Serialize};

use crate::gamma_gamma::SpendParams;
use crate::model::Params;
use crate::score::{ClvError, ClvScore, Config as ClvConfig, FittedModel, PopulationClv};

/// The five levels, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Basic,
    Reactive,
    Accountable,
    Proactive,
    Partnership,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Basic,
        Level::Reactive,
        Level::Accountable,
        Level::Proactive,
        Level::Partnership,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Level::Basic => "basic",
            Level::Reactive => "reactive",
            Level::Accountable => "accountable",
            Level::Proactive => "proactive",
            Level::Partnership => "partnership",
        }
    }

    /// 0 (basic) to 4 (partnership).
    pub fn rank(self) -> usize {
        self as usize
    }

    /// What the level means for the company (Kotler): part of the reason.
    pub fn treatment(self) -> &'static str {
        match self {
            Level::Basic => "sell, no follow-up",
            Level::Reactive => "invite the customer to call with questions or problems",
            Level::Accountable => "call shortly after the sale to check expectations",
            Level::Proactive => "contact the customer regularly with improvements and new offers",
            Level::Partnership => "work continuously with the customer to deliver more value",
        }
    }
}

/// Lifetime margin, in major units, from which each level starts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub reactive: f64,
    pub accountable: f64,
    pub proactive: f64,
    pub partnership: f64,
}

impl Thresholds {
    fn of(&self, level: Level) -> Option<f64> {
        match level {
            Level::Basic => None,
            Level::Reactive => Some(self.reactive),
            Level::Accountable => Some(self.accountable),
            Level::Proactive => Some(self.proactive),
            Level::Partnership => Some(self.partnership),
        }
    }
}

/// A fixed model instead of the batch fit: the BG/NBD and Gamma-Gamma
/// parameters the company already has (from the `clv` plugin's fit,
/// `GET /v1/plugins/clv/fit`, say).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedModel {
    pub bgnbd: Params,
    pub gamma_gamma: SpendParams,
    /// The BG/NBD time unit the parameters are in (default 7: weeks).
    #[serde(default = "week")]
    pub time_unit_days: f64,
}

fn week() -> f64 {
    7.0
}

/// The plugin's per-tenant configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// ISO 4217 currency the value is computed in.
    pub currency: String,
    /// The company's margin on a customer's spend, 0 to 1 (0.3 = 30 %).
    pub margin_rate: f64,
    /// Where each level starts, in lifetime margin.
    pub levels: Thresholds,
    /// CLV horizon in months (default 12).
    #[serde(default = "twelve")]
    pub horizon_months: u32,
    /// Monthly discount rate (default 0.01).
    #[serde(default = "one_percent")]
    pub discount_rate: f64,
    /// The interaction kind that counts as a purchase (default `purchase`).
    #[serde(default)]
    pub purchase_kind: Option<String>,
    /// Parameters to use instead of fitting (default: the batch job fits
    /// both models on the tenant's population, as `clv` does).
    #[serde(default)]
    pub model: Option<FixedModel>,
}

fn twelve() -> u32 {
    12
}

fn one_percent() -> f64 {
    0.01
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LevelError {
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Clv(#[from] ClvError),
}

impl Config {
    pub fn from_json(json: &str) -> Result<Self, LevelError> {
        let config: Config = serde_json::from_str(json).map_err(|e| LevelError::InvalidConfig(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), LevelError> {
        let bad = |m: &str| Err(LevelError::InvalidConfig(m.to_owned()));
        if !(self.margin_rate.is_finite() && (0.0..=1.0).contains(&self.margin_rate)) {
            return bad("margin_rate must be a number from 0 to 1 (0.3 is 30 %)");
        }
        let t = [
            self.levels.reactive,
            self.levels.accountable,
            self.levels.proactive,
            self.levels.partnership,
        ];
        if t.iter().any(|v| !v.is_finite()) || t.windows(2).any(|w| w[0] > w[1]) {
            return bad("levels: reactive <= accountable <= proactive <= partnership, finite numbers");
        }
        if let Some(m) = &self.model {
            m.bgnbd
                .validate()
                .map_err(|e| LevelError::InvalidConfig(format!("model.bgnbd: {e}")))?;
            m.gamma_gamma
                .validate()
                .map_err(|e| LevelError::InvalidConfig(format!("model.gamma_gamma: {e}")))?;
            if !(m.time_unit_days.is_finite() && m.time_unit_days > 0.0) {
                return bad("model.time_unit_days must be a positive number");
            }
        }
        self.clv()
            .validate()
            .map_err(|e| LevelError::InvalidConfig(e.to_string()))?;
        Ok(())
    }

    /// The `clv` plugin's configuration this one implies.
    pub fn clv(&self) -> ClvConfig {
        let mut c = ClvConfig {
            currency: self.currency.clone(),
            horizon_months: self.horizon_months,
            discount_rate: self.discount_rate,
            // Thresholds of clv's own bands; unused here, fixed so that a
            // fixed model needs no population percentiles.
            high_from: Some(0.0),
            low_below: Some(0.0),
            ..ClvConfig::default()
        };
        if let Some(kind) = &self.purchase_kind {
            c.purchase_kind = rapport_plugin_sdk::Name::from(kind.as_str());
        }
        if let Some(m) = &self.model {
            c.time_unit_days = m.time_unit_days;
        }
        c
    }

    /// The configured fixed model as the `clv` logic's stored model.
    pub fn fixed_model(&self) -> Option<FittedModel> {
        self.model.map(|m| FittedModel {
            version: FittedModel::VERSION,
            currency: self.currency.clone(),
            bgnbd: m.bgnbd,
            gamma_gamma: m.gamma_gamma,
            time_unit_days: m.time_unit_days,
            fitted_at: 0,
            customers: 0,
            repeat_customers: 0,
            spend_customers: 0,
            other_currency_purchases: 0,
            bgnbd_log_likelihood: 0.0,
            gamma_gamma_log_likelihood: 0.0,
            population_clv: PopulationClv {
                horizon_months: self.horizon_months,
                discount_rate: self.discount_rate,
                sampled: 0,
                median: 0.0,
                p80: 0.0,
            },
        })
    }
}

/// A customer's level with its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub level: Level,
    pub lifetime_margin: f64,
    pub explanation: String,
}

/// The level of a customer whose CLV score is `clv`.
pub fn assign(config: &Config, clv: &ClvScore) -> Assignment {
    let margin = clv.parts.clv * config.margin_rate;
    let level = Level::ALL
        .into_iter()
        .rev()
        .find(|l| config.levels.of(*l).is_none_or(|t| margin >= t))
        .unwrap_or(Level::Basic);
    let cur = &config.currency;
    let reached = match config.levels.of(level) {
        Some(t) => format!("at least the {} threshold {t:.2} {cur}", level.name()),
        None => "below every threshold".to_owned(),
    };
    let next = Level::ALL
        .get(level.rank() + 1)
        .and_then(|n| {
            config
                .levels
                .of(*n)
                .map(|t| format!(", under {} at {t:.2} {cur}", n.name()))
        })
        .unwrap_or_default();
    let explanation = format!(
        "{}: lifetime margin {margin:.2} {cur} = CLV {:.2} {cur} x margin {}% is {reached}{next}. \
         Treatment: {}. CLV: {}",
        level.name(),
        clv.parts.clv,
        config.margin_rate * 100.0,
        level.treatment(),
        clv.explanation(),
    );
    Assignment {
        level,
        lifetime_margin: margin,
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::score_purchases;
    use crate::summary::MS_PER_DAY;

    /// CDNOW's published parameters, weeks.
    fn config() -> Config {
        Config::from_json(
            r#"{"currency": "USD", "margin_rate": 0.5,
                "levels": {"reactive": 5, "accountable": 20, "proactive": 60, "partnership": 150},
                "model": {"bgnbd": {"r": 0.2426, "alpha": 4.4135, "a": 0.7929, "b": 2.4258},
                          "gamma_gamma": {"p": 6.25, "q": 3.74, "v": 15.45}}}"#,
        )
        .unwrap()
    }

    fn level_of(purchases: &[(i64, i64)], now_day: i64) -> Assignment {
        let config = config();
        let model = config.fixed_model().unwrap();
        let history = purchases.iter().map(|&(day, cents)| (day * MS_PER_DAY, "USD", cents));
        let clv = score_purchases(
            &model,
            &config.clv(),
            "c",
            history,
            now_day * MS_PER_DAY,
            &mut Vec::new(),
        )
        .unwrap();
        assign(&config, &clv)
    }

    #[test]
    fn levels_follow_lifetime_margin() {
        // One purchase a year ago: nearly certainly gone.
        let gone = level_of(&[(0, 2000)], 365);
        assert_eq!(gone.level, Level::Basic, "{}", gone.explanation);
        // Weekly big spender, last purchase yesterday.
        let weekly: Vec<(i64, i64)> = (0..40).map(|w| (w * 7, 30000)).collect();
        let top = level_of(&weekly, 281);
        assert_eq!(top.level, Level::Partnership, "{}", top.explanation);
        assert!(top.explanation.starts_with("partnership: lifetime margin "));
        assert!(
            top.explanation
                .contains("x margin 50% is at least the partnership threshold 150.00 USD")
        );
        // The margin is the CLV times the rate, and the level its bracket.
        for a in [&gone, &top] {
            let t = config().levels;
            let expect = match a.lifetime_margin {
                m if m >= t.partnership => Level::Partnership,
                m if m >= t.proactive => Level::Proactive,
                m if m >= t.accountable => Level::Accountable,
                m if m >= t.reactive => Level::Reactive,
                _ => Level::Basic,
            };
            assert_eq!(a.level, expect);
        }
    }

    #[test]
    fn config_is_checked() {
        assert!(
            Config::from_json(
                r#"{"currency": "USD", "margin_rate": 1.5,
            "levels": {"reactive": 1, "accountable": 2, "proactive": 3, "partnership": 4}}"#
            )
            .is_err()
        );
        assert!(
            Config::from_json(
                r#"{"currency": "USD", "margin_rate": 0.5,
            "levels": {"reactive": 5, "accountable": 2, "proactive": 3, "partnership": 4}}"#
            )
            .is_err()
        );
        assert!(
            Config::from_json(
                r#"{"currency": "usd", "margin_rate": 0.5,
            "levels": {"reactive": 1, "accountable": 2, "proactive": 3, "partnership": 4}}"#
            )
            .is_err()
        );
        assert!(Config::from_json(r#"{"margin_rate": 0.5}"#).is_err());
    }
}
