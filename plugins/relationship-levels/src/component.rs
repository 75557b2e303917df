//! The component layer: the SDK's [`ScoringRule`] over [`crate::levels`]
//! and the `clv` plugin's CLV logic.
//!
//! - Fit (batch job): unless the configuration gives a fixed `model`, the
//!   BG/NBD and Gamma-Gamma models are fitted on the tenant's purchases in
//!   the currency exactly as `clv` fits them, and stored in this plugin's
//!   kv under [`MODEL_KEY`]. With a fixed model the fit stores nothing and
//!   returns it.
//! - Score: the customer's CLV from the model, times the margin rate,
//!   against the thresholds: value = lifetime margin (major units), label
//!   and segment = the level, explanation = the reason.
//!
//! Capabilities: `config`, `kv`.

use rapport_plugin_sdk::{self as sdk, PluginError, PurchaseSummary as SdkSummary, Score, ScoringRule, kv};

use crate::levels::{Config, LevelError, assign};
use crate::score::{ClvError, FittedModel, fit_model, score_purchases};
use crate::spend::{SpendSummary, summarise_spend};

/// The kv key holding the fitted [`FittedModel`] (JSON).
pub const MODEL_KEY: &str = "model";

pub struct RelationshipLevels;

sdk::export_scoring_rule!(RelationshipLevels);

fn plugin_error(err: LevelError) -> PluginError {
    match err {
        LevelError::InvalidConfig(_) | LevelError::Clv(ClvError::InvalidConfig(_)) => {
            PluginError::InvalidConfig(err.to_string())
        }
        LevelError::Clv(ClvError::NoModel) => PluginError::Unavailable("not fitted: run the batch job".into()),
        LevelError::Clv(ClvError::InvalidModel(_)) => {
            PluginError::Unavailable(format!("{err}: run the batch job to refit"))
        }
        LevelError::Clv(_) => PluginError::InvalidInput(err.to_string()),
    }
}

fn load_config() -> Result<Config, PluginError> {
    Config::from_json(&sdk::config_json()).map_err(plugin_error)
}

fn load_model(config: &Config) -> Result<FittedModel, PluginError> {
    if let Some(model) = config.fixed_model() {
        return Ok(model);
    }
    let text = kv::get_string(MODEL_KEY)?.ok_or_else(|| plugin_error(ClvError::NoModel.into()))?;
    FittedModel::from_json(&text).map_err(|e| plugin_error(e.into()))
}

fn to_score(
    model: &FittedModel,
    config: &Config,
    input: &sdk::History,
    buffer: &mut Vec<(i64, i64)>,
) -> Result<Score, PluginError> {
    let clv_config = config.clv();
    let kind = clv_config.purchase_kind.as_str();
    let purchases = input
        .interactions
        .iter()
        .filter(|e| e.kind == kind)
        .filter_map(|e| e.amount.as_ref().map(|a| (e.occurred_at, a.currency.as_str(), a.minor)));
    let clv = score_purchases(model, &clv_config, &input.customer.id, purchases, input.now, buffer)
        .map_err(|e| plugin_error(e.into()))?;
    let a = assign(config, &clv);
    Ok(Score {
        value: a.lifetime_margin,
        label: Some(a.level.name().to_owned()),
        // The level is the segment, so that triggers and customer lists
        // can target it (`audience: {plugin, segments}`, `?segment=`).
        segment: Some(a.level.name().to_owned()),
        explanation: a.explanation,
        components: vec![
            ("level_rank".to_owned(), a.level.rank() as f64),
            ("lifetime_margin".to_owned(), a.lifetime_margin),
            ("clv".to_owned(), clv.parts.clv),
            ("margin_rate".to_owned(), config.margin_rate),
            ("expected_purchases".to_owned(), clv.parts.expected_purchases),
            ("p_alive".to_owned(), clv.parts.p_alive),
        ],
    })
}

impl ScoringRule for RelationshipLevels {
    type FitRow = Option<SpendSummary>;

    fn score(input: &sdk::History) -> Result<Score, PluginError> {
        let config = load_config()?;
        let model = load_model(&config)?;
        to_score(&model, &config, input, &mut Vec::new())
    }

    fn score_batch(inputs: &[sdk::History]) -> Vec<Result<Score, PluginError>> {
        match load_config().and_then(|config| Ok((load_model(&config)?, config))) {
            Ok((model, config)) => {
                let mut buffer = Vec::new();
                inputs
                    .iter()
                    .map(|input| to_score(&model, &config, input, &mut buffer))
                    .collect()
            }
            Err(err) => inputs.iter().map(|_| Err(err.clone())).collect(),
        }
    }

    fn fit_rows(chunk: &[SdkSummary], now: i64) -> Result<Vec<Option<SpendSummary>>, PluginError> {
        let config = load_config()?;
        if config.model.is_some() {
            return Ok(Vec::new());
        }
        let clv = config.clv();
        let digits = sdk::money::minor_digits(&clv.currency);
        let mut buffer: Vec<(i64, i64)> = Vec::new();
        Ok(chunk
            .iter()
            .filter_map(|s| {
                buffer.clear();
                buffer.extend(
                    s.purchases
                        .iter()
                        .filter(|p| p.currency == clv.currency)
                        .map(|p| (p.at, p.amount_minor)),
                );
                summarise_spend(&buffer, now, clv.time_unit_days, digits).map(Some)
            })
            .collect())
    }

    fn fit(rows: Vec<Option<SpendSummary>>, now: i64) -> Result<serde_json::Value, PluginError> {
        let config = load_config()?;
        if let Some(model) = config.fixed_model() {
            return serde_json::from_str(&model.to_json())
                .map_err(|err| PluginError::Internal(format!("model JSON: {err}")));
        }
        let customers: Vec<SpendSummary> = rows.into_iter().flatten().collect();
        let model = fit_model(&customers, 0, now, &config.clv()).map_err(|e| plugin_error(e.into()))?;
        let json = model.to_json();
        kv::set(MODEL_KEY, json.as_bytes())?;
        serde_json::from_str(&json).map_err(|err| PluginError::Internal(format!("model JSON: {err}")))
    }
}
