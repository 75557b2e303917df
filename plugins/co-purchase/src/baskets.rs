//! Turning purchases into baskets, per purchase or per customer
//! ([`crate::BasketMode`]). The WIT `fit` receives baskets the host already
//! built; this is for the binding (or the host) when it builds them from
//! interactions itself, so that both modes mean the same everywhere.

use std::collections::HashMap;

use crate::BasketMode;

/// One purchase: who bought, and which SKUs (duplicates allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    pub customer_id: String,
    pub skus: Vec<String>,
}

/// Groups purchases into baskets. `PerPurchase` keeps one basket per
/// purchase; `PerCustomer` merges all of a customer's purchases into one
/// basket, customers in order of first appearance. Duplicates are kept here
/// (fitting counts each SKU once per basket anyway).
pub fn group_baskets(purchases: impl IntoIterator<Item = Purchase>, mode: BasketMode) -> Vec<Vec<String>> {
    match mode {
        BasketMode::PerPurchase => purchases.into_iter().map(|p| p.skus).collect(),
        BasketMode::PerCustomer => {
            let mut slot_of: HashMap<String, usize> = HashMap::new();
            let mut baskets: Vec<Vec<String>> = Vec::new();
            for purchase in purchases {
                let slot = *slot_of.entry(purchase.customer_id).or_insert_with(|| {
                    baskets.push(Vec::new());
                    baskets.len() - 1
                });
                baskets[slot].extend(purchase.skus);
            }
            baskets
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purchase(customer: &str, skus: &[&str]) -> Purchase {
        Purchase {
            customer_id: customer.to_string(),
            skus: skus.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn per_purchase_keeps_each_purchase() {
        let baskets = group_baskets(
            vec![purchase("c1", &["a", "b"]), purchase("c1", &["c"])],
            BasketMode::PerPurchase,
        );
        assert_eq!(baskets, vec![vec!["a", "b"], vec!["c"]]);
    }

    #[test]
    fn per_customer_merges_in_first_appearance_order() {
        let baskets = group_baskets(
            vec![
                purchase("c2", &["x"]),
                purchase("c1", &["a", "b"]),
                purchase("c2", &["y"]),
                purchase("c1", &["c"]),
            ],
            BasketMode::PerCustomer,
        );
        assert_eq!(baskets, vec![vec!["x", "y"], vec!["a", "b", "c"]]);
    }
}
