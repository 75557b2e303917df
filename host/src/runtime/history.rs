//! Builds the contract's compact `customer-history` (what scoring and
//! cross-sell plugins receive) from a customer's interactions.
//!
//! Why compact: the canonical ABI lowers every `string` and `list` of a
//! call's input by calling the guest's allocator, so a history of full
//! interaction records (id, customer id, kind, payload, currency and SKUs
//! as strings) cost about ten guest calls per interaction, most of a
//! scoring call. Here each interaction becomes a record of numbers; kinds,
//! channels, currency codes and SKUs are interned once per history in
//! `strings`, line items of all entries share one list, and an empty
//! payload is sent as `none`. A history then costs a handful of guest
//! allocations whatever its length.
//!
//! Every producer of a history (the batch job from store rows, one-off
//! scoring and recommendations from the timeline, `rapport plugin run`
//! fixtures, tests, benchmarks) goes through [`HistoryBuilder`], so the
//! interning rules live in one place.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::contract::inputs::{CustomerHistory, EntryAmount, EntryItem, HistoryEntry};
use super::contract::types::{Customer, Interaction, Timestamp};

/// Below this many distinct strings a linear scan beats hashing (a typical
/// history has one or two kinds and one currency).
const SCAN_LIMIT: usize = 16;

/// One line item, borrowed from wherever the caller keeps it.
#[derive(Debug, Clone, Copy)]
pub struct ItemParts<'a> {
    pub sku: &'a str,
    pub quantity: i64,
    pub currency: &'a str,
    pub unit_price_minor: i64,
}

/// Accumulates entries oldest first, then [`HistoryBuilder::finish`]es
/// into a [`CustomerHistory`].
#[derive(Debug, Default)]
pub struct HistoryBuilder {
    entries: Vec<HistoryEntry>,
    items: Vec<EntryItem>,
    strings: Vec<String>,
    /// Built only once `strings` outgrows [`SCAN_LIMIT`].
    index: Option<HashMap<String, u32>>,
}

impl HistoryBuilder {
    pub fn new() -> HistoryBuilder {
        HistoryBuilder::default()
    }

    pub fn with_capacity(entries: usize) -> HistoryBuilder {
        HistoryBuilder {
            entries: Vec::with_capacity(entries),
            strings: Vec::with_capacity(4),
            ..HistoryBuilder::default()
        }
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(index) = &self.index {
            if let Some(&i) = index.get(s) {
                return i;
            }
        } else if let Some(i) = self.strings.iter().position(|known| known == s) {
            return i as u32;
        }
        let i = self.strings.len() as u32;
        self.strings.push(s.to_owned());
        match &mut self.index {
            Some(index) => {
                index.insert(s.to_owned(), i);
            }
            None if self.strings.len() > SCAN_LIMIT => {
                self.index = Some(
                    self.strings
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (s.clone(), i as u32))
                        .collect(),
                );
            }
            None => {}
        }
        i
    }

    /// Adds one interaction. `amount` is `(currency, minor units)`;
    /// `payload` is the event data as serialised JSON (sent only when it is
    /// not the empty object).
    #[allow(clippy::too_many_arguments)]
    pub fn push<'a>(
        &mut self,
        kind: &str,
        channel: Option<&str>,
        occurred_at: Timestamp,
        amount: Option<(&str, i64)>,
        items: impl IntoIterator<Item = ItemParts<'a>>,
        payload: &str,
    ) {
        let kind = self.intern(kind);
        let channel = channel.map(|c| self.intern(c));
        let amount = amount.map(|(currency, minor)| EntryAmount {
            currency: self.intern(currency),
            minor,
        });
        let first_item = self.items.len() as u32;
        for item in items {
            let entry = EntryItem {
                sku: self.intern(item.sku),
                quantity: item.quantity,
                currency: self.intern(item.currency),
                unit_price_minor: item.unit_price_minor,
            };
            self.items.push(entry);
        }
        let item_count = self.items.len() as u32 - first_item;
        self.entries.push(HistoryEntry {
            kind,
            channel,
            occurred_at,
            amount,
            first_item,
            item_count,
            payload: (!is_empty_object(payload)).then(|| payload.to_owned()),
        });
    }

    /// Adds one full contract interaction (its id is not part of a history).
    pub fn push_interaction(&mut self, i: &Interaction) {
        self.push(
            &i.kind,
            i.channel.as_deref(),
            i.occurred_at,
            i.amount.as_ref().map(|m| (m.currency.as_str(), m.amount_minor)),
            i.items.iter().map(|item| ItemParts {
                sku: &item.sku,
                quantity: item.quantity,
                currency: &item.unit_price.currency,
                unit_price_minor: item.unit_price.amount_minor,
            }),
            &i.payload,
        );
    }

    pub fn finish(self, customer: Customer, truncated: bool, now: Timestamp) -> CustomerHistory {
        CustomerHistory {
            customer,
            interactions: self.entries,
            items: self.items,
            strings: self.strings,
            truncated,
            now,
        }
    }
}

/// `{}` (with any whitespace): the payload most interactions carry, and
/// the one a history leaves out.
fn is_empty_object(json: &str) -> bool {
    let mut bytes = json.bytes().filter(|b| !b.is_ascii_whitespace());
    bytes.next() == Some(b'{') && bytes.next() == Some(b'}') && bytes.next().is_none()
}

/// A history with full interaction records: the form people write (the
/// `rapport plugin run` fixtures, tests), compacted with [`Self::compact`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullHistory {
    pub customer: Customer,
    /// Oldest first.
    #[serde(default)]
    pub interactions: Vec<Interaction>,
    #[serde(default)]
    pub truncated: bool,
    pub now: Timestamp,
}

impl FullHistory {
    pub fn compact(&self) -> CustomerHistory {
        compact(self.customer.clone(), &self.interactions, self.truncated, self.now)
    }
}

/// The compact history of `customer` with `interactions` (oldest first).
pub fn compact(customer: Customer, interactions: &[Interaction], truncated: bool, now: Timestamp) -> CustomerHistory {
    let mut builder = HistoryBuilder::with_capacity(interactions.len());
    for i in interactions {
        builder.push_interaction(i);
    }
    builder.finish(customer, truncated, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::contract::types::{LineItem, Money};

    fn customer() -> Customer {
        Customer {
            id: "c1".into(),
            external_id: "E1".into(),
            name: None,
            email: None,
            phone: None,
            attributes: "{}".into(),
            created_at: 0,
        }
    }

    fn interaction(
        kind: &str,
        at: i64,
        amount: Option<(&str, i64)>,
        items: &[(&str, i64)],
        payload: &str,
    ) -> Interaction {
        let currency = amount.map(|a| a.0).unwrap_or("USD");
        Interaction {
            id: format!("i{at}"),
            customer_id: "c1".into(),
            kind: kind.into(),
            channel: (kind == "email_open").then(|| "email".to_string()),
            occurred_at: at,
            amount: amount.map(|(c, m)| Money {
                currency: c.into(),
                amount_minor: m,
            }),
            items: items
                .iter()
                .map(|(sku, price)| LineItem {
                    sku: sku.to_string(),
                    quantity: 1,
                    unit_price: Money {
                        currency: currency.into(),
                        amount_minor: *price,
                    },
                })
                .collect(),
            payload: payload.into(),
        }
    }

    #[test]
    fn interns_each_string_once_and_keeps_every_field() {
        let full = [
            interaction("purchase", 1, Some(("USD", 500)), &[("A", 200), ("B", 300)], "{}"),
            interaction("email_open", 2, None, &[], "{ \"campaign\": \"x\" }"),
            interaction("purchase", 3, Some(("EUR", 700)), &[("A", 700)], " { } "),
        ];
        let h = compact(customer(), &full, true, 99);
        assert_eq!(h.strings, ["purchase", "USD", "A", "B", "email_open", "email", "EUR"]);
        assert_eq!(h.interactions.len(), 3);
        let [p1, open, p2] = [&h.interactions[0], &h.interactions[1], &h.interactions[2]];
        assert_eq!((p1.kind, p1.channel, p1.occurred_at), (0, None, 1));
        assert_eq!(
            p1.amount,
            Some(EntryAmount {
                currency: 1,
                minor: 500
            })
        );
        assert_eq!((p1.first_item, p1.item_count), (0, 2));
        assert_eq!(p1.payload, None);
        assert_eq!((open.kind, open.channel, open.amount), (4, Some(5), None));
        assert_eq!((open.first_item, open.item_count), (2, 0));
        assert_eq!(open.payload.as_deref(), Some("{ \"campaign\": \"x\" }"));
        assert_eq!(
            p2.amount,
            Some(EntryAmount {
                currency: 6,
                minor: 700
            })
        );
        assert_eq!((p2.first_item, p2.item_count), (2, 1));
        assert_eq!(p2.payload, None, "whitespace around {{}} is still empty");
        assert_eq!(
            h.items[2],
            EntryItem {
                sku: 2,
                quantity: 1,
                currency: 6,
                unit_price_minor: 700
            }
        );
        assert!(h.truncated);
        assert_eq!(h.now, 99);
    }

    #[test]
    fn many_distinct_strings_switch_to_a_hash_index_without_changing_indexes() {
        let skus: Vec<String> = (0..100).map(|i| format!("sku-{i}")).collect();
        let mut builder = HistoryBuilder::new();
        for round in 0..2 {
            for (i, sku) in skus.iter().enumerate() {
                builder.push(
                    "purchase",
                    None,
                    (round * 100 + i) as i64,
                    None,
                    [ItemParts {
                        sku,
                        quantity: 1,
                        currency: "USD",
                        unit_price_minor: 1,
                    }],
                    "{}",
                );
            }
        }
        let h = builder.finish(customer(), false, 0);
        // purchase, sku-0, USD, sku-1, ..., sku-99: 102 strings, each once.
        assert_eq!(h.strings.len(), 102);
        for round in 0..2 {
            for (i, sku) in skus.iter().enumerate() {
                let item = &h.items[round * 100 + i];
                assert_eq!(&h.strings[item.sku as usize], sku);
                assert_eq!(h.strings[item.currency as usize], "USD");
            }
        }
    }

    #[test]
    fn empty_object_detection() {
        assert!(is_empty_object("{}"));
        assert!(is_empty_object(" {\n} "));
        assert!(!is_empty_object("{\"a\":1}"));
        assert!(!is_empty_object("[]"));
        assert!(!is_empty_object(""));
        assert!(!is_empty_object("{}}"));
    }
}
