//! `{{name}}`: a Rapport cross-sell plugin.
//!
//! Recommends catalogue products the customer has not bought yet (and that
//! are not in the basket), best-priced first: score = price in major
//! units, ties by SKU. Replace [`rank`] with your own model: it is plain
//! Rust, tested natively by `cargo test`.
//!
//! Capabilities imported: `catalog` (a component imports only what its code
//! calls).

use std::collections::BTreeSet;

use rapport_plugin_sdk::{self as sdk, CrossSell, PluginError, Product, RecommendRequest, Recommendation};

/// Catalogue page size (the host caps it at 500).
const PAGE: u32 = 500;

/// The business logic: the best `limit` candidates not in `owned`.
pub fn rank(candidates: &[Product], owned: &BTreeSet<String>, limit: usize) -> Vec<Recommendation> {
    let mut recs: Vec<Recommendation> = candidates
        .iter()
        .filter(|p| !owned.contains(&p.sku))
        .map(|p| {
            let score = p.price.amount_minor as f64 / 100.0;
            Recommendation {
                sku: p.sku.clone(),
                score,
                reason: format!("not bought yet; {} at {score} {}", p.name, p.price.currency),
            }
        })
        .collect();
    recs.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.sku.cmp(&b.sku)));
    recs.truncate(limit);
    recs
}

/// SKUs the customer already has: purchased items plus the basket.
pub fn owned_skus(request: &RecommendRequest) -> BTreeSet<String> {
    let bought = request
        .history
        .interactions
        .iter()
        .filter(|i| i.kind == "purchase")
        .flat_map(|i| i.items.iter().map(|item| item.sku.to_string()));
    let basket = request.basket.iter().flatten().map(|item| item.sku.clone());
    bought.chain(basket).collect()
}

pub struct Plugin;

sdk::export_cross_sell!(Plugin);

impl CrossSell for Plugin {
    fn recommend(request: &RecommendRequest) -> Result<Vec<Recommendation>, PluginError> {
        let mut products = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            // A host failure becomes `unavailable` through `?`.
            let page = sdk::host::catalog::products(None, cursor.as_deref(), PAGE)?;
            products.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(rank(&products, &owned_skus(request), request.limit as usize))
    }
    // `fit` keeps the SDK's default (nothing to learn: `{}`).
}

#[cfg(test)]
mod tests {
    use super::*;
    use rapport_plugin_sdk::Money;

    fn product(sku: &str, amount_minor: i64) -> Product {
        Product {
            sku: sku.into(),
            name: format!("Product {sku}"),
            category: None,
            price: Money::new("USD", amount_minor),
            attributes: serde_json::json!({}).into(),
        }
    }

    #[test]
    fn ranks_unowned_products_by_price_then_sku() {
        let catalogue = [product("A", 500), product("B", 9900), product("C", 500), product("D", 100)];
        let owned: BTreeSet<String> = ["B".to_string()].into();
        let recs = rank(&catalogue, &owned, 2);
        let skus: Vec<&str> = recs.iter().map(|r| r.sku.as_str()).collect();
        assert_eq!(skus, ["A", "C"]);
        assert_eq!(recs[0].score, 5.0);
        assert_eq!(recs[0].reason, "not bought yet; Product A at 5 USD");
    }
}
