//! `{{name}}`: a Rapport scoring-rule plugin.
//!
//! Score = number of purchases in the last `window_days` days (tenant
//! config, default 365); segment `active` (≥ 1 recent purchase), `lapsed`
//! (older purchases only) or `prospect` (none). Replace [`score_history`]
//! with your own rule: it is plain Rust, tested natively by `cargo test`.
//!
//! Capabilities imported: `config` (only what the code calls is imported).

wit_bindgen::generate!({ path: "wit/crm@0.1.0", world: "scoring-rule" });

use exports::rapport::crm::scoring::{CustomerScore, Guest};
use rapport::crm::inputs::{CustomerHistory, PurchaseSummary};
use rapport::crm::types::{Json, PluginError, Timestamp};

const MS_PER_DAY: i64 = 86_400_000;

/// The tenant's settings for this plugin (its config JSON object).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub window_days: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { window_days: 365 }
    }
}

impl Settings {
    /// Parses the config; unknown keys are ignored.
    pub fn from_json(text: &str) -> Result<Settings, PluginError> {
        let config: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| PluginError::InvalidConfig(format!("config is not JSON: {e}")))?;
        let mut settings = Settings::default();
        if let Some(days) = config.get("window_days") {
            settings.window_days = days
                .as_i64()
                .filter(|d| *d > 0)
                .ok_or_else(|| PluginError::InvalidConfig("\"window_days\" must be a positive integer".into()))?;
        }
        Ok(settings)
    }
}

/// The business logic: one customer's score from their history.
pub fn score_history(history: &CustomerHistory, settings: Settings) -> CustomerScore {
    let since = history.now.saturating_sub(settings.window_days.saturating_mul(MS_PER_DAY));
    let purchases = history.interactions.iter().filter(|i| i.kind == "purchase");
    let (mut all, mut recent, mut recent_spend) = (0u32, 0u32, 0i64);
    for purchase in purchases {
        all += 1;
        if purchase.occurred_at >= since {
            recent += 1;
            recent_spend = recent_spend.saturating_add(purchase.amount.as_ref().map_or(0, |m| m.amount_minor));
        }
    }
    let segment = match (recent, all) {
        (0, 0) => "prospect",
        (0, _) => "lapsed",
        _ => "active",
    };
    CustomerScore {
        value: f64::from(recent),
        label: Some(recent.to_string()),
        segment: Some(segment.into()),
        explanation: format!(
            "{recent} purchase(s) in the last {} days ({all} in all), spend {recent_spend} minor units",
            settings.window_days
        ),
        components: vec![("recent_purchases".into(), f64::from(recent)), ("recent_spend_minor".into(), recent_spend as f64)],
    }
}

struct Plugin;

fn settings() -> Result<Settings, PluginError> {
    Settings::from_json(&rapport::crm::config::get_config())
}

impl Guest for Plugin {
    fn score(input: CustomerHistory) -> Result<CustomerScore, PluginError> {
        Ok(score_history(&input, settings()?))
    }

    fn score_batch(inputs: Vec<CustomerHistory>) -> Vec<Result<CustomerScore, PluginError>> {
        // Read the config once; one result per input, in order.
        let settings = settings();
        inputs.iter().map(|input| settings.clone().map(|s| score_history(input, s))).collect()
    }

    fn fit(population: Vec<PurchaseSummary>, _now: Timestamp) -> Result<Json, PluginError> {
        // No population parameters: report what was seen.
        Ok(format!("{{\"customers\":{}}}", population.len()))
    }
}

// Only the WebAssembly build exports: export names such as
// `rapport:crm/...@0.1.0#fn` cannot be linked into a native library, and
// `cargo test` builds one.
#[cfg(target_arch = "wasm32")]
export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use rapport::crm::types::{Customer, Interaction, Money};

    const NOW: i64 = 1_750_000_000_000;

    fn purchase(days_ago: i64, amount_minor: i64) -> Interaction {
        Interaction {
            id: format!("i{days_ago}"),
            customer_id: "c1".into(),
            kind: "purchase".into(),
            channel: None,
            occurred_at: NOW - days_ago * MS_PER_DAY,
            amount: Some(Money { currency: "USD".into(), amount_minor }),
            items: vec![],
            payload: "{}".into(),
        }
    }

    fn history(interactions: Vec<Interaction>) -> CustomerHistory {
        CustomerHistory {
            customer: Customer {
                id: "c1".into(),
                external_id: "E1".into(),
                name: None,
                email: None,
                phone: None,
                attributes: "{}".into(),
                created_at: 0,
            },
            interactions,
            truncated: false,
            now: NOW,
        }
    }

    #[test]
    fn counts_recent_purchases_only() {
        let score = score_history(&history(vec![purchase(400, 999), purchase(30, 1250), purchase(2, 500)]), Settings::default());
        assert_eq!(score.value, 2.0);
        assert_eq!(score.segment.as_deref(), Some("active"));
        assert_eq!(score.explanation, "2 purchase(s) in the last 365 days (3 in all), spend 1750 minor units");
    }

    #[test]
    fn segments_lapsed_and_prospects() {
        let lapsed = score_history(&history(vec![purchase(400, 999)]), Settings::default());
        assert_eq!((lapsed.value, lapsed.segment.as_deref()), (0.0, Some("lapsed")));
        let prospect = score_history(&history(vec![]), Settings::default());
        assert_eq!(prospect.segment.as_deref(), Some("prospect"));
    }

    #[test]
    fn reads_and_validates_the_config() {
        assert_eq!(Settings::from_json(r#"{"window_days": 30}"#).unwrap(), Settings { window_days: 30 });
        assert_eq!(Settings::from_json("{}").unwrap(), Settings::default());
        assert!(matches!(Settings::from_json(r#"{"window_days": -1}"#), Err(PluginError::InvalidConfig(_))));
    }
}
