//! The component layer: the SDK's [`ScoringRule`] over this crate's logic.
//!
//! - The population fit streams: `fit_rows` turns each chunk of customers'
//!   raw purchases into their BG/NBD statistics ([`CustomerSummary`]: x =
//!   distinct purchase days after the first, t_x, T; exactly as scoring
//!   does, see [`summarise_purchases`]), then `fit` fits (r, α, a, b) on all
//!   of them, stores the [`FittedModel`] in kv under [`MODEL_KEY`] and
//!   returns it as the fit summary.
//! - `score` / `score-batch` read the configuration and the model once per
//!   call (once per batch) and score each history: value = churn risk
//!   (1 − P(alive)), label = "low"/"medium"/"high".
//!
//! Capabilities: `config`, `kv`. Errors: a bad config is `invalid-config`;
//! no model (or an unreadable one) is `unavailable` (run the batch fit); a
//! population that cannot be fitted, or a customer without any purchase,
//! is `invalid-input`.

use rapport_plugin_sdk::{self as sdk, PluginError, PurchaseSummary as SdkSummary, Score, ScoringRule, kv};

use crate::fit::fit_binned;
use crate::score::{ChurnError, Config, FittedModel, score_purchase_times};
use crate::summary::{CustomerSummary, summarise_purchases};

/// The kv key holding the [`FittedModel`] (JSON).
pub const MODEL_KEY: &str = "model";

/// The exported scoring rule.
pub struct ChurnPlugin;

sdk::export_scoring_rule!(ChurnPlugin);

fn plugin_error(err: ChurnError) -> PluginError {
    match err {
        ChurnError::InvalidConfig(_) => PluginError::InvalidConfig(err.to_string()),
        ChurnError::NoModel => PluginError::Unavailable("not fitted: run the batch job".into()),
        ChurnError::InvalidModel(_) => PluginError::Unavailable(format!("{err}: run the batch job to refit")),
        ChurnError::NoPurchases(_) | ChurnError::Fit(_) | ChurnError::Model(_) => {
            PluginError::InvalidInput(err.to_string())
        }
    }
}

fn load_config() -> Result<Config, PluginError> {
    Config::from_json(&sdk::config_json()).map_err(plugin_error)
}

fn load_model() -> Result<FittedModel, PluginError> {
    let text = kv::get_string(MODEL_KEY)?.ok_or_else(|| plugin_error(ChurnError::NoModel))?;
    FittedModel::from_json(&text).map_err(plugin_error)
}

/// The customer's purchase times from the SDK's history, into `times`
/// (cleared first; a batch reuses one buffer). Nothing is built or
/// allocated per interaction: a kind comparison is a short byte comparison.
fn purchase_times(input: &sdk::History, config: &Config, times: &mut Vec<i64>) {
    let kind = config.purchase_kind.as_str();
    times.clear();
    times.extend(
        input
            .interactions
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.occurred_at),
    );
}

fn to_score(
    model: &FittedModel,
    config: &Config,
    input: &sdk::History,
    times: &mut Vec<i64>,
) -> Result<Score, PluginError> {
    purchase_times(input, config, times);
    let s = score_purchase_times(model, config, &input.customer.id, times, input.now).map_err(plugin_error)?;
    Ok(Score {
        value: s.churn_risk,
        label: Some(s.risk.to_owned()),
        segment: None,
        explanation: s.explanation(),
        components: vec![
            ("p_alive".to_owned(), s.p_alive),
            ("expected_purchases".to_owned(), s.expected_purchases),
            ("x".to_owned(), f64::from(s.summary.frequency)),
            ("t_x".to_owned(), s.summary.recency),
            ("T".to_owned(), s.summary.age),
        ],
    })
}

impl ScoringRule for ChurnPlugin {
    /// A customer's (x, t_x, T): customers without a purchase up to the
    /// calibration end are not part of the population, so they have no row.
    type FitRow = CustomerSummary;

    fn score(input: &sdk::History) -> Result<Score, PluginError> {
        let config = load_config()?;
        let model = load_model()?;
        to_score(&model, &config, input, &mut Vec::new())
    }

    fn score_batch(inputs: &[sdk::History]) -> Vec<Result<Score, PluginError>> {
        // Config and model once per batch; if either fails, every item
        // fails the same way (one result per input).
        match load_config().and_then(|config| Ok((config, load_model()?))) {
            Ok((config, model)) => {
                let mut times = Vec::new();
                inputs
                    .iter()
                    .map(|input| to_score(&model, &config, input, &mut times))
                    .collect()
            }
            Err(err) => inputs.iter().map(|_| Err(err.clone())).collect(),
        }
    }

    fn fit_rows(chunk: &[SdkSummary], now: i64) -> Result<Vec<CustomerSummary>, PluginError> {
        // Checked at every chunk, so a bad config fails the first one.
        let config = load_config()?;
        // One reused buffer of times: what stays is three numbers per
        // customer.
        let mut times: Vec<i64> = Vec::new();
        Ok(chunk
            .iter()
            .filter_map(|s| {
                times.clear();
                times.extend(s.purchases.iter().map(|p| p.at));
                summarise_purchases(&times, now, config.time_unit_days)
            })
            .collect())
    }

    fn fit(rows: Vec<CustomerSummary>, now: i64) -> Result<serde_json::Value, PluginError> {
        let config = load_config()?;
        let report = fit_binned(&rows, config.fit_bin_width()).map_err(|e| plugin_error(e.into()))?;
        drop(rows);
        let model = FittedModel {
            version: FittedModel::VERSION,
            params: report.params,
            time_unit_days: config.time_unit_days,
            fitted_at: now,
            customers: report.customers,
            repeat_customers: report.repeat_customers,
            log_likelihood: report.log_likelihood,
        };
        let json = model.to_json();
        kv::set(MODEL_KEY, json.as_bytes())?;
        serde_json::from_str(&json).map_err(|err| PluginError::Internal(format!("model JSON: {err}")))
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::summary::MS_PER_DAY;
    use rapport_plugin_sdk::{Customer, HistoryEntry, Purchase, testing};
    use std::collections::BTreeMap;

    fn customer(id: &str) -> Customer {
        Customer {
            id: id.into(),
            external_id: id.into(),
            name: None,
            email: None,
            phone: None,
            attributes: serde_json::json!({}).into(),
            created_at: 0,
        }
    }

    fn history(id: &str, days: &[i64], now: i64) -> sdk::History {
        sdk::History::new(customer(id), now)
            .with_entry(HistoryEntry::new("email_open", 0).with_channel("email"))
            .with_entries(days.iter().map(|d| HistoryEntry::purchase(d * MS_PER_DAY, "USD", 1000)))
    }

    #[test]
    fn score_before_fit_is_unavailable() {
        testing::reset();
        assert_eq!(
            ChurnPlugin::score(&history("a", &[1], 10 * MS_PER_DAY)),
            Err(PluginError::Unavailable("not fitted: run the batch job".into()))
        );
    }

    #[test]
    fn unfittable_population_and_bad_config() {
        testing::reset();
        let one_timers: Vec<SdkSummary> = (0..5)
            .map(|i| SdkSummary {
                customer_id: i.to_string(),
                created_at: 0,
                purchases: vec![Purchase {
                    at: i * MS_PER_DAY,
                    amount_minor: 1,
                    currency: "USD".into(),
                }],
            })
            .collect();
        assert!(matches!(
            testing::fit::<ChurnPlugin>(&one_timers, 100 * MS_PER_DAY),
            Err(PluginError::InvalidInput(m)) if m.contains("not identifiable")
        ));
        testing::set_config(serde_json::json!({"time_unit_days": -1}));
        assert!(matches!(
            testing::fit::<ChurnPlugin>(&one_timers, 100 * MS_PER_DAY),
            Err(PluginError::InvalidConfig(_))
        ));
        assert!(testing::kv_entries().is_empty());
    }

    /// End to end on the CDNOW sample: raw purchases in, the paper's
    /// parameters out (calibration end 1997-09-30), the model in kv, and
    /// customer 1 of the sample scored from it (x=2, P(alive) ≈ 0.7266).
    #[test]
    fn fit_and_score_on_cdnow() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/cdnow/CDNOW_sample.txt"
        );
        let Ok(raw) = std::fs::read_to_string(path) else {
            println!("skipping: cannot read {path}");
            return;
        };
        testing::reset();
        let mut purchases: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
        for line in raw.lines().filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let date = f[2];
            let day = days_from_civil(
                date[0..4].parse().unwrap(),
                date[4..6].parse().unwrap(),
                date[6..8].parse().unwrap(),
            );
            purchases.entry(f[1].parse().unwrap()).or_default().push(day);
        }
        let end_day = days_from_civil(1997, 9, 30);
        let now = end_day * MS_PER_DAY + 12 * 3_600_000;
        let population: Vec<SdkSummary> = purchases
            .iter()
            .map(|(id, days)| SdkSummary {
                customer_id: id.to_string(),
                created_at: 0,
                purchases: days
                    .iter()
                    .map(|d| Purchase {
                        at: d * MS_PER_DAY + 1,
                        amount_minor: 1000,
                        currency: "USD".into(),
                    })
                    .collect(),
            })
            .collect();
        // In chunks of 1,000 (three of them), as the host streams a big
        // tenant: the rows are the same whatever the split.
        let summary = testing::fit_in_chunks::<ChurnPlugin>(&population, 1_000, now).unwrap();
        assert_eq!(summary["customers"], 2357);
        assert_eq!(summary["repeat_customers"], 946);
        for (name, want) in [("r", 0.2426), ("alpha", 4.4135), ("a", 0.7929), ("b", 2.4258)] {
            let got = summary["params"][name].as_f64().unwrap();
            assert!(((got - want) / want).abs() < 1e-3, "{name}: {got} vs {want}");
        }
        let stored: serde_json::Value = serde_json::from_slice(&testing::kv_entries()[MODEL_KEY]).unwrap();
        assert_eq!(stored, summary);

        let one = history("1", &purchases[&1], now);
        let score = ChurnPlugin::score(&one).unwrap();
        let p_alive = score.components[0].1;
        assert!((p_alive - 0.7266).abs() < 1e-3, "{p_alive}");
        assert_eq!(score.value, 1.0 - p_alive);
        assert_eq!(score.label.as_deref(), Some("low"));
        assert_eq!(score.components[2], ("x".to_owned(), 2.0));
        let batch = ChurnPlugin::score_batch(&[one, history("nobody", &[], now)]);
        assert_eq!(batch[0].as_ref().unwrap(), &score);
        assert!(matches!(&batch[1], Err(PluginError::InvalidInput(_))));
    }

    fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(m);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }
}
