//! `test-scorer`: the well-behaved scoring-rule plugin the runtime tests load.
//! Deterministic on purpose, because the tests assert exact values:
//!
//! - `n` = number of interactions of kind `"purchase"` in the history;
//!   `spend` = sum of their `amount.amount-minor` (purchases without an
//!   amount add 0; currencies are not converted).
//! - `value` = `n` + `bonus`, where `bonus` is the number under `"bonus"` in
//!   the tenant's plugin config (`config.get-config()`), 0 when absent, so a
//!   test can prove that per-tenant config reaches the plugin.
//! - `label` = `n` as a decimal string (without the bonus).
//! - `segment` = `"buyer"` when `n >= 1`, else `"prospect"`.
//! - `explanation` = `"{n} purchase(s), spend {spend} minor units, bonus {bonus}"`.
//! - `components` = `[("purchases", n), ("spend_minor", spend)]`.
//! - `score-batch` scores each input in order (config read once per batch).
//! - `fit` logs one `info` line, message `"fit over {len} customers"`, field
//!   `("population", "{len}")`, and returns `"{}"`.
//!
//! A config that is not a JSON object, or whose `"bonus"` is not a number,
//! yields `plugin-error::invalid-config`.
//!
//! Capabilities imported: `config`, `log`.

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "scoring-rule",
});

use exports::rapport::crm::scoring::{CustomerScore, Guest};
use rapport::crm::config::get_config;
use rapport::crm::inputs::{CustomerHistory, PurchaseSummary};
use rapport::crm::log::{Level, log};
use rapport::crm::types::{Json, PluginError, Timestamp};

struct TestScorer;

/// Reads `"bonus"` from the tenant's config; the only knob this plugin has.
fn bonus() -> Result<f64, PluginError> {
    let text = get_config();
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|err| PluginError::InvalidConfig(format!("config is not JSON: {err}")))?;
    let object = config
        .as_object()
        .ok_or_else(|| PluginError::InvalidConfig("config is not a JSON object".into()))?;
    match object.get("bonus") {
        None => Ok(0.0),
        Some(value) => value
            .as_f64()
            .ok_or_else(|| PluginError::InvalidConfig("\"bonus\" must be a number".into())),
    }
}

fn score_one(input: &CustomerHistory, bonus: f64) -> CustomerScore {
    let purchases: Vec<_> = input
        .interactions
        .iter()
        .filter(|interaction| interaction.kind == "purchase")
        .collect();
    let count = purchases.len();
    let spend: i64 = purchases
        .iter()
        .filter_map(|interaction| interaction.amount.as_ref())
        .map(|money| money.amount_minor)
        .fold(0i64, i64::saturating_add);
    CustomerScore {
        value: count as f64 + bonus,
        label: Some(count.to_string()),
        segment: Some(if count >= 1 { "buyer" } else { "prospect" }.to_string()),
        explanation: format!("{count} purchase(s), spend {spend} minor units, bonus {bonus}"),
        components: vec![
            ("purchases".to_string(), count as f64),
            ("spend_minor".to_string(), spend as f64),
        ],
    }
}

impl Guest for TestScorer {
    fn score(input: CustomerHistory) -> Result<CustomerScore, PluginError> {
        let bonus = bonus()?;
        Ok(score_one(&input, bonus))
    }

    fn score_batch(inputs: Vec<CustomerHistory>) -> Vec<Result<CustomerScore, PluginError>> {
        // One config read for the whole batch; a bad config fails every item
        // the same way, keeping "one result per input".
        let bonus = bonus();
        inputs
            .iter()
            .map(|input| bonus.clone().map(|bonus| score_one(input, bonus)))
            .collect()
    }

    fn fit(population: Vec<PurchaseSummary>, _now: Timestamp) -> Result<Json, PluginError> {
        let size = population.len();
        log(
            Level::Info,
            &format!("fit over {size} customers"),
            &[("population".to_string(), size.to_string())],
        );
        Ok("{}".to_string())
    }
}

export!(TestScorer);
