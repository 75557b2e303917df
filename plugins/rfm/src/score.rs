//! The plugin's surface for the binding layer: its configuration, the
//! fitted model (quintile thresholds) it stores between `fit` and `score`
//! calls, and per-customer scores.
//!
//! Flow: the component turns each chunk of the host's purchase summaries
//! into [`crate::RfmValues`] and [`fit`]s them into an [`RfmModel`] that it
//! stores as JSON in the plugin's key-value store; scoring loads it and
//! scores each customer's values. [`fit_population`] and [`score_history`]
//! are the same rules over [`PurchaseAggregate`]s and this crate's
//! [`History`], for native use.

use rapport_plugin_sdk::Name;
use serde::{Deserialize, Serialize};

use crate::input::{History, PurchaseAggregate};
use crate::quintile::{score_higher_better, score_lower_better, thresholds_higher_better, thresholds_lower_better};
use crate::segment::{Segment, fm};
use crate::values::RfmValues;

/// The plugin's per-tenant configuration (the JSON object from the host's
/// `config` capability; every key is optional).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Length of the window in days, ending at the host's "now" (default
    /// 365). Takes effect at the next fit: scoring uses the window the
    /// model was fitted with, so values and thresholds stay comparable.
    pub window_days: u32,
    /// The interaction kind that counts as a purchase (a shared string,
    /// so that building [`crate::Interaction`]s of this kind does not
    /// allocate).
    pub purchase_kind: Name,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window_days: 365,
            purchase_kind: Name::from("purchase"),
        }
    }
}

/// Everything that can go wrong, mapped by the binding layer onto the WIT
/// `plugin-error` (`InvalidConfig` → invalid-config, `NoModel` and
/// `InvalidModel` → unavailable, `EmptyPopulation` → invalid-input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RfmError {
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("invalid stored model: {0}")]
    InvalidModel(String),
    #[error("no fitted model yet: run the fit first")]
    NoModel,
    #[error("no customer has a purchase in the last {0} days: nothing to fit")]
    EmptyPopulation(u32),
}

impl Config {
    /// Parses the tenant's configuration JSON ("{}" gives the defaults).
    pub fn from_json(json: &str) -> Result<Self, RfmError> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| RfmError::InvalidConfig(e.to_string()))?;
        // serde would also accept a JSON array for a struct; only an object
        // is a configuration.
        if !value.is_object() {
            return Err(RfmError::InvalidConfig("expected a JSON object".into()));
        }
        let config: Config = serde_json::from_value(value).map_err(|e| RfmError::InvalidConfig(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), RfmError> {
        if !(1..=36_500).contains(&self.window_days) {
            return Err(RfmError::InvalidConfig(
                "window_days must be between 1 and 36500".into(),
            ));
        }
        if self.purchase_kind.is_empty() {
            return Err(RfmError::InvalidConfig("purchase_kind must not be empty".into()));
        }
        Ok(())
    }
}

/// The stored result of a fit: the population's quintile thresholds (see
/// [`crate::quintile`]) and what the operator sees as the fit's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RfmModel {
    /// Format version of this JSON (1).
    pub version: u32,
    pub window_days: u32,
    /// The fit's "now", epoch ms.
    pub fitted_at: i64,
    /// Customers with a purchase in the window (the fit's population).
    pub customers: usize,
    /// Non-increasing; R = 1 + #{k : days since last purchase < t_k}.
    pub recency_days: [i64; 4],
    /// Non-decreasing; F = 1 + #{k : purchases > t_k}.
    pub frequency: [u32; 4],
    /// Non-decreasing; M = 1 + #{k : spend > t_k}.
    pub monetary_minor: [i64; 4],
}

impl RfmModel {
    pub const VERSION: u32 = 1;

    pub fn to_json(&self) -> String {
        // A struct of integers always serialises; fall back to "{}" rather
        // than panic, which the loader then rejects.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    pub fn from_json(json: &str) -> Result<Self, RfmError> {
        let model: RfmModel = serde_json::from_str(json).map_err(|e| RfmError::InvalidModel(e.to_string()))?;
        if model.version != Self::VERSION {
            return Err(RfmError::InvalidModel(format!("unsupported version {}", model.version)));
        }
        let sorted = model.recency_days.is_sorted_by(|a, b| a >= b)
            && model.frequency.is_sorted()
            && model.monetary_minor.is_sorted();
        if !sorted || model.window_days == 0 {
            return Err(RfmError::InvalidModel("thresholds out of order".into()));
        }
        Ok(model)
    }
}

/// One customer's RFM score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RfmScore {
    pub r: u8,
    pub f: u8,
    pub m: u8,
    /// ⌈(F + M) / 2⌉, the column of the segment grid.
    pub fm: u8,
    /// The 3-digit cell, e.g. "545".
    pub cell: String,
    pub segment: Segment,
    /// The raw values; `None` when the customer has no purchase in the
    /// window (scored R = F = M = 1, segment Lost).
    pub values: Option<RfmValues>,
}

impl RfmScore {
    /// R + F + M (3-15): the suggested numeric value of the WIT score.
    pub fn total(&self) -> u8 {
        self.r + self.f + self.m
    }

    /// A one-line explanation for the WIT score's `explanation`.
    pub fn explanation(&self, window_days: u32) -> String {
        match &self.values {
            Some(v) => format!(
                "RFM {} ({}): last purchase {} days ago (R={}), {} purchases (F={}) \
                 and {} spent (minor units, M={}) in the last {} days",
                self.cell,
                self.segment.name(),
                v.recency_days,
                self.r,
                v.frequency,
                self.f,
                v.monetary_minor,
                self.m,
                window_days
            ),
            None => format!(
                "RFM {} ({}): no purchase in the last {} days",
                self.cell,
                self.segment.name(),
                window_days
            ),
        }
    }
}

/// Fits the quintile thresholds over the customers' values (customers
/// without a purchase in the window are not part of the population).
pub fn fit(population: &[RfmValues], window_days: u32, now: i64) -> Result<RfmModel, RfmError> {
    let recency: Vec<i64> = population.iter().map(|v| v.recency_days).collect();
    let frequency: Vec<u32> = population.iter().map(|v| v.frequency).collect();
    let monetary: Vec<i64> = population.iter().map(|v| v.monetary_minor).collect();
    let (Some(recency_days), Some(frequency), Some(monetary_minor)) = (
        thresholds_lower_better(&recency),
        thresholds_higher_better(&frequency),
        thresholds_higher_better(&monetary),
    ) else {
        return Err(RfmError::EmptyPopulation(window_days));
    };
    Ok(RfmModel {
        version: RfmModel::VERSION,
        window_days,
        fitted_at: now,
        customers: population.len(),
        recency_days,
        frequency,
        monetary_minor,
    })
}

/// Fits the tenant's model from purchase aggregates (see
/// [`RfmValues::from_summary`] for what the window means for them).
pub fn fit_population(population: &[PurchaseAggregate], now: i64, config: &Config) -> Result<RfmModel, RfmError> {
    config.validate()?;
    let values: Vec<RfmValues> = population
        .iter()
        .filter_map(|s| RfmValues::from_summary(s, now, config.window_days))
        .collect();
    fit(&values, config.window_days, now)
}

/// Scores one customer's values against the model; `None` (no purchase in
/// the window) scores R = F = M = 1.
pub fn score(model: &RfmModel, values: Option<RfmValues>) -> RfmScore {
    let (r, f, m) = match &values {
        Some(v) => (
            score_lower_better(v.recency_days, &model.recency_days),
            score_higher_better(v.frequency, &model.frequency),
            score_higher_better(v.monetary_minor, &model.monetary_minor),
        ),
        None => (1, 1, 1),
    };
    RfmScore {
        r,
        f,
        m,
        fm: fm(f, m),
        cell: cell(r, f, m),
        segment: Segment::of(r, f, m),
        values,
    }
}

/// The 3-digit cell, e.g. "545", from scores 1-5 (written digit by digit:
/// `format!` was a visible part of scoring a customer inside wasm).
fn cell(r: u8, f: u8, m: u8) -> String {
    [r, f, m]
        .into_iter()
        .map(|d| char::from_digit(u32::from(d), 10).unwrap_or('?'))
        .collect()
}

/// Scores a customer's history: their values over the model's window
/// ending at `history.now`, purchases being `config.purchase_kind`.
pub fn score_history(model: &RfmModel, config: &Config, history: &History) -> RfmScore {
    score(
        model,
        RfmValues::from_history(history, model.window_days, &config.purchase_kind),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Interaction;
    use crate::values::MS_PER_DAY;

    const DAY: i64 = MS_PER_DAY;

    fn v(recency_days: i64, frequency: u32, monetary_minor: i64) -> RfmValues {
        RfmValues {
            recency_days,
            frequency,
            monetary_minor,
        }
    }

    /// A worked example of ten customers, scored with pandas 3.1:
    /// `pd.cut(s.rank(method="min"), [1, 2.8, 4.6, 6.4, 8.2, 10],
    /// labels=[1, 2, 3, 4, 5], include_lowest=True)` for s = -days, f, m.
    /// Min-ranks: R (from -days) A10 B7 C7 D6 E5 F4 G3 H2 I1 J9; F A10 B8
    /// C1 D7 E1 F5 G1 H9 I1 J5; M A10 B8 C3 D7 E2 F5 G4 H9 I1 J6.
    fn population() -> Vec<RfmValues> {
        vec![
            v(2, 9, 90_000),   // A
            v(10, 5, 40_000),  // B
            v(10, 1, 2_500),   // C
            v(40, 3, 15_000),  // D
            v(75, 1, 1_000),   // E
            v(120, 2, 8_000),  // F
            v(200, 1, 3_000),  // G
            v(300, 7, 60_000), // H
            v(350, 1, 500),    // I
            v(5, 2, 12_000),   // J
        ]
    }

    #[test]
    fn worked_example_matches_pandas() {
        let model = fit(&population(), 365, 0).unwrap();
        // Sorted worst to best, positions (n-1)k/5 = 1, 3, 5, 7.
        assert_eq!(model.recency_days, [300, 120, 40, 10]);
        assert_eq!(model.frequency, [1, 1, 2, 5]);
        assert_eq!(model.monetary_minor, [1_000, 3_000, 12_000, 40_000]);
        let cells: Vec<(String, Segment)> = population()
            .into_iter()
            .map(|c| {
                let s = score(&model, Some(c));
                (s.cell, s.segment)
            })
            .collect();
        use Segment::*;
        let want = [
            ("555", Champions),         // A
            ("444", LoyalCustomers),    // B: 10 days, tied with C (min-rank 7)
            ("412", PotentialLoyalist), // C: FM = ⌈(1 + 2) / 2⌉ = 2
            ("344", LoyalCustomers),    // D
            ("311", AboutToSleep),      // E
            ("233", AtRisk),            // F
            ("212", Hibernating),       // G
            ("155", CantLoseThem),      // H
            ("111", Lost),              // I
            ("533", PotentialLoyalist), // J
        ];
        let want: Vec<(String, Segment)> = want.iter().map(|(c, s)| (c.to_string(), *s)).collect();
        assert_eq!(cells, want);
    }

    #[test]
    fn customers_without_purchases_in_the_window_are_111_lost() {
        let model = fit(&population(), 365, 0).unwrap();
        let history = History {
            customer: "x".into(),
            interactions: vec![Interaction {
                kind: "purchase".into(),
                occurred_at: -400 * DAY,
                amount_minor: Some(1_000_000),
            }],
            now: 0,
        };
        let s = score_history(&model, &Config::default(), &history);
        assert_eq!(
            (s.r, s.f, s.m, s.cell.as_str(), s.segment),
            (1, 1, 1, "111", Segment::Lost)
        );
        assert_eq!(s.values, None);
        assert_eq!(s.total(), 3);
        assert_eq!(s.explanation(365), "RFM 111 (Lost): no purchase in the last 365 days");
    }

    #[test]
    fn histories_score_over_the_models_window() {
        let model = fit(&population(), 365, 0).unwrap();
        let now = 1_000 * DAY;
        let purchase = |days_ago: i64, amount: i64| Interaction {
            kind: "purchase".into(),
            occurred_at: now - days_ago * DAY,
            amount_minor: Some(amount),
        };
        // 3 purchases in the window (50_000 total), last 4 days ago; the
        // one 400 days ago is outside.
        let history = History {
            customer: "y".into(),
            interactions: vec![
                purchase(400, 1_000_000),
                purchase(200, 20_000),
                purchase(30, 20_000),
                purchase(4, 10_000),
            ],
            now,
        };
        let s = score_history(&model, &Config::default(), &history);
        assert_eq!(s.values, Some(v(4, 3, 50_000)));
        assert_eq!((s.r, s.f, s.m), (5, 4, 5));
        assert_eq!(s.cell, "545");
        assert_eq!(s.segment, Segment::Champions);
        assert_eq!(
            s.explanation(365),
            "RFM 545 (Champions): last purchase 4 days ago (R=5), 3 purchases (F=4) \
             and 50000 spent (minor units, M=5) in the last 365 days"
        );
    }

    #[test]
    fn fit_population_keeps_customers_with_a_purchase_in_the_window() {
        let now = 1_000 * DAY;
        let summary = |id: &str, n: u32, last_days_ago: Option<i64>, spend: i64| PurchaseAggregate {
            customer_id: id.into(),
            purchases: n,
            first_purchase_at: last_days_ago.map(|d| now - (d + 5) * DAY),
            last_purchase_at: last_days_ago.map(|d| now - d * DAY),
            total_spend_minor: spend,
            created_at: 0,
        };
        let population = vec![
            summary("a", 3, Some(10), 300),
            summary("b", 1, Some(400), 100), // outside the window
            summary("c", 0, None, 0),        // never bought
            summary("d", 2, Some(30), 200),
        ];
        let model = fit_population(&population, now, &Config::default()).unwrap();
        assert_eq!(model.customers, 2);
        assert_eq!(model.recency_days, [30, 30, 30, 30]);
        assert_eq!(model.frequency, [2, 2, 2, 2]);
        assert_eq!(model.monetary_minor, [200, 200, 200, 200]);
        assert_eq!(
            fit_population(&population[1..3], now, &Config::default()),
            Err(RfmError::EmptyPopulation(365))
        );
    }

    #[test]
    fn model_json_round_trips_and_is_checked() {
        let model = fit(&population(), 365, 42).unwrap();
        let json = model.to_json();
        assert_eq!(
            json,
            r#"{"version":1,"window_days":365,"fitted_at":42,"customers":10,"recency_days":[300,120,40,10],"frequency":[1,1,2,5],"monetary_minor":[1000,3000,12000,40000]}"#
        );
        assert_eq!(RfmModel::from_json(&json).unwrap(), model);
        let unsorted = json.replace("[1,1,2,5]", "[5,1,2,1]");
        assert!(matches!(RfmModel::from_json(&unsorted), Err(RfmError::InvalidModel(_))));
        assert!(matches!(RfmModel::from_json("{}"), Err(RfmError::InvalidModel(_))));
    }

    #[test]
    fn config_defaults_and_validation() {
        assert_eq!(Config::from_json("{}").unwrap(), Config::default());
        let c = Config::from_json(r#"{"window_days": 90, "purchase_kind": "order"}"#).unwrap();
        assert_eq!((c.window_days, c.purchase_kind.as_str()), (90, "order"));
        for bad in [
            r#"{"window_days": 0}"#,
            r#"{"window_days": -5}"#,
            r#"{"purchase_kind": ""}"#,
            r#"{"window": 30}"#,
            "[]",
            "nope",
        ] {
            assert!(
                matches!(Config::from_json(bad), Err(RfmError::InvalidConfig(_))),
                "{bad}"
            );
        }
    }
}
