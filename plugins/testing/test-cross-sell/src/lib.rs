//! `test-cross-sell`: the well-behaved cross-sell plugin the runtime tests
//! load. Deterministic on purpose, because the tests assert exact values:
//!
//! - Candidates: every product in the catalogue (`catalog.list-products`,
//!   all categories, followed page by page, 500 per page, at most 100 pages).
//! - Excluded: SKUs in the `items` of the customer's interactions of kind
//!   `"purchase"` (already bought) and SKUs in the request's `basket`.
//! - `score` = the product's price in major units (`amount-minor / 100`,
//!   whatever the currency); `reason` = `"not bought yet; price {score} {currency}"`.
//! - Sorted by score descending, ties by SKU ascending; at most `limit`.
//! - A host error while listing the catalogue yields `plugin-error::unavailable`.
//! - `fit` ignores the baskets' content and returns `{"baskets":N}` (it keeps
//!   no model).
//!
//! Capability imported: `catalog`.

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "cross-sell",
});

use std::collections::BTreeSet;

use exports::rapport::crm::cross_selling::{Guest, RecommendRequest, Recommendation};
use rapport::crm::catalog::list_products;
use rapport::crm::types::{HostError, Json, PluginError, Product};

/// Page size asked of the host (its cap).
const PAGE_SIZE: u32 = 500;
/// Guards against a host that keeps handing back cursors.
const MAX_PAGES: usize = 100;

struct TestCrossSell;

fn host_error_text(error: &HostError) -> String {
    match error {
        HostError::InvalidArgument(message) => format!("invalid argument: {message}"),
        HostError::QuotaExceeded(message) => format!("quota exceeded: {message}"),
        HostError::Unavailable(message) => format!("unavailable: {message}"),
    }
}

fn whole_catalogue() -> Result<Vec<Product>, PluginError> {
    let mut products = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = list_products(None, cursor.as_deref(), PAGE_SIZE)
            .map_err(|error| PluginError::Unavailable(format!("catalog: {}", host_error_text(&error))))?;
        products.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(products)
}

impl Guest for TestCrossSell {
    fn recommend(request: RecommendRequest) -> Result<Vec<Recommendation>, PluginError> {
        let mut owned: BTreeSet<String> = request
            .history
            .interactions
            .iter()
            .filter(|interaction| interaction.kind == "purchase")
            .flat_map(|interaction| interaction.items.iter().map(|item| item.sku.clone()))
            .collect();
        owned.extend(request.basket.iter().flatten().map(|item| item.sku.clone()));

        let mut recommendations: Vec<Recommendation> = whole_catalogue()?
            .into_iter()
            .filter(|product| !owned.contains(&product.sku))
            .map(|product| {
                let score = product.price.amount_minor as f64 / 100.0;
                Recommendation {
                    reason: format!("not bought yet; price {score} {}", product.price.currency),
                    sku: product.sku,
                    score,
                }
            })
            .collect();
        recommendations.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.sku.cmp(&b.sku)));
        recommendations.truncate(request.limit as usize);
        Ok(recommendations)
    }

    fn fit(baskets: Vec<Vec<String>>) -> Result<Json, PluginError> {
        Ok(serde_json::json!({ "baskets": baskets.len() }).to_string())
    }
}

export!(TestCrossSell);
