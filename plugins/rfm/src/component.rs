//! The component layer: the SDK's [`ScoringRule`] over this crate's logic.
//!
//! - The population fit streams: `fit_rows` turns each chunk of summaries
//!   into the customers' window values ([`RfmValues`], three numbers each;
//!   exact: the same rule as scoring a history), then `fit` fits the
//!   quintile thresholds on all of them, stores the model in kv under
//!   [`MODEL_KEY`] and returns the model as the fit summary.
//! - `score` / `score-batch` read the configuration and the model once per
//!   call (once per batch) and score each history.
//!
//! Capabilities: `config`, `kv`. Errors: a bad config is `invalid-config`;
//! no model (or an unreadable one) is `unavailable` (run the batch fit); a
//! population without a purchase in the window is `invalid-input`.

use rapport_plugin_sdk::{self as sdk, PluginError, PurchaseSummary as SdkSummary, Score, ScoringRule, kv};

use crate::score::{Config, RfmError, RfmModel, fit, score};
use crate::values::RfmValues;

/// The kv key holding the fitted [`RfmModel`] (JSON).
pub const MODEL_KEY: &str = "model";

/// The exported scoring rule.
pub struct RfmPlugin;

sdk::export_scoring_rule!(RfmPlugin);

fn plugin_error(err: RfmError) -> PluginError {
    match err {
        RfmError::InvalidConfig(_) => PluginError::InvalidConfig(err.to_string()),
        RfmError::InvalidModel(_) => PluginError::Unavailable(format!("{err}: run the batch job to refit")),
        RfmError::NoModel => PluginError::Unavailable("not fitted: run the batch job".into()),
        RfmError::EmptyPopulation(_) => PluginError::InvalidInput(err.to_string()),
    }
}

fn load_config() -> Result<Config, PluginError> {
    Config::from_json(&sdk::config_json()).map_err(plugin_error)
}

fn load_model() -> Result<RfmModel, PluginError> {
    let text = kv::get_string(MODEL_KEY)?.ok_or_else(|| plugin_error(RfmError::NoModel))?;
    RfmModel::from_json(&text).map_err(plugin_error)
}

/// A customer's values over the model's window ending at `input.now`,
/// straight from the SDK's history: its entries of the purchase kind, by
/// time and amount. Nothing is built or allocated per interaction (a
/// kind comparison is a short byte comparison), so scoring costs what the
/// arithmetic costs. The same rule as [`crate::score_history`] over
/// [`crate::History`].
fn history_values(input: &sdk::History, window_days: u32, config: &Config) -> Option<RfmValues> {
    let kind = config.purchase_kind.as_str();
    RfmValues::from_purchases(
        input
            .interactions
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| (e.occurred_at, e.amount.as_ref().map(|a| a.minor))),
        input.now,
        window_days,
    )
}

/// A customer's values over the window ending at `now`, from the raw
/// purchases of their summary (every summary purchase is a purchase; the
/// amounts are summed as given, whatever the currency).
fn summary_values(summary: &SdkSummary, now: i64, config: &Config) -> Option<RfmValues> {
    RfmValues::from_purchases(
        summary.purchases.iter().map(|p| (p.at, Some(p.amount_minor))),
        now,
        config.window_days,
    )
}

fn to_score(model: &RfmModel, config: &Config, input: &sdk::History) -> Score {
    let s = score(model, history_values(input, model.window_days, config));
    Score {
        value: f64::from(s.total()),
        label: Some(s.cell.clone()),
        segment: Some(s.segment.name().to_owned()),
        explanation: s.explanation(model.window_days),
        components: vec![
            ("r".to_owned(), f64::from(s.r)),
            ("f".to_owned(), f64::from(s.f)),
            ("m".to_owned(), f64::from(s.m)),
        ],
    }
}

impl ScoringRule for RfmPlugin {
    /// A customer's values over the window: customers without a purchase
    /// in it are not part of the population, so they have no row.
    type FitRow = RfmValues;

    fn score(input: &sdk::History) -> Result<Score, PluginError> {
        let config = load_config()?;
        let model = load_model()?;
        Ok(to_score(&model, &config, input))
    }

    fn score_batch(inputs: &[sdk::History]) -> Vec<Result<Score, PluginError>> {
        // Config and model once per batch; if either fails, every item
        // fails the same way (one result per input).
        match load_config().and_then(|config| Ok((config, load_model()?))) {
            Ok((config, model)) => inputs
                .iter()
                .map(|input| Ok(to_score(&model, &config, input)))
                .collect(),
            Err(err) => inputs.iter().map(|_| Err(err.clone())).collect(),
        }
    }

    fn fit_rows(chunk: &[SdkSummary], now: i64) -> Result<Vec<RfmValues>, PluginError> {
        // Checked at every chunk, so a bad config fails the first one.
        let config = load_config()?;
        Ok(chunk.iter().filter_map(|s| summary_values(s, now, &config)).collect())
    }

    fn fit(rows: Vec<RfmValues>, now: i64) -> Result<serde_json::Value, PluginError> {
        let config = load_config()?;
        let model = fit(&rows, config.window_days, now).map_err(plugin_error)?;
        let json = model.to_json();
        kv::set(MODEL_KEY, json.as_bytes())?;
        serde_json::from_str(&json).map_err(|err| PluginError::Internal(format!("model JSON: {err}")))
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::values::MS_PER_DAY;
    use rapport_plugin_sdk::{Customer, HistoryEntry, Purchase, testing};

    const DAY: i64 = MS_PER_DAY;
    const NOW: i64 = 10_000 * DAY;

    fn summary(id: &str, purchases: &[(i64, i64)]) -> SdkSummary {
        SdkSummary {
            customer_id: id.into(),
            created_at: 0,
            purchases: purchases
                .iter()
                .map(|&(days_ago, amount)| Purchase {
                    at: NOW - days_ago * DAY,
                    amount_minor: amount,
                    currency: "USD".into(),
                })
                .collect(),
        }
    }

    /// Ten customers with the values of the crate's worked example (see
    /// `score.rs`), spread over several purchases each, plus a lapsed
    /// customer and one who never bought (both outside the population).
    fn population() -> Vec<SdkSummary> {
        vec![
            summary(
                "A",
                &[
                    (2, 10_000),
                    (5, 80_000),
                    (6, 0),
                    (7, 0),
                    (8, 0),
                    (9, 0),
                    (10, 0),
                    (11, 0),
                    (12, 0),
                ],
            ),
            summary("B", &[(10, 20_000), (11, 20_000), (20, 0), (30, 0), (40, 0)]),
            summary("C", &[(10, 2_500)]),
            summary("D", &[(40, 5_000), (50, 5_000), (60, 5_000)]),
            summary("E", &[(75, 1_000)]),
            summary("F", &[(120, 4_000), (130, 4_000)]),
            summary("G", &[(200, 3_000)]),
            summary(
                "H",
                &[
                    (300, 10_000),
                    (301, 10_000),
                    (302, 10_000),
                    (303, 10_000),
                    (304, 10_000),
                    (305, 5_000),
                    (306, 5_000),
                ],
            ),
            summary("I", &[(350, 500)]),
            summary("J", &[(5, 6_000), (6, 6_000)]),
            summary("lapsed", &[(400, 99_999)]),
            summary("never", &[]),
        ]
    }

    fn history(purchases: &[(i64, i64)]) -> sdk::History {
        sdk::History::new(Customer::new("x"), NOW)
            .with_entry(HistoryEntry::new("visit", NOW - DAY))
            .with_entries(
                purchases
                    .iter()
                    .map(|&(days_ago, amount)| HistoryEntry::purchase(NOW - days_ago * DAY, "USD", amount)),
            )
    }

    #[test]
    fn score_before_fit_is_unavailable() {
        testing::reset();
        assert_eq!(
            RfmPlugin::score(&history(&[(1, 100)])),
            Err(PluginError::Unavailable("not fitted: run the batch job".into()))
        );
        let batch = RfmPlugin::score_batch(&[history(&[]), history(&[(1, 1)])]);
        assert_eq!(batch.len(), 2);
        assert!(batch.iter().all(|r| matches!(r, Err(PluginError::Unavailable(_)))));
    }

    #[test]
    fn fit_stores_the_model_and_score_uses_it() {
        testing::reset();
        let summary = testing::fit::<RfmPlugin>(&population(), NOW).unwrap();
        // The worked example's thresholds (pandas-checked in score.rs).
        assert_eq!(
            summary,
            serde_json::json!({"version":1,"window_days":365,"fitted_at":NOW,"customers":10,
                "recency_days":[300,120,40,10],"frequency":[1,1,2,5],
                "monetary_minor":[1000,3000,12000,40000]})
        );
        let stored = testing::kv_entries();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&stored[MODEL_KEY]).unwrap(),
            summary
        );
        let score = RfmPlugin::score(&history(&[(4, 10_000), (30, 20_000), (200, 20_000)])).unwrap();
        assert_eq!(score.label.as_deref(), Some("545"));
        assert_eq!(score.segment.as_deref(), Some("Champions"));
        assert_eq!(score.value, 14.0);
        assert_eq!(
            score.components,
            vec![("r".into(), 5.0), ("f".into(), 4.0), ("m".into(), 5.0)]
        );
        let batch = RfmPlugin::score_batch(&[history(&[]), history(&[(4, 10_000), (30, 20_000), (200, 20_000)])]);
        assert_eq!(batch[0].as_ref().unwrap().label.as_deref(), Some("111"));
        assert_eq!(batch[1].as_ref().unwrap(), &score);
    }

    #[test]
    fn bad_config_and_empty_population_are_reported() {
        testing::reset();
        testing::set_config(serde_json::json!({"window_days": 0}));
        assert!(matches!(
            testing::fit::<RfmPlugin>(&population(), NOW),
            Err(PluginError::InvalidConfig(_))
        ));
        testing::set_config(serde_json::json!({"window_days": 30}));
        assert_eq!(
            testing::fit::<RfmPlugin>(&[summary("lapsed", &[(400, 1)])], NOW),
            Err(PluginError::InvalidInput(
                "no customer has a purchase in the last 30 days: nothing to fit".into()
            ))
        );
        // No chunk at all (an empty tenant) is the same empty population.
        assert_eq!(
            testing::fit::<RfmPlugin>(&[], NOW),
            Err(PluginError::InvalidInput(
                "no customer has a purchase in the last 30 days: nothing to fit".into()
            ))
        );
        assert!(testing::kv_entries().is_empty());
    }

    /// The rows are three numbers per customer with a purchase in the
    /// window (none for the lapsed and the never-bought), and where the
    /// chunks split does not change the fit.
    #[test]
    fn the_fit_streams_in_chunks() {
        testing::reset();
        let rows = RfmPlugin::fit_rows(&population(), NOW).unwrap();
        assert_eq!(rows.len(), 10);
        assert_eq!(
            rows[0],
            RfmValues {
                recency_days: 2,
                frequency: 9,
                monetary_minor: 90_000
            }
        );
        let whole = testing::fit::<RfmPlugin>(&population(), NOW).unwrap();
        for chunk in [1, 3, 11] {
            testing::reset();
            assert_eq!(
                testing::fit_in_chunks::<RfmPlugin>(&population(), chunk, NOW).unwrap(),
                whole,
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn a_corrupt_model_is_unavailable() {
        testing::reset();
        kv::set(MODEL_KEY, b"{\"version\":7}").unwrap();
        assert!(matches!(
            RfmPlugin::score(&history(&[])),
            Err(PluginError::Unavailable(_))
        ));
    }
}
