//! The component layer: the SDK's [`CrossSell`] over this crate's logic.
//!
//! - `fit(baskets)` reads the configuration, mines the rules
//!   ([`fit_with_summary`]), stores the model in kv under [`MODEL_KEY`] and
//!   returns the [`crate::FitSummary`] as JSON.
//! - `recommend` reads the model once: owned SKUs are the items of the
//!   history's `purchase` interactions, the basket is the request's line
//!   items. Without a fitted model there is nothing to recommend: an empty
//!   list, and a `warn` log line saying so.
//!
//! Capabilities: `config`, `kv`, `log`. Errors: a bad config is
//! `invalid-config`; an unreadable stored model is `unavailable` (refit).

use rapport_plugin_sdk::{self as sdk, CrossSell, PluginError, RecommendRequest, Recommendation, kv, log};

use crate::{Config, Model, Recommender, fit_with_summary};

/// The kv key holding the fitted [`Model`] (JSON).
pub const MODEL_KEY: &str = "model";

/// The interaction kind whose line items are what a customer owns.
const PURCHASE_KIND: &str = "purchase";

/// The exported cross-sell plugin.
pub struct CoPurchasePlugin;

sdk::export_cross_sell!(CoPurchasePlugin);

fn load_config() -> Result<Config, PluginError> {
    Config::from_json(&sdk::config_json()).map_err(|e| PluginError::InvalidConfig(e.to_string()))
}

impl CrossSell for CoPurchasePlugin {
    fn recommend(request: &RecommendRequest) -> Result<Vec<Recommendation>, PluginError> {
        let Some(text) = kv::get_string(MODEL_KEY)? else {
            log::warn("not fitted: run the batch job; no recommendations");
            return Ok(Vec::new());
        };
        let model = Model::from_json(&text)
            .map_err(|e| PluginError::Unavailable(format!("{e}: run the batch job to refit")))?;
        let owned: Vec<&str> = request
            .history
            .interactions
            .iter()
            .filter(|i| i.kind == PURCHASE_KIND)
            .flat_map(|i| i.items.iter().map(|item| item.sku.as_str()))
            .collect();
        let basket: Option<Vec<&str>> = request
            .basket
            .as_ref()
            .map(|items| items.iter().map(|item| item.sku.as_str()).collect());
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        Ok(Recommender::new(&model)
            .recommend(&owned, basket.as_deref(), limit)
            .into_iter()
            .map(|r| Recommendation {
                sku: r.sku,
                score: r.score,
                reason: r.reason,
            })
            .collect())
    }

    fn fit(baskets: &[Vec<String>]) -> Result<serde_json::Value, PluginError> {
        let config = load_config()?;
        let (model, summary) =
            fit_with_summary(&config, baskets).map_err(|e| PluginError::InvalidConfig(e.to_string()))?;
        kv::set(MODEL_KEY, model.to_json().as_bytes())?;
        serde_json::to_value(&summary).map_err(|err| PluginError::Internal(format!("fit summary JSON: {err}")))
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use rapport_plugin_sdk::{Customer, History, HistoryEntry, LineItem, Money, testing};

    fn item(sku: &str) -> LineItem {
        LineItem {
            sku: sku.into(),
            quantity: 1,
            unit_price: Money::new("USD", 100),
        }
    }

    /// A customer who bought `owned` in one purchase (and opened an email,
    /// whose items would not count).
    fn request(owned: &[&str], basket: Option<&[&str]>, limit: u32) -> RecommendRequest {
        let purchase = owned.iter().fold(
            HistoryEntry::purchase(0, "USD", 100 * owned.len() as i64),
            |entry, sku| entry.with_item(*sku, 1, 100),
        );
        let opened = HistoryEntry::new("email_open", 1).with_item("Z", 1, 0);
        RecommendRequest {
            history: History::new(Customer::new("c"), 2)
                .with_entry(purchase)
                .with_entry(opened),
            basket: basket.map(|b| b.iter().map(|s| item(s)).collect()),
            limit,
        }
    }

    fn baskets() -> Vec<Vec<String>> {
        // A and B go together 3 times out of 4; C is bought alone.
        [["A", "B"], ["A", "B"], ["A", "B"], ["A", "C"], ["C", "D"]]
            .iter()
            .map(|b| b.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn before_fit_there_is_nothing_to_recommend() {
        testing::reset();
        assert_eq!(CoPurchasePlugin::recommend(&request(&["A"], None, 5)), Ok(vec![]));
        assert_eq!(testing::logs().len(), 1);
        assert_eq!(testing::logs()[0].level, log::Level::Warn);
    }

    #[test]
    fn fit_stores_the_model_and_recommend_reads_it() {
        testing::reset();
        testing::set_config(serde_json::json!({"min_support": 0.2, "min_confidence": 0.5}));
        let summary = CoPurchasePlugin::fit(&baskets()).unwrap();
        assert_eq!(summary["baskets"], 5);
        assert!(testing::kv_entries().contains_key(MODEL_KEY));

        // B → A: confidence 3/3 = 1, lift 1 / (4/5) = 1.25.
        let got = CoPurchasePlugin::recommend(&request(&["B"], None, 5)).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].sku, "A");
        assert_eq!(got[0].score, 1.0);
        assert_eq!(got[0].reason, "bought with B by 100% of B buyers (lift 1.2)");
        // The basket wins over what the customer owns; owned SKUs are
        // never recommended.
        let got = CoPurchasePlugin::recommend(&request(&["A"], Some(&["B"]), 5)).unwrap();
        assert_eq!(got, vec![]);
        let got = CoPurchasePlugin::recommend(&request(&["X"], Some(&["A"]), 0)).unwrap();
        assert_eq!(got, vec![]);
    }

    #[test]
    fn bad_config_and_corrupt_model() {
        testing::reset();
        testing::set_config(serde_json::json!({"min_support": 0}));
        assert!(matches!(
            CoPurchasePlugin::fit(&baskets()),
            Err(PluginError::InvalidConfig(_))
        ));
        kv::set(MODEL_KEY, b"[]").unwrap();
        assert!(matches!(
            CoPurchasePlugin::recommend(&request(&["A"], None, 5)),
            Err(PluginError::Unavailable(_))
        ));
    }
}
