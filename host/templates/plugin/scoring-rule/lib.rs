//! `{{name}}`: a Rapport scoring-rule plugin.
//!
//! Score = number of purchases in the last `window_days` days (tenant
//! config, default 365); segment `active` (≥ 1 recent purchase), `lapsed`
//! (older purchases only) or `prospect` (none). Replace [`score_history`]
//! with your own rule: it is plain Rust, tested natively by `cargo test`.
//!
//! Capabilities imported: `config` (a component imports only what its code
//! calls).

use rapport_plugin_sdk::{self as sdk, History, PluginError, Score, ScoringRule};
use serde::Deserialize;

const MS_PER_DAY: i64 = 86_400_000;

/// The tenant's settings for this plugin (its config JSON object).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub window_days: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { window_days: 365 }
    }
}

impl Settings {
    /// The config, decoded and checked (bad config → `invalid-config`).
    pub fn load() -> Result<Settings, PluginError> {
        let settings: Settings = sdk::config()?;
        if settings.window_days <= 0 {
            return Err(PluginError::InvalidConfig("\"window_days\" must be positive".into()));
        }
        Ok(settings)
    }
}

/// The business logic: one customer's score from their history.
pub fn score_history(history: &History, settings: &Settings) -> Score {
    let since = history.now.saturating_sub(settings.window_days.saturating_mul(MS_PER_DAY));
    let (mut all, mut recent, mut recent_spend) = (0u32, 0u32, 0i64);
    for purchase in history.interactions.iter().filter(|i| i.kind == "purchase") {
        all += 1;
        if purchase.occurred_at >= since {
            recent += 1;
            recent_spend = recent_spend.saturating_add(purchase.amount.as_ref().map_or(0, |a| a.minor));
        }
    }
    let segment = match (recent, all) {
        (0, 0) => "prospect",
        (0, _) => "lapsed",
        _ => "active",
    };
    Score {
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

pub struct Plugin;

sdk::export_scoring_rule!(Plugin);

impl ScoringRule for Plugin {
    // Nothing to fit: no rows per customer, and the SDK's default
    // `fit_rows` / `fit` (summary `{}`). A rule with population parameters
    // returns a few numbers per customer from `fit_rows` (each chunk of the
    // population) and fits them in `fit`, keeping the result in `kv`.
    type FitRow = ();

    fn score(input: &History) -> Result<Score, PluginError> {
        Ok(score_history(input, &Settings::load()?))
    }

    fn score_batch(inputs: &[History]) -> Vec<Result<Score, PluginError>> {
        // Read the config once per batch; one result per input, in order.
        match Settings::load() {
            Ok(settings) => inputs.iter().map(|input| Ok(score_history(input, &settings))).collect(),
            Err(err) => inputs.iter().map(|_| Err(err.clone())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rapport_plugin_sdk::{Customer, HistoryEntry, Purchase, PurchaseSummary, testing};
    use serde_json::json;

    const NOW: i64 = 1_750_000_000_000;

    fn purchase(days_ago: i64, amount_minor: i64) -> HistoryEntry {
        HistoryEntry::purchase(NOW - days_ago * MS_PER_DAY, "USD", amount_minor)
    }

    fn history(entries: Vec<HistoryEntry>) -> History {
        // A visit too: only purchases count.
        History::new(Customer::new("c1"), NOW)
            .with_entry(HistoryEntry::new("visit", NOW - MS_PER_DAY).with_channel("web"))
            .with_entries(entries)
    }

    #[test]
    fn counts_recent_purchases_only() {
        let score = score_history(&history(vec![purchase(400, 999), purchase(30, 1250), purchase(2, 500)]), &Settings::default());
        assert_eq!(score.value, 2.0);
        assert_eq!(score.segment.as_deref(), Some("active"));
        assert_eq!(score.explanation, "2 purchase(s) in the last 365 days (3 in all), spend 1750 minor units");
    }

    #[test]
    fn segments_lapsed_and_prospects() {
        let lapsed = score_history(&history(vec![purchase(400, 999)]), &Settings::default());
        assert_eq!((lapsed.value, lapsed.segment.as_deref()), (0.0, Some("lapsed")));
        let prospect = score_history(&history(vec![]), &Settings::default());
        assert_eq!(prospect.segment.as_deref(), Some("prospect"));
    }

    #[test]
    fn the_window_comes_from_the_tenant_config() {
        testing::reset();
        testing::set_config(json!({ "window_days": 30 }));
        let score = Plugin::score(&history(vec![purchase(60, 999), purchase(10, 500)])).unwrap();
        assert_eq!(score.value, 1.0);
        testing::set_config(json!({ "window_days": -1 }));
        assert!(matches!(Plugin::score(&history(vec![])), Err(PluginError::InvalidConfig(_))));
        testing::set_config(json!({ "window": 30 }));
        assert!(matches!(Plugin::score(&history(vec![])), Err(PluginError::InvalidConfig(_))));
    }

    #[test]
    fn there_is_nothing_to_fit() {
        testing::reset();
        let customer = PurchaseSummary {
            customer_id: "c1".into(),
            created_at: 0,
            purchases: vec![Purchase { at: NOW - MS_PER_DAY, amount_minor: 500, currency: "USD".into() }],
        };
        assert_eq!(Plugin::fit_rows(std::slice::from_ref(&customer), NOW), Ok(vec![]));
        assert_eq!(testing::fit::<Plugin>(&[customer], NOW), Ok(json!({})));
        assert!(testing::kv_entries().is_empty());
    }
}
