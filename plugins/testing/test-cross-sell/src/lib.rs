//! `test-cross-sell`: the well-behaved cross-sell plugin the runtime tests
//! load. Deterministic on purpose, because the tests assert exact values:
//!
//! - Candidates: every product in the catalogue (`catalog.list-products`,
//!   all categories, followed page by page, 500 per page, at most 100 pages).
//! - Excluded: SKUs in the line items of the customer's history entries of
//!   kind `"purchase"` (already bought) and SKUs in the request's `basket`.
//!   An entry's kind is `strings[kind]`, its items are
//!   `items[first-item .. first-item + item-count]`, each SKU `strings[sku]`.
//! - `score` = the product's price in major units (`amount-minor / 100`,
//!   whatever the currency); `reason` = `"not bought yet; price {score} {currency}"`.
//! - Sorted by score descending, ties by SKU ascending; at most `limit`.
//! - A host error while listing the catalogue yields `plugin-error::unavailable`.
//! - A history whose indexes do not fit (kind or SKU outside `strings`, item
//!   range outside `items`) yields `plugin-error::invalid-input`, never a trap.
//! - `fit` ignores the baskets' content and returns `{"baskets":N}` (it keeps
//!   no model).
//! - A basket SKU `echo:<sku>` makes it also recommend `<sku>` (score 1000,
//!   reason `"echoed"`) whether the catalogue has it or not: how the host's
//!   tests make it recommend a product that does not exist.
//!
//! Capability imported: `catalog`.

wit_bindgen::generate!({
    path: "../../../wit/crm@0.1.0",
    world: "cross-sell",
});

use std::collections::BTreeSet;

use exports::rapport::crm::cross_selling::{Guest, RecommendRequest, Recommendation};
use rapport::crm::catalog::list_products;
use rapport::crm::inputs::CustomerHistory;
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

/// `strings[index]`, or the invalid-input error naming what pointed there.
fn string_at<'a>(history: &'a CustomerHistory, index: u32, what: &dyn Fn() -> String) -> Result<&'a str, PluginError> {
    history.strings.get(index as usize).map(String::as_str).ok_or_else(|| {
        PluginError::InvalidInput(format!(
            "{}: string index {index} is out of range ({} strings)",
            what(),
            history.strings.len()
        ))
    })
}

/// The SKUs of every line item of the history's purchases. Indexes come from
/// the host; one that does not fit is its bug, reported as a typed error so
/// the instance survives it.
fn purchased_skus(history: &CustomerHistory) -> Result<BTreeSet<String>, PluginError> {
    let mut owned = BTreeSet::new();
    for (position, entry) in history.interactions.iter().enumerate() {
        if string_at(history, entry.kind, &|| format!("interaction {position} kind"))? != "purchase" {
            continue;
        }
        // Summed in u64 so that first-item + item-count cannot wrap (usize is
        // 32 bits on wasm32); a range that does not fit is simply out of range.
        let start = entry.first_item as u64;
        let end = start + entry.item_count as u64;
        let items = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(start, end)| history.items.get(start..end))
            .ok_or_else(|| {
                PluginError::InvalidInput(format!(
                    "interaction {position}: items {start}..{end} are out of range ({} items)",
                    history.items.len()
                ))
            })?;
        for (offset, item) in items.iter().enumerate() {
            let sku = string_at(history, item.sku, &|| format!("item {} sku", start + offset as u64))?;
            owned.insert(sku.to_string());
        }
    }
    Ok(owned)
}

impl Guest for TestCrossSell {
    fn recommend(request: RecommendRequest) -> Result<Vec<Recommendation>, PluginError> {
        let mut owned = purchased_skus(&request.history)?;
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
        recommendations.extend(
            request
                .basket
                .iter()
                .flatten()
                .filter_map(|item| item.sku.strip_prefix("echo:"))
                .map(|sku| Recommendation {
                    sku: sku.to_string(),
                    score: 1000.0,
                    reason: "echoed".to_string(),
                }),
        );
        recommendations.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.sku.cmp(&b.sku)));
        recommendations.truncate(request.limit as usize);
        Ok(recommendations)
    }

    fn fit(baskets: Vec<Vec<String>>) -> Result<Json, PluginError> {
        Ok(serde_json::json!({ "baskets": baskets.len() }).to_string())
    }
}

export!(TestCrossSell);

#[cfg(test)]
mod tests {
    use super::*;
    use rapport::crm::inputs::{EntryItem, HistoryEntry};
    use rapport::crm::types::Customer;

    fn entry(kind: u32, first_item: u32, item_count: u32) -> HistoryEntry {
        HistoryEntry {
            kind,
            channel: None,
            occurred_at: 0,
            amount: None,
            first_item,
            item_count,
            payload: None,
        }
    }

    fn item(sku: u32) -> EntryItem {
        EntryItem {
            sku,
            quantity: 1,
            currency: 1,
            unit_price_minor: 100,
        }
    }

    /// strings: 0 purchase, 1 USD, 2 A, 3 B, 4 visit, 5 C.
    fn history(interactions: Vec<HistoryEntry>, items: Vec<EntryItem>) -> CustomerHistory {
        CustomerHistory {
            customer: Customer {
                id: "c1".into(),
                external_id: "ext-1".into(),
                name: None,
                email: None,
                phone: None,
                attributes: "{}".into(),
                created_at: 0,
            },
            interactions,
            items,
            strings: ["purchase", "USD", "A", "B", "visit", "C"].map(String::from).to_vec(),
            truncated: false,
            now: 0,
        }
    }

    fn invalid_input(result: Result<BTreeSet<String>, PluginError>) -> String {
        match result {
            Err(PluginError::InvalidInput(message)) => message,
            other => panic!("expected invalid-input, got {other:?}"),
        }
    }

    #[test]
    fn only_items_of_purchases_count_as_bought() {
        let input = history(
            vec![entry(0, 0, 2), entry(4, 2, 1), entry(0, 3, 0), entry(0, 3, 1)],
            vec![item(2), item(3), item(5), item(2)],
        );
        let owned = purchased_skus(&input).expect("valid history");
        assert_eq!(
            owned.into_iter().collect::<Vec<_>>(),
            vec!["A".to_string(), "B".to_string()]
        );
    }

    #[test]
    fn indexes_that_do_not_fit_are_invalid_input() {
        assert_eq!(
            invalid_input(purchased_skus(&history(vec![entry(6, 0, 0)], vec![]))),
            "interaction 0 kind: string index 6 is out of range (6 strings)"
        );
        assert_eq!(
            invalid_input(purchased_skus(&history(vec![entry(0, 1, 1)], vec![item(2)]))),
            "interaction 0: items 1..2 are out of range (1 items)"
        );
        assert_eq!(
            invalid_input(purchased_skus(&history(
                vec![entry(0, u32::MAX, u32::MAX)],
                vec![item(2)]
            ))),
            format!(
                "interaction 0: items {}..{} are out of range (1 items)",
                u32::MAX,
                2 * u64::from(u32::MAX)
            )
        );
        assert_eq!(
            invalid_input(purchased_skus(&history(vec![entry(0, 0, 2)], vec![item(2), item(9)]))),
            "item 1 sku: string index 9 is out of range (6 strings)"
        );
    }
}
