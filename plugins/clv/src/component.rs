//! The component layer: the SDK's [`ScoringRule`] over this crate's logic.
//!
//! - The population fit streams: `fit_rows` turns each chunk of customers'
//!   raw purchases into a [`FitRow`] per customer (x, t_x, T and m in the
//!   configured currency, plus how many purchases were in other
//!   currencies); `fit` fits BG/NBD on every customer with a purchase in the
//!   currency and Gamma-Gamma on those with repeat purchases, stores the
//!   [`FittedModel`] in kv under [`MODEL_KEY`] and returns it as the fit
//!   summary.
//! - `score` / `score-batch` read the configuration and the model once per
//!   call (once per batch): value = CLV in major units of the currency,
//!   label and segment = "high"/"medium"/"low".
//!
//! Capabilities: `config`, `kv`. Errors: a bad config is `invalid-config`;
//! no model, an unreadable one, or one fitted in another currency is
//! `unavailable` (run the batch fit); a population that cannot be fitted,
//! or a customer without a purchase in the currency, is `invalid-input`.

use rapport_plugin_sdk::{self as sdk, PluginError, PurchaseSummary as SdkSummary, Score, ScoringRule, kv};

use crate::score::{ClvError, Config, FittedModel, fit_model, score_purchases};
use crate::spend::{SpendSummary, summarise_spend};

/// The kv key holding the [`FittedModel`] (JSON).
pub const MODEL_KEY: &str = "model";

/// The exported scoring rule.
pub struct ClvPlugin;

sdk::export_scoring_rule!(ClvPlugin);

/// What the fit keeps per customer (40 bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitRow {
    /// `None` for a customer whose purchases up to now are all in other
    /// currencies (kept only to count them).
    pub spend: Option<SpendSummary>,
    pub other_currency_purchases: u32,
}

fn plugin_error(err: ClvError) -> PluginError {
    match err {
        ClvError::InvalidConfig(_) => PluginError::InvalidConfig(err.to_string()),
        ClvError::NoModel => PluginError::Unavailable("not fitted: run the batch job".into()),
        ClvError::InvalidModel(_) => PluginError::Unavailable(format!("{err}: run the batch job to refit")),
        ClvError::NoPurchases { .. } | ClvError::Fit(_) | ClvError::Spend(_) | ClvError::Model(_) => {
            PluginError::InvalidInput(err.to_string())
        }
    }
}

fn load_config() -> Result<Config, PluginError> {
    Config::from_json(&sdk::config_json()).map_err(plugin_error)
}

fn load_model() -> Result<FittedModel, PluginError> {
    let text = kv::get_string(MODEL_KEY)?.ok_or_else(|| plugin_error(ClvError::NoModel))?;
    FittedModel::from_json(&text).map_err(plugin_error)
}

fn to_score(
    model: &FittedModel,
    config: &Config,
    input: &sdk::History,
    buffer: &mut Vec<(i64, i64)>,
) -> Result<Score, PluginError> {
    let kind = config.purchase_kind.as_str();
    // Purchases without an amount carry no spend: they are not purchases
    // of any currency here.
    let purchases = input
        .interactions
        .iter()
        .filter(|e| e.kind == kind)
        .filter_map(|e| e.amount.as_ref().map(|a| (e.occurred_at, a.currency.as_str(), a.minor)));
    let s = score_purchases(model, config, &input.customer.id, purchases, input.now, buffer).map_err(plugin_error)?;
    Ok(Score {
        value: s.parts.clv,
        label: Some(s.band.to_owned()),
        // The band is also the segment, so that the customers of a band
        // can be listed and targeted (`?score_plugin=clv&segment=high`).
        segment: Some(s.band.to_owned()),
        explanation: s.explanation(),
        components: vec![
            ("expected_purchases".to_owned(), s.parts.expected_purchases),
            ("expected_spend".to_owned(), s.parts.expected_spend),
            ("p_alive".to_owned(), s.parts.p_alive),
            ("clv".to_owned(), s.parts.clv),
        ],
    })
}

impl ScoringRule for ClvPlugin {
    type FitRow = FitRow;

    fn score(input: &sdk::History) -> Result<Score, PluginError> {
        let config = load_config()?;
        let model = load_model()?;
        to_score(&model, &config, input, &mut Vec::new())
    }

    fn score_batch(inputs: &[sdk::History]) -> Vec<Result<Score, PluginError>> {
        match load_config().and_then(|config| Ok((config, load_model()?))) {
            Ok((config, model)) => {
                let mut buffer = Vec::new();
                inputs
                    .iter()
                    .map(|input| to_score(&model, &config, input, &mut buffer))
                    .collect()
            }
            Err(err) => inputs.iter().map(|_| Err(err.clone())).collect(),
        }
    }

    fn fit_rows(chunk: &[SdkSummary], now: i64) -> Result<Vec<FitRow>, PluginError> {
        let config = load_config()?;
        let digits = sdk::money::minor_digits(&config.currency);
        let mut buffer: Vec<(i64, i64)> = Vec::new();
        Ok(chunk
            .iter()
            .filter_map(|s| {
                buffer.clear();
                let mut other = 0u32;
                for p in &s.purchases {
                    if p.currency == config.currency {
                        buffer.push((p.at, p.amount_minor));
                    } else if p.at.div_euclid(crate::MS_PER_DAY) <= now.div_euclid(crate::MS_PER_DAY) {
                        other = other.saturating_add(1);
                    }
                }
                let spend = summarise_spend(&buffer, now, config.time_unit_days, digits);
                (spend.is_some() || other > 0).then_some(FitRow {
                    spend,
                    other_currency_purchases: other,
                })
            })
            .collect())
    }

    fn fit(rows: Vec<FitRow>, now: i64) -> Result<serde_json::Value, PluginError> {
        let config = load_config()?;
        let other: u64 = rows.iter().map(|r| u64::from(r.other_currency_purchases)).sum();
        let customers: Vec<SpendSummary> = rows.iter().filter_map(|r| r.spend).collect();
        drop(rows);
        let model = fit_model(&customers, other, now, &config).map_err(plugin_error)?;
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

    #[test]
    fn score_before_fit_is_unavailable_and_a_config_needs_a_currency() {
        testing::reset();
        testing::set_config(serde_json::json!({"currency": "USD"}));
        let history = sdk::History::new(customer("a"), 10 * MS_PER_DAY)
            .with_entry(HistoryEntry::purchase(MS_PER_DAY, "USD", 1000));
        assert_eq!(
            ClvPlugin::score(&history),
            Err(PluginError::Unavailable("not fitted: run the batch job".into()))
        );
        testing::set_config(serde_json::json!({}));
        assert!(matches!(ClvPlugin::score(&history), Err(PluginError::InvalidConfig(_))));
        let one = [SdkSummary {
            customer_id: "a".into(),
            created_at: 0,
            purchases: vec![Purchase {
                at: 0,
                amount_minor: 100,
                currency: "USD".into(),
            }],
        }];
        assert!(matches!(
            testing::fit::<ClvPlugin>(&one, 10 * MS_PER_DAY),
            Err(PluginError::InvalidConfig(_))
        ));
        testing::set_config(serde_json::json!({"currency": "USD"}));
        assert!(matches!(
            testing::fit::<ClvPlugin>(&one, 10 * MS_PER_DAY),
            Err(PluginError::InvalidInput(m)) if m.contains("not identifiable")
        ));
        assert!(testing::kv_entries().is_empty());
    }
}
