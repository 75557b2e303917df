//! The plugin's surface for the binding layer: its configuration, the
//! model it stores between `fit` and `score` calls, the population fit and
//! per-customer CLV scores.
//!
//! Flow: the fit turns every customer's purchases in the configured
//! currency into a [`SpendSummary`] and [`fit_model`] fits BG/NBD on all of
//! them and Gamma-Gamma on those with repeat purchases, into a
//! [`FittedModel`] the binding stores as JSON. `score` loads it and calls
//! [`score_purchases`] per customer.

use rapport_plugin_sdk::Name;
use serde::{Deserialize, Serialize};

use crate::bgnbd::{FitError, fit as fit_bgnbd};
use crate::gamma_gamma::{GammaGammaError, SpendParams, fit as fit_spend};
use crate::model::{ModelError, Params};
use crate::spend::{SpendSummary, summarise_spend};
use crate::value::{ClvParts, customer_lifetime_value};

/// The plugin's per-tenant configuration (a JSON object; `currency` is
/// required, every other key optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The ISO 4217 currency whose spend is valued ("USD"); purchases in
    /// other currencies are left out of both models and counted.
    pub currency: String,
    /// The CLV horizon in months (default 12).
    pub horizon_months: u32,
    /// Monthly discount rate (default 0.01, i.e. 1 %/month).
    pub discount_rate: f64,
    /// The BG/NBD time unit in days (default 7, weeks, as in the papers).
    pub time_unit_days: f64,
    /// Days per month (default 30.415, so that a month is `lifetimes`'
    /// 4.345 weeks; lifetimes' `freq="D"` uses 30).
    pub days_per_month: f64,
    /// The interaction kind that counts as a purchase.
    pub purchase_kind: Name,
    /// CLV at or above this is "high"; unset: the fitted population's 80th
    /// percentile.
    pub high_from: Option<f64>,
    /// CLV below this is "low"; unset: the fitted population's median.
    pub low_below: Option<f64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            currency: String::new(),
            horizon_months: 12,
            discount_rate: 0.01,
            time_unit_days: 7.0,
            days_per_month: 30.415,
            purchase_kind: Name::from("purchase"),
            high_from: None,
            low_below: None,
        }
    }
}

/// Everything that can go wrong, mapped by the binding layer onto the WIT
/// `plugin-error` (`InvalidConfig` → invalid-config, `NoModel` and
/// `InvalidModel` → unavailable, the rest → invalid-input).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClvError {
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("invalid stored model: {0}")]
    InvalidModel(String),
    #[error("no fitted model yet: run the fit first")]
    NoModel,
    #[error("customer {customer} has no {currency} purchase up to now: BG/NBD starts at the first purchase")]
    NoPurchases { customer: String, currency: String },
    #[error("BG/NBD fit failed: {0}")]
    Fit(#[from] FitError),
    #[error("Gamma-Gamma fit failed: {0}")]
    Spend(#[from] GammaGammaError),
    #[error("{0}")]
    Model(#[from] ModelError),
}

impl Config {
    /// Parses the tenant's configuration JSON.
    pub fn from_json(json: &str) -> Result<Self, ClvError> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| ClvError::InvalidConfig(e.to_string()))?;
        if !value.is_object() {
            return Err(ClvError::InvalidConfig("expected a JSON object".into()));
        }
        let config: Config = serde_json::from_value(value).map_err(|e| ClvError::InvalidConfig(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ClvError> {
        let bad = |m: &str| Err(ClvError::InvalidConfig(m.to_owned()));
        let c = self.currency.as_bytes();
        if !(c.len() == 3 && c.iter().all(u8::is_ascii_uppercase)) {
            return bad("currency is required: an ISO 4217 code such as \"USD\"");
        }
        if self.horizon_months > 1200 {
            return bad("horizon_months must be at most 1200");
        }
        if !(self.discount_rate.is_finite() && self.discount_rate > -1.0) {
            return bad("discount_rate must be a number > -1 (0.01 is 1 %/month)");
        }
        if !(self.time_unit_days.is_finite() && self.time_unit_days > 0.0) {
            return bad("time_unit_days must be a positive number");
        }
        if !(self.days_per_month.is_finite() && self.days_per_month > 0.0) {
            return bad("days_per_month must be a positive number");
        }
        if self.purchase_kind.is_empty() {
            return bad("purchase_kind must not be empty");
        }
        for v in [self.high_from, self.low_below].into_iter().flatten() {
            if !v.is_finite() {
                return bad("high_from and low_below must be finite numbers");
            }
        }
        if let (Some(high), Some(low)) = (self.high_from, self.low_below)
            && low > high
        {
            return bad("need low_below <= high_from");
        }
        Ok(())
    }
}

/// CLV percentiles of the fitted population, the default band thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PopulationClv {
    /// Horizon and discount the percentiles were computed with (the
    /// configuration at fit time).
    pub horizon_months: u32,
    pub discount_rate: f64,
    /// Customers the percentiles were computed over (every customer up to
    /// 20,000, else every k-th, k = ⌈customers / 20,000⌉).
    pub sampled: usize,
    pub median: f64,
    pub p80: f64,
}

/// The stored result of a fit (JSON in kv), also the fit's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FittedModel {
    /// Format version of this JSON (1).
    pub version: u32,
    /// The currency both models were fitted in.
    pub currency: String,
    /// r, α, a, b; α in `time_unit_days` units.
    pub bgnbd: Params,
    /// p, q, v; v in the currency's major units.
    pub gamma_gamma: SpendParams,
    pub time_unit_days: f64,
    /// The calibration end (the fit's "now"), epoch ms.
    pub fitted_at: i64,
    /// Customers with a purchase in `currency` up to `fitted_at` (the
    /// BG/NBD population).
    pub customers: usize,
    /// Of them, customers with a repeat purchase day (x ≥ 1).
    pub repeat_customers: usize,
    /// Of those, the ones in the Gamma-Gamma fit (m > 0); the rest had a
    /// zero or negative mean repeat spend.
    pub spend_customers: usize,
    /// Purchases in other currencies, left out.
    pub other_currency_purchases: u64,
    pub bgnbd_log_likelihood: f64,
    pub gamma_gamma_log_likelihood: f64,
    pub population_clv: PopulationClv,
}

impl FittedModel {
    pub const VERSION: u32 = 1;

    pub fn to_json(&self) -> String {
        // A struct of numbers and one string always serialises; "{}" (which
        // the loader rejects) rather than a panic.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    pub fn from_json(json: &str) -> Result<Self, ClvError> {
        let model: FittedModel = serde_json::from_str(json).map_err(|e| ClvError::InvalidModel(e.to_string()))?;
        if model.version != Self::VERSION {
            return Err(ClvError::InvalidModel(format!("unsupported version {}", model.version)));
        }
        model.bgnbd.validate()?;
        model.gamma_gamma.validate()?;
        if !(model.time_unit_days.is_finite() && model.time_unit_days > 0.0) {
            return Err(ClvError::InvalidModel("time_unit_days must be positive".into()));
        }
        Ok(model)
    }

    /// Model time units per month under `config`.
    fn periods_per_month(&self, config: &Config) -> f64 {
        config.days_per_month / self.time_unit_days
    }
}

/// The most customers whose CLV is computed at fit time for the default
/// band thresholds; beyond it every k-th customer (percentiles need no
/// more, and each CLV costs 2 × horizon hypergeometric series).
const PERCENTILE_SAMPLE: usize = 20_000;

/// Fits both models from every customer's [`SpendSummary`] (in
/// `config.time_unit_days`) with `now` as the calibration end.
pub fn fit_model(
    customers: &[SpendSummary],
    other_currency_purchases: u64,
    now: i64,
    config: &Config,
) -> Result<FittedModel, ClvError> {
    config.validate()?;
    let summaries: Vec<_> = customers.iter().map(|c| c.summary).collect();
    let bgnbd = fit_bgnbd(&summaries)?;
    drop(summaries);
    let repeat: Vec<(u32, f64)> = customers
        .iter()
        .filter(|c| c.summary.frequency > 0)
        .map(|c| (c.summary.frequency, c.monetary))
        .collect();
    let repeat_customers = repeat.len();
    let positive: Vec<(u32, f64)> = repeat.into_iter().filter(|&(_, m)| m > 0.0).collect();
    let spend = fit_spend(&positive)?;

    let stride = customers.len().div_ceil(PERCENTILE_SAMPLE).max(1);
    let per_month = config.days_per_month / config.time_unit_days;
    let mut values = customers
        .iter()
        .step_by(stride)
        .map(|c| {
            customer_lifetime_value(
                &bgnbd.params,
                &spend.params,
                c,
                config.horizon_months,
                config.discount_rate,
                per_month,
            )
            .map(|v| v.clv)
        })
        .collect::<Result<Vec<f64>, ModelError>>()?;
    values.sort_by(f64::total_cmp);
    Ok(FittedModel {
        version: FittedModel::VERSION,
        currency: config.currency.clone(),
        bgnbd: bgnbd.params,
        gamma_gamma: spend.params,
        time_unit_days: config.time_unit_days,
        fitted_at: now,
        customers: customers.len(),
        repeat_customers,
        spend_customers: positive.len(),
        other_currency_purchases,
        bgnbd_log_likelihood: bgnbd.log_likelihood,
        gamma_gamma_log_likelihood: spend.log_likelihood,
        population_clv: PopulationClv {
            horizon_months: config.horizon_months,
            discount_rate: config.discount_rate,
            sampled: values.len(),
            median: percentile(&values, 0.5),
            p80: percentile(&values, 0.8),
        },
    })
}

/// The `q` quantile of sorted values, linear between closest ranks (numpy's
/// default); 0 for none.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// One customer's CLV score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClvScore {
    pub summary: SpendSummary,
    pub parts: ClvParts,
    pub currency: String,
    pub horizon_months: u32,
    pub discount_rate: f64,
    /// Purchases of this customer in other currencies, left out.
    pub other_currency_purchases: u32,
    /// "high", "medium" or "low".
    pub band: &'static str,
}

impl ClvScore {
    /// The score's explanation in words.
    pub fn explanation(&self) -> String {
        let history = if self.summary.summary.frequency == 0 {
            "no repeat purchase yet, so the population's mean spend".to_owned()
        } else {
            format!(
                "{} repeat purchase days, mean {:.2} {}",
                self.summary.summary.frequency, self.summary.monetary, self.currency
            )
        };
        let mut text = format!(
            "expected {:.2} purchases in {} months x expected spend {:.2} {} per purchase, \
             discounted at {}%/month = {:.2} {} (P(alive) {:.3}; {history})",
            self.parts.expected_purchases,
            self.horizon_months,
            self.parts.expected_spend,
            self.currency,
            self.discount_rate * 100.0,
            self.parts.clv,
            self.currency,
            self.parts.p_alive,
        );
        match self.other_currency_purchases {
            0 => {}
            1 => text.push_str("; 1 purchase in another currency ignored"),
            n => text.push_str(&format!("; {n} purchases in other currencies ignored")),
        }
        text
    }
}

/// Scores one customer from their purchases as (epoch ms, currency, amount
/// in minor units), any order, up to `now`. `customer` names them in the
/// error when they have no purchase in the currency.
pub fn score_purchases<'a>(
    model: &FittedModel,
    config: &Config,
    customer: &str,
    purchases: impl IntoIterator<Item = (i64, &'a str, i64)>,
    now: i64,
    buffer: &mut Vec<(i64, i64)>,
) -> Result<ClvScore, ClvError> {
    if config.currency != model.currency {
        return Err(ClvError::InvalidModel(format!(
            "fitted in {}, configured for {}",
            model.currency, config.currency
        )));
    }
    buffer.clear();
    let mut other = 0u32;
    for (at, currency, minor) in purchases {
        if currency == config.currency {
            buffer.push((at, minor));
        } else {
            other = other.saturating_add(1);
        }
    }
    let digits = rapport_plugin_sdk::money::minor_digits(&config.currency);
    let summary = summarise_spend(buffer, now, model.time_unit_days, digits).ok_or_else(|| ClvError::NoPurchases {
        customer: customer.to_owned(),
        currency: config.currency.clone(),
    })?;
    let parts = customer_lifetime_value(
        &model.bgnbd,
        &model.gamma_gamma,
        &summary,
        config.horizon_months,
        config.discount_rate,
        model.periods_per_month(config),
    )?;
    let high = config.high_from.unwrap_or(model.population_clv.p80);
    let low = config.low_below.unwrap_or(model.population_clv.median);
    let band = if parts.clv >= high {
        "high"
    } else if parts.clv < low {
        "low"
    } else {
        "medium"
    };
    Ok(ClvScore {
        summary,
        parts,
        currency: config.currency.clone(),
        horizon_months: config.horizon_months,
        discount_rate: config.discount_rate,
        other_currency_purchases: other,
        band,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::MS_PER_DAY;

    fn usd() -> Config {
        Config {
            currency: "USD".into(),
            ..Config::default()
        }
    }

    fn model() -> FittedModel {
        FittedModel {
            version: 1,
            currency: "USD".into(),
            bgnbd: Params {
                r: 0.2426,
                alpha: 4.4135,
                a: 0.7929,
                b: 2.4258,
            },
            gamma_gamma: SpendParams {
                p: 6.25,
                q: 3.74,
                v: 15.45,
            },
            time_unit_days: 7.0,
            fitted_at: 0,
            customers: 2357,
            repeat_customers: 946,
            spend_customers: 946,
            other_currency_purchases: 0,
            bgnbd_log_likelihood: -9582.4,
            gamma_gamma_log_likelihood: -4000.0,
            population_clv: PopulationClv {
                horizon_months: 12,
                discount_rate: 0.01,
                sampled: 2357,
                median: 5.0,
                p80: 20.0,
            },
        }
    }

    #[test]
    fn config_requires_a_currency_and_checks_its_numbers() {
        let c = Config::from_json(r#"{"currency": "USD"}"#).unwrap();
        assert_eq!(c, usd());
        assert_eq!((c.horizon_months, c.discount_rate, c.time_unit_days), (12, 0.01, 7.0));
        for bad in [
            "{}",
            r#"{"currency": "usd"}"#,
            r#"{"currency": "USD", "discount_rate": -1}"#,
            r#"{"currency": "USD", "time_unit_days": 0}"#,
            r#"{"currency": "USD", "horizon_months": -3}"#,
            r#"{"currency": "USD", "high_from": 10, "low_below": 20}"#,
            r#"{"currency": "USD", "bands": 1}"#,
            "[]",
        ] {
            assert!(
                matches!(Config::from_json(bad), Err(ClvError::InvalidConfig(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn scores_one_currency_and_counts_the_others() {
        // USD on days 0, 70 (10 + 20 the same day) and 210; a EUR purchase
        // ignored; now = day 272 (38.86 weeks).
        let day = |d: i64| d * MS_PER_DAY + 3_600_000;
        let purchases = [
            (day(0), "USD", 5000),
            (day(70), "USD", 1000),
            (day(70), "USD", 2000),
            (day(100), "EUR", 9999),
            (day(210), "USD", 1000),
        ];
        let mut buffer = Vec::new();
        let s = score_purchases(&model(), &usd(), "c1", purchases, 272 * MS_PER_DAY, &mut buffer).unwrap();
        assert_eq!(s.summary.summary.frequency, 2);
        assert_eq!(s.summary.monetary, 20.0);
        assert_eq!(s.other_currency_purchases, 1);
        let want =
            customer_lifetime_value(&model().bgnbd, &model().gamma_gamma, &s.summary, 12, 0.01, 30.415 / 7.0).unwrap();
        assert_eq!(s.parts, want);
        assert_eq!(
            s.band,
            if want.clv >= 20.0 {
                "high"
            } else if want.clv < 5.0 {
                "low"
            } else {
                "medium"
            }
        );
        let text = s.explanation();
        assert!(text.starts_with(&format!(
            "expected {:.2} purchases in 12 months x expected spend {:.2} USD per purchase, discounted at 1%/month = {:.2} USD",
            want.expected_purchases, want.expected_spend, want.clv
        )), "{text}");
        assert!(text.ends_with("; 1 purchase in another currency ignored"), "{text}");

        // A one-time buyer gets the population's mean spend.
        let once = score_purchases(
            &model(),
            &usd(),
            "c3",
            [(day(0), "USD", 700)],
            272 * MS_PER_DAY,
            &mut buffer,
        )
        .unwrap();
        assert_eq!(once.parts.expected_spend, model().gamma_gamma.mean_spend());
        assert!(
            once.explanation()
                .ends_with("(P(alive) 1.000; no repeat purchase yet, so the population's mean spend)")
        );

        // Explicit thresholds override the population's percentiles.
        let strict = Config {
            high_from: Some(1e9),
            low_below: Some(1e8),
            ..usd()
        };
        let s = score_purchases(&model(), &strict, "c1", purchases, 272 * MS_PER_DAY, &mut buffer).unwrap();
        assert_eq!(s.band, "low");
    }

    #[test]
    fn no_purchase_in_the_currency_and_a_changed_currency_are_errors() {
        let mut buffer = Vec::new();
        assert_eq!(
            score_purchases(&model(), &usd(), "c2", [(0, "EUR", 100)], MS_PER_DAY, &mut buffer),
            Err(ClvError::NoPurchases {
                customer: "c2".into(),
                currency: "USD".into()
            })
        );
        let eur = Config {
            currency: "EUR".into(),
            ..usd()
        };
        assert!(matches!(
            score_purchases(&model(), &eur, "c2", [(0, "EUR", 100)], MS_PER_DAY, &mut buffer),
            Err(ClvError::InvalidModel(_))
        ));
    }

    #[test]
    fn model_json_round_trips_and_is_checked() {
        let m = model();
        assert_eq!(FittedModel::from_json(&m.to_json()).unwrap(), m);
        assert!(matches!(FittedModel::from_json("{}"), Err(ClvError::InvalidModel(_))));
        let q_below_one = m.to_json().replace("\"q\":3.74", "\"q\":0.5");
        assert!(matches!(FittedModel::from_json(&q_below_one), Err(ClvError::Spend(_))));
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert!((percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.8) - 4.2).abs() < 1e-12);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
