//! The plugin's surface for the binding layer: its configuration, the
//! fitted model it stores between `fit` and `score` calls, and per-customer
//! churn scores.
//!
//! Flow: the component turns each chunk of the host's purchase summaries
//! into (x, t_x, T) and fits a [`FittedModel`] that it stores as JSON in
//! the plugin's key-value store; scoring loads it and calls
//! [`score_purchase_times`] per customer (the rule of [`score_history`],
//! over the purchase times of the SDK's history). [`fit_population`] fits
//! from [`PurchaseAggregate`]s, for data that exists only aggregated.

use rapport_plugin_sdk::Name;
use serde::{Deserialize, Serialize};

use crate::fit::{FitError, fit_binned};
use crate::input::{History, PurchaseAggregate};
use crate::model::{ModelError, Params};
use crate::summary::{CustomerSummary, summarise_aggregate, summarise_purchases};

/// The plugin's per-tenant configuration (the JSON object from the host's
/// `config` capability; every key is optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Length of the model's time unit in days: 7 (weeks, the paper's unit)
    /// by default. α and t_x, T are expressed in it.
    pub time_unit_days: f64,
    /// Horizon of the expected-purchases forecast, in time units: 52 (one
    /// year of weeks) by default.
    pub horizon_periods: f64,
    /// The interaction kind that counts as a purchase (a shared string, so
    /// that building [`crate::Interaction`]s of this kind does not
    /// allocate).
    pub purchase_kind: Name,
    /// P(alive) below this is "high" churn risk (default 0.3).
    pub high_risk_below: f64,
    /// P(alive) at or above this is "low" churn risk (default 0.7); in
    /// between is "medium".
    pub low_risk_from: f64,
    /// Width in days of the grid t_x and T are rounded to before the fit
    /// groups identical rows; 0 (the default) fits the exact whole-day
    /// statistics. A coarser grid (7: weeks) means fewer distinct rows and
    /// an approximate fit (on CDNOW: parameters within 2 %, see the
    /// README); the fit is fast without it, so it is only for very long
    /// histories.
    pub fit_bin_days: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            time_unit_days: 7.0,
            horizon_periods: 52.0,
            purchase_kind: Name::from("purchase"),
            high_risk_below: 0.3,
            low_risk_from: 0.7,
            fit_bin_days: 0.0,
        }
    }
}

/// Everything that can go wrong, mapped by the binding layer onto the WIT
/// `plugin-error` (`InvalidConfig` → invalid-config, `NoModel` →
/// unavailable, the rest → invalid-input).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChurnError {
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("invalid stored model: {0}")]
    InvalidModel(String),
    #[error("no fitted model yet: run the fit first")]
    NoModel,
    #[error("customer {0} has no purchase up to now: BG/NBD starts at the first purchase")]
    NoPurchases(String),
    #[error("fit failed: {0}")]
    Fit(#[from] FitError),
    #[error("{0}")]
    Model(#[from] ModelError),
}

impl Config {
    /// Parses the tenant's configuration JSON ("{}" gives the defaults).
    pub fn from_json(json: &str) -> Result<Self, ChurnError> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| ChurnError::InvalidConfig(e.to_string()))?;
        // serde would also accept a JSON array for a struct; only an object
        // is a configuration.
        if !value.is_object() {
            return Err(ChurnError::InvalidConfig("expected a JSON object".into()));
        }
        let config: Config = serde_json::from_value(value).map_err(|e| ChurnError::InvalidConfig(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// [`Config::fit_bin_days`] in the model's time unit, for
    /// [`fit_binned`].
    pub fn fit_bin_width(&self) -> f64 {
        self.fit_bin_days / self.time_unit_days
    }

    pub fn validate(&self) -> Result<(), ChurnError> {
        let bad = |m: &str| Err(ChurnError::InvalidConfig(m.to_owned()));
        if !(self.time_unit_days.is_finite() && self.time_unit_days > 0.0) {
            return bad("time_unit_days must be a positive number");
        }
        if !(self.horizon_periods.is_finite() && self.horizon_periods >= 0.0) {
            return bad("horizon_periods must be a number >= 0");
        }
        if !(self.fit_bin_days.is_finite() && self.fit_bin_days >= 0.0) {
            return bad("fit_bin_days must be a number >= 0");
        }
        if self.purchase_kind.is_empty() {
            return bad("purchase_kind must not be empty");
        }
        let in_unit = |v: f64| (0.0..=1.0).contains(&v);
        if !(in_unit(self.high_risk_below) && in_unit(self.low_risk_from) && self.high_risk_below <= self.low_risk_from)
        {
            return bad("need 0 <= high_risk_below <= low_risk_from <= 1");
        }
        Ok(())
    }
}

/// The stored result of a fit: what `score` needs, plus what the operator
/// sees as the fit's JSON summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FittedModel {
    /// Format version of this JSON (1).
    pub version: u32,
    /// r, α, a, b; α in `time_unit_days` units.
    pub params: Params,
    pub time_unit_days: f64,
    /// The calibration end (the fit's "now"), epoch ms.
    pub fitted_at: i64,
    /// Customers with a purchase up to `fitted_at` (the fit's population).
    pub customers: usize,
    pub repeat_customers: usize,
    pub log_likelihood: f64,
}

impl FittedModel {
    pub const VERSION: u32 = 1;

    pub fn to_json(&self) -> String {
        // A struct of numbers always serialises; fall back to "{}" rather
        // than panic, which the loader then rejects as a missing model.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    pub fn from_json(json: &str) -> Result<Self, ChurnError> {
        let model: FittedModel = serde_json::from_str(json).map_err(|e| ChurnError::InvalidModel(e.to_string()))?;
        if model.version != Self::VERSION {
            return Err(ChurnError::InvalidModel(format!(
                "unsupported version {}",
                model.version
            )));
        }
        model.params.validate()?;
        if !(model.time_unit_days.is_finite() && model.time_unit_days > 0.0) {
            return Err(ChurnError::InvalidModel("time_unit_days must be positive".into()));
        }
        Ok(model)
    }
}

/// One customer's churn score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnScore {
    /// (x, t_x, T) in the model's time unit.
    pub summary: CustomerSummary,
    /// P(alive | x, t_x, T).
    pub p_alive: f64,
    /// 1 - P(alive): the score's value.
    pub churn_risk: f64,
    /// E[X(h) | x, t_x, T] with h = `horizon_periods`.
    pub expected_purchases: f64,
    pub horizon_periods: f64,
    /// "low", "medium" or "high" (from P(alive) and the risk thresholds).
    pub risk: &'static str,
}

impl ChurnScore {
    /// A one-line explanation for the WIT score's `explanation`.
    pub fn explanation(&self) -> String {
        format!(
            "BG/NBD: {} repeat purchase days, the last {:.2} periods after the first, \
             which was {:.2} periods ago; P(alive) = {:.3}; \
             expected purchases in the next {} periods: {:.2}",
            self.summary.frequency,
            self.summary.recency,
            self.summary.age,
            self.p_alive,
            self.horizon_periods,
            self.expected_purchases
        )
    }
}

/// Fits the tenant's model from purchase aggregates, with `now`
/// as the calibration end. Customers without a purchase up to `now` are
/// left out (BG/NBD starts at the first purchase). `purchases` should count
/// purchase days (see [`crate::summary`]).
pub fn fit_population(population: &[PurchaseAggregate], now: i64, config: &Config) -> Result<FittedModel, ChurnError> {
    config.validate()?;
    let summaries: Vec<CustomerSummary> = population
        .iter()
        .filter_map(|p| {
            summarise_aggregate(
                p.purchases,
                p.first_purchase_at,
                p.last_purchase_at,
                now,
                config.time_unit_days,
            )
        })
        .collect();
    let report = fit_binned(&summaries, config.fit_bin_width())?;
    Ok(FittedModel {
        version: FittedModel::VERSION,
        params: report.params,
        time_unit_days: config.time_unit_days,
        fitted_at: now,
        customers: report.customers,
        repeat_customers: report.repeat_customers,
        log_likelihood: report.log_likelihood,
    })
}

/// Scores one customer against a fitted model: (x, t_x, T) from their
/// purchases up to `history.now`, in the model's time unit; the horizon is
/// `config.horizon_periods` of `config.time_unit_days`, converted to the
/// model's unit if the configuration changed since the fit.
pub fn score_history(model: &FittedModel, config: &Config, history: &History) -> Result<ChurnScore, ChurnError> {
    let times: Vec<i64> = history
        .interactions
        .iter()
        .filter(|i| i.kind == config.purchase_kind)
        .map(|i| i.occurred_at)
        .collect();
    score_purchase_times(model, config, &history.customer, &times, history.now)
}

/// [`score_history`] from the customer's purchase times (epoch ms, any
/// order) up to `now`: what the component calls on the SDK's history,
/// without building a [`History`] per customer. `customer` (the id) only
/// names them in the error when there is no purchase.
pub fn score_purchase_times(
    model: &FittedModel,
    config: &Config,
    customer: &str,
    purchase_times_ms: &[i64],
    now: i64,
) -> Result<ChurnScore, ChurnError> {
    config.validate()?;
    let summary = summarise_purchases(purchase_times_ms, now, model.time_unit_days)
        .ok_or_else(|| ChurnError::NoPurchases(customer.to_owned()))?;
    let horizon = config.horizon_periods * config.time_unit_days / model.time_unit_days;
    let p_alive = model.params.p_alive(&summary)?;
    let expected_purchases = model.params.conditional_expected_purchases(horizon, &summary)?;
    let risk = if p_alive < config.high_risk_below {
        "high"
    } else if p_alive >= config.low_risk_from {
        "low"
    } else {
        "medium"
    };
    Ok(ChurnScore {
        summary,
        p_alive,
        churn_risk: 1.0 - p_alive,
        expected_purchases,
        horizon_periods: config.horizon_periods,
        risk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Interaction;
    use crate::summary::MS_PER_DAY;

    const PAPER: Params = Params {
        r: 0.2426,
        alpha: 4.4135,
        a: 0.7929,
        b: 2.4258,
    };

    fn model() -> FittedModel {
        FittedModel {
            version: 1,
            params: PAPER,
            time_unit_days: 7.0,
            fitted_at: 0,
            customers: 2357,
            repeat_customers: 946,
            log_likelihood: -9582.4,
        }
    }

    fn purchase(day: i64) -> Interaction {
        Interaction {
            kind: "purchase".into(),
            occurred_at: day * MS_PER_DAY + 3_600_000,
            amount_minor: Some(1000),
        }
    }

    #[test]
    fn config_defaults_and_validation() {
        let c = Config::from_json("{}").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.time_unit_days, 7.0);
        assert_eq!(c.horizon_periods, 52.0);
        let c = Config::from_json(r#"{"time_unit_days": 1, "horizon_periods": 365}"#).unwrap();
        assert_eq!((c.time_unit_days, c.horizon_periods), (1.0, 365.0));
        let c = Config::from_json(r#"{"fit_bin_days": 7}"#).unwrap();
        assert_eq!(c.fit_bin_width(), 1.0);
        for bad in [
            r#"{"fit_bin_days": -1}"#,
            r#"{"time_unit_days": 0}"#,
            r#"{"horizon_periods": -1}"#,
            r#"{"high_risk_below": 0.8, "low_risk_from": 0.5}"#,
            r#"{"unknown": 1}"#,
            r#"[]"#,
        ] {
            assert!(
                matches!(Config::from_json(bad), Err(ChurnError::InvalidConfig(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn scores_a_history_like_the_paper_formulas() {
        // Purchases on days 0, 0 (same day), 70 and 210; now = day 272: x=2,
        // t_x = 30 weeks, T = 272/7 weeks; the purchase on day 300 and the
        // visit are ignored.
        let mut interactions = vec![purchase(0), purchase(0), purchase(70), purchase(210), purchase(300)];
        interactions.push(Interaction {
            kind: "visit".into(),
            occurred_at: 271 * MS_PER_DAY,
            amount_minor: None,
        });
        let history = History {
            customer: "c1".into(),
            interactions,
            now: 272 * MS_PER_DAY + 5,
        };
        let s = score_history(&model(), &Config::default(), &history).unwrap();
        assert_eq!(s.summary.frequency, 2);
        assert_eq!(s.summary.recency, 30.0);
        assert_eq!(s.summary.age, 272.0 / 7.0);
        let p = PAPER.p_alive(&s.summary).unwrap();
        assert_eq!(s.p_alive, p);
        assert_eq!(s.churn_risk, 1.0 - p);
        assert_eq!(
            s.expected_purchases,
            PAPER.conditional_expected_purchases(52.0, &s.summary).unwrap()
        );
        assert_eq!(s.risk, if p >= 0.7 { "low" } else { "medium" });

        // The same horizon in days gives the same forecast.
        let days = Config {
            time_unit_days: 1.0,
            horizon_periods: 364.0,
            ..Config::default()
        };
        let d = score_history(&model(), &days, &history).unwrap();
        assert!((d.expected_purchases - s.expected_purchases).abs() < 1e-12);
    }

    #[test]
    fn customers_without_purchases_are_an_error() {
        let history = History {
            customer: "c2".into(),
            interactions: vec![purchase(10)],
            now: 5 * MS_PER_DAY,
        };
        assert_eq!(
            score_history(&model(), &Config::default(), &history),
            Err(ChurnError::NoPurchases("c2".into()))
        );
    }

    #[test]
    fn model_json_round_trips_and_is_checked() {
        let m = model();
        let json = m.to_json();
        assert_eq!(
            json,
            r#"{"version":1,"params":{"r":0.2426,"alpha":4.4135,"a":0.7929,"b":2.4258},"time_unit_days":7.0,"fitted_at":0,"customers":2357,"repeat_customers":946,"log_likelihood":-9582.4}"#
        );
        assert_eq!(FittedModel::from_json(&json).unwrap(), m);
        assert!(matches!(FittedModel::from_json("{}"), Err(ChurnError::InvalidModel(_))));
        let negative = json.replace("0.2426", "-0.2426");
        assert!(matches!(FittedModel::from_json(&negative), Err(ChurnError::Model(_))));
    }

    #[test]
    fn small_populations_without_visible_drop_out_are_degenerate() {
        // Five customers who all look like steady Poisson buyers: the
        // likelihood is maximised as a, b run off to infinity, which is
        // reported instead of storing a meaningless model. (The CDNOW
        // integration test covers a successful `fit_population`.)
        let now = 100 * MS_PER_DAY;
        let row = |id: &str, n: u32, first: i64, last: i64| PurchaseAggregate {
            customer_id: id.into(),
            purchases: n,
            first_purchase_at: Some(first * MS_PER_DAY),
            last_purchase_at: Some(last * MS_PER_DAY),
            total_spend_minor: 0,
            created_at: 0,
        };
        let population = vec![
            row("a", 4, 0, 90),
            row("b", 2, 10, 20),
            row("c", 3, 5, 99),
            row("d", 1, 30, 30),
            row("e", 1, 60, 60),
        ];
        assert!(matches!(
            fit_population(&population, now, &Config::default()),
            Err(ChurnError::Fit(FitError::Degenerate(_)))
        ));
        assert!(matches!(
            fit_population(&population[3..], now, &Config::default()),
            Err(ChurnError::Fit(FitError::NotIdentifiable))
        ));
    }
}
