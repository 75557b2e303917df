//! The customer history that scoring and cross-sell plugins receive (WIT
//! `customer-history`), in plain Rust.
//!
//! On the wire the history is compact: each interaction is a record of
//! numbers, and its kind, channel, currency codes and SKUs are indexes into
//! one list of distinct strings (a history has a handful of them, repeated
//! on every interaction). Lowering one `string` per interaction per field
//! into the guest was most of the cost of a scoring call, so the contract
//! sends each distinct string once.
//!
//! Here that becomes friendly Rust without giving the saving back: every
//! distinct string becomes one [`Name`] (a shared, reference-counted
//! string), and entries hold clones of it (a counter increment, not an
//! allocation). The line items of all entries share one allocation too
//! ([`EntryItems`] is a window on it that derefs to `&[EntryItem]`). So
//! turning a wire history into a [`History`] costs a few allocations per
//! history, whatever its length, plus one parse per non-empty payload.
//!
//! The full interaction record (with its id and payload) is still what the
//! `interactions` capability and reward schemes see ([`Interaction`]).
//!
//! For tests and fixtures, [`History::new`] and the `HistoryEntry`
//! builders ([`HistoryEntry::purchase`], [`HistoryEntry::with_items`], ...)
//! write a history in a few lines, and [`History::from_interactions`]
//! turns full interaction records into one.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::types::{Customer, Interaction, LineItem, Money, PluginError, Timestamp};

// ------------------------------------------------------------------- Name

/// A string of a history (interaction kind, channel, currency code, SKU):
/// cheap to clone (reference-counted) and compared like a `&str`.
///
/// `entry.kind == "purchase"`, `&*entry.kind`, `entry.kind.as_str()`,
/// `format!("{}", entry.kind)` all work as with a `String`; serde reads and
/// writes it as a plain JSON string.
#[derive(Clone, Default)]
pub struct Name(Arc<str>);

impl Name {
    pub fn new(s: &str) -> Name {
        Name(Arc::from(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether both are clones of one interned string (the same
    /// allocation): then they are certainly equal. Equal names need not be.
    pub fn ptr_eq(a: &Name, b: &Name) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lets a `HashMap<Name, _>` or `BTreeMap<Name, _>` be queried with a
/// `&str` (hashing and ordering are those of the string).
impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        // Names of one history are interned: the same kind is the same
        // allocation, which answers without comparing bytes.
        Name::ptr_eq(self, other) || self.0 == other.0
    }
}

impl Eq for Name {}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that `Borrow<str>` lookups work.
        self.as_str().hash(state)
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == &*other.0
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == &*other.0
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        **self == *other.0
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name::new(s)
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        Name(Arc::from(s))
    }
}

impl From<&String> for Name {
    fn from(s: &String) -> Name {
        Name::new(s)
    }
}

impl From<Arc<str>> for Name {
    fn from(s: Arc<str>) -> Name {
        Name(s)
    }
}

impl From<&Name> for Name {
    fn from(name: &Name) -> Name {
        name.clone()
    }
}

impl From<Name> for String {
    fn from(name: Name) -> String {
        name.as_str().to_owned()
    }
}

impl From<&Name> for String {
    fn from(name: &Name) -> String {
        name.as_str().to_owned()
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        String::deserialize(deserializer).map(Name::from)
    }
}

/// Hands out one [`Name`] per distinct string, so that equal strings
/// share one allocation (what the guest does with a history's `strings`).
/// For code that builds many entries natively, e.g. [`History::from_interactions`].
#[derive(Debug, Default, Clone)]
pub struct Interner {
    names: HashSet<Name>,
}

impl Interner {
    pub fn new() -> Interner {
        Interner::default()
    }

    /// The name for `s`, allocated on first use only.
    pub fn intern(&mut self, s: &str) -> Name {
        if let Some(name) = self.names.get(s) {
            return name.clone();
        }
        let name = Name::new(s);
        self.names.insert(name.clone());
        name
    }
}

// ---------------------------------------------------------------- Amounts

/// An amount of a history entry: `minor` units of `currency` (WIT
/// `entry-amount`, the currency resolved). [`Money`] with a shared
/// currency code; `to_money()` converts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Amount {
    /// ISO 4217 code, e.g. "USD".
    pub currency: Name,
    /// Minor units (cents for USD, yen for JPY).
    pub minor: i64,
}

impl Amount {
    pub fn new(currency: impl Into<Name>, minor: i64) -> Amount {
        Amount {
            currency: currency.into(),
            minor,
        }
    }

    pub fn to_money(&self) -> Money {
        Money::new(self.currency.as_str(), self.minor)
    }
}

impl From<&Amount> for Money {
    fn from(a: &Amount) -> Money {
        a.to_money()
    }
}

impl From<Amount> for Money {
    fn from(a: Amount) -> Money {
        a.to_money()
    }
}

impl From<&Money> for Amount {
    fn from(m: &Money) -> Amount {
        Amount::new(m.currency.as_str(), m.amount_minor)
    }
}

impl From<Money> for Amount {
    fn from(m: Money) -> Amount {
        Amount::new(m.currency, m.amount_minor)
    }
}

/// One line item of a history entry (WIT `entry-item`, strings resolved).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntryItem {
    pub sku: Name,
    pub quantity: i64,
    pub unit_price: Amount,
}

impl EntryItem {
    pub fn new(sku: impl Into<Name>, quantity: i64, unit_price: Amount) -> EntryItem {
        EntryItem {
            sku: sku.into(),
            quantity,
            unit_price,
        }
    }
}

impl From<&LineItem> for EntryItem {
    fn from(l: &LineItem) -> EntryItem {
        EntryItem::new(l.sku.as_str(), l.quantity, (&l.unit_price).into())
    }
}

impl From<&EntryItem> for LineItem {
    fn from(e: &EntryItem) -> LineItem {
        LineItem {
            sku: e.sku.to_string(),
            quantity: e.quantity,
            unit_price: e.unit_price.to_money(),
        }
    }
}

// ------------------------------------------------------------ EntryItems

/// The line items of one history entry: use it as a `&[EntryItem]`
/// (`entry.items.iter()`, `.len()`, `[0]`, `for item in &entry.items`).
///
/// All entries of a history share one allocation of items (the contract
/// sends them as one list); this is a window on it, so an entry costs no
/// allocation of its own. Build one from a `Vec` (`vec![..].into()`) or an
/// iterator (`.collect()`); serde reads and writes it as a JSON array.
#[derive(Clone)]
pub struct EntryItems {
    all: Arc<[EntryItem]>,
    start: usize,
    len: usize,
}

impl EntryItems {
    /// No items.
    pub fn new() -> EntryItems {
        EntryItems::from(Vec::new())
    }

    /// `all[start .. start + len]`, or `None` if that is not inside `all`.
    pub fn window(all: &Arc<[EntryItem]>, start: usize, len: usize) -> Option<EntryItems> {
        let end = start.checked_add(len)?;
        (end <= all.len()).then(|| EntryItems {
            all: Arc::clone(all),
            start,
            len,
        })
    }

    pub fn as_slice(&self) -> &[EntryItem] {
        // In range by construction (`window` checks, `From` covers all).
        self.all.get(self.start..self.start + self.len).unwrap_or(&[])
    }
}

impl Default for EntryItems {
    fn default() -> EntryItems {
        EntryItems::new()
    }
}

impl Deref for EntryItems {
    type Target = [EntryItem];

    fn deref(&self) -> &[EntryItem] {
        self.as_slice()
    }
}

impl AsRef<[EntryItem]> for EntryItems {
    fn as_ref(&self) -> &[EntryItem] {
        self.as_slice()
    }
}

impl fmt::Debug for EntryItems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

impl PartialEq for EntryItems {
    fn eq(&self, other: &EntryItems) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for EntryItems {}

impl PartialEq<[EntryItem]> for EntryItems {
    fn eq(&self, other: &[EntryItem]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<Vec<EntryItem>> for EntryItems {
    fn eq(&self, other: &Vec<EntryItem>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl From<Vec<EntryItem>> for EntryItems {
    fn from(items: Vec<EntryItem>) -> EntryItems {
        let len = items.len();
        EntryItems {
            all: Arc::from(items),
            start: 0,
            len,
        }
    }
}

impl FromIterator<EntryItem> for EntryItems {
    fn from_iter<I: IntoIterator<Item = EntryItem>>(iter: I) -> EntryItems {
        EntryItems::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl<'a> IntoIterator for &'a EntryItems {
    type Item = &'a EntryItem;
    type IntoIter = std::slice::Iter<'a, EntryItem>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl Serialize for EntryItems {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for EntryItems {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EntryItems, D::Error> {
        Vec::<EntryItem>::deserialize(deserializer).map(EntryItems::from)
    }
}

// ----------------------------------------------------------- HistoryEntry

/// One interaction of a history (WIT `history-entry`, strings resolved):
/// what scoring and cross-sell need, without the interaction's id. The
/// full record is one `host::interactions::list` call away (capability
/// `interactions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// purchase, visit, email_open, ... or a tenant-defined kind.
    pub kind: Name,
    pub channel: Option<Name>,
    pub occurred_at: Timestamp,
    pub amount: Option<Amount>,
    #[serde(default)]
    pub items: EntryItems,
    /// The event data (a JSON object); `None` when it is empty (`{}`).
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
}

impl HistoryEntry {
    /// An entry of `kind` at `occurred_at`, with no channel, amount, items
    /// or payload (add them with the `with_*` builders).
    pub fn new(kind: impl Into<Name>, occurred_at: Timestamp) -> HistoryEntry {
        HistoryEntry {
            kind: kind.into(),
            channel: None,
            occurred_at,
            amount: None,
            items: EntryItems::new(),
            payload: None,
        }
    }

    /// A `purchase` of `minor` units of `currency` at `occurred_at`.
    pub fn purchase(occurred_at: Timestamp, currency: impl Into<Name>, minor: i64) -> HistoryEntry {
        HistoryEntry::new("purchase", occurred_at).with_amount(currency, minor)
    }

    pub fn with_channel(mut self, channel: impl Into<Name>) -> HistoryEntry {
        self.channel = Some(channel.into());
        self
    }

    pub fn with_amount(mut self, currency: impl Into<Name>, minor: i64) -> HistoryEntry {
        self.amount = Some(Amount::new(currency, minor));
        self
    }

    /// Replaces the line items.
    pub fn with_items(mut self, items: impl IntoIterator<Item = EntryItem>) -> HistoryEntry {
        self.items = items.into_iter().collect();
        self
    }

    /// Adds one line item: `quantity` × `sku` at `unit_minor` of the
    /// entry's currency (USD when the entry has no amount).
    pub fn with_item(mut self, sku: impl Into<Name>, quantity: i64, unit_minor: i64) -> HistoryEntry {
        let currency = self
            .amount
            .as_ref()
            .map_or_else(|| Name::new("USD"), |a| a.currency.clone());
        let mut items = self.items.to_vec();
        items.push(EntryItem::new(sku, quantity, Amount::new(currency, unit_minor)));
        self.items = items.into();
        self
    }

    /// Sets the payload; the empty object is stored as `None`, as the host
    /// sends it.
    pub fn with_payload(mut self, payload: serde_json::Value) -> HistoryEntry {
        self.payload = (!is_empty_object(&payload)).then_some(payload);
        self
    }

    /// The entry of a full interaction record (its id and customer id are
    /// dropped), its strings interned in `interner`.
    pub fn from_interaction(interaction: &Interaction, interner: &mut Interner) -> HistoryEntry {
        let kind = interner.intern(&interaction.kind);
        let channel = interaction.channel.as_deref().map(|c| interner.intern(c));
        let amount = interaction.amount.as_ref().map(|m| Amount {
            currency: interner.intern(&m.currency),
            minor: m.amount_minor,
        });
        let items: Vec<EntryItem> = interaction
            .items
            .iter()
            .map(|l| EntryItem {
                sku: interner.intern(&l.sku),
                quantity: l.quantity,
                unit_price: Amount {
                    currency: interner.intern(&l.unit_price.currency),
                    minor: l.unit_price.amount_minor,
                },
            })
            .collect();
        HistoryEntry {
            kind,
            channel,
            occurred_at: interaction.occurred_at,
            amount,
            items: items.into(),
            payload: (!is_empty_object(&interaction.payload)).then(|| interaction.payload.clone()),
        }
    }
}

fn is_empty_object(value: &serde_json::Value) -> bool {
    value.as_object().is_some_and(|o| o.is_empty())
}

// ---------------------------------------------------------------- History

/// WIT `customer-history`: the customer and their interactions, oldest
/// first (capped by the host; `truncated` says so), and the host's `now`.
///
/// ```
/// use rapport_plugin_sdk::{Customer, History, HistoryEntry};
///
/// let history = History::new(Customer::new("c1"), 5_000)
///     .with_entry(HistoryEntry::purchase(1_000, "USD", 1250).with_item("MUG", 1, 1250))
///     .with_entry(HistoryEntry::new("email_open", 2_000).with_channel("email"));
/// let spend: i64 = history.of_kind("purchase").filter_map(|e| e.amount.as_ref()).map(|a| a.minor).sum();
/// assert_eq!(spend, 1250);
/// assert_eq!(history.interactions[0].items[0].sku, "MUG");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub customer: Customer,
    pub interactions: Vec<HistoryEntry>,
    pub truncated: bool,
    pub now: Timestamp,
}

impl History {
    /// `customer` with no interactions yet, at `now`.
    pub fn new(customer: Customer, now: Timestamp) -> History {
        History {
            customer,
            interactions: Vec::new(),
            truncated: false,
            now,
        }
    }

    /// Appends an entry (keep them oldest first, as the host does).
    pub fn with_entry(mut self, entry: HistoryEntry) -> History {
        self.interactions.push(entry);
        self
    }

    pub fn with_entries(mut self, entries: impl IntoIterator<Item = HistoryEntry>) -> History {
        self.interactions.extend(entries);
        self
    }

    /// The history of full interaction records (oldest first), as the host
    /// would send it: equal strings shared, empty payloads `None`.
    pub fn from_interactions(customer: Customer, interactions: &[Interaction], now: Timestamp) -> History {
        let mut interner = Interner::new();
        History {
            customer,
            interactions: interactions
                .iter()
                .map(|i| HistoryEntry::from_interaction(i, &mut interner))
                .collect(),
            truncated: false,
            now,
        }
    }

    /// The entries of `kind` (e.g. "purchase"), oldest first.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a HistoryEntry> + 'a {
        self.interactions.iter().filter(move |e| e.kind == kind)
    }
}

// ---------------------------------------------------------- from the wire

/// Resolves the string indexes of a wire history (used by the guest
/// conversion; here so that it is tested natively). An index out of range
/// is the host's bug, reported as `invalid-input`, never a panic.
#[doc(hidden)]
pub struct WireStrings {
    names: Vec<Name>,
}

impl WireStrings {
    /// One [`Name`] per string of the history, allocated once each.
    pub fn new(strings: Vec<String>) -> WireStrings {
        WireStrings {
            names: strings.into_iter().map(Name::from).collect(),
        }
    }

    /// The name at `index`; `what` says which field referred to it (for the
    /// error, which is built only on failure).
    pub fn get(&self, index: u32, what: impl FnOnce() -> String) -> Result<Name, PluginError> {
        match self.names.get(index as usize) {
            Some(name) => Ok(name.clone()),
            None => Err(PluginError::InvalidInput(format!(
                "customer-history: {} refers to string {index}, but the history has {} strings",
                what(),
                self.names.len()
            ))),
        }
    }
}

/// Entry `entry`'s items `all[first .. first + count]` of a wire history,
/// or `invalid-input` if they are not all there.
#[doc(hidden)]
pub fn wire_items(all: &Arc<[EntryItem]>, first: u32, count: u32, entry: usize) -> Result<EntryItems, PluginError> {
    EntryItems::window(all, first as usize, count as usize).ok_or_else(|| {
        PluginError::InvalidInput(format!(
            "customer-history: entry {entry} has items {first}..{first}+{count}, but the history has {} items",
            all.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_compare_hash_and_serialise_as_strings() {
        let a = Name::from("purchase");
        let b = a.clone();
        let c = Name::from(String::from("purchase"));
        assert!(Name::ptr_eq(&a, &b));
        assert!(!Name::ptr_eq(&a, &c));
        assert_eq!(a, c);
        // Every way round a plugin may write the comparison.
        let (text, owned): (&str, String) = ("purchase", "purchase".into());
        assert_eq!(a, text);
        assert_eq!(text, a);
        assert_eq!(a, *text);
        assert_eq!(*text, a);
        assert_eq!(a, owned);
        assert_eq!(owned, a);
        assert_ne!(a, "visit");
        assert_eq!(a.len(), 8);
        assert_eq!(format!("{a} {a:?}"), "purchase \"purchase\"");
        let mut sorted = vec![Name::from("b"), Name::from("a")];
        sorted.sort();
        assert_eq!(sorted, ["a", "b"]);
        let mut counts = std::collections::HashMap::new();
        *counts.entry(a.clone()).or_insert(0) += 1;
        assert_eq!(counts.get("purchase"), Some(&1));
        assert_eq!(serde_json::to_value(&a).unwrap(), json!("purchase"));
        assert_eq!(serde_json::from_value::<Name>(json!("visit")).unwrap(), "visit");
        assert_eq!(String::from(a), "purchase");
    }

    #[test]
    fn the_interner_shares_equal_strings() {
        let mut interner = Interner::new();
        let a = interner.intern("USD");
        let b = interner.intern("USD");
        let c = interner.intern("EUR");
        assert!(Name::ptr_eq(&a, &b));
        assert_eq!((a.as_str(), c.as_str()), ("USD", "EUR"));
    }

    #[test]
    fn entry_items_are_windows_on_one_allocation() {
        let all: Arc<[EntryItem]> = Arc::from(vec![
            EntryItem::new("A", 1, Amount::new("USD", 100)),
            EntryItem::new("B", 2, Amount::new("USD", 250)),
            EntryItem::new("C", 3, Amount::new("EUR", 5)),
        ]);
        let second = EntryItems::window(&all, 1, 2).unwrap();
        assert_eq!(second.len(), 2);
        assert_eq!(second[0].sku, "B");
        assert_eq!(second.iter().map(|i| i.quantity).sum::<i64>(), 5);
        assert_eq!(
            second,
            vec![
                EntryItem::new("B", 2, Amount::new("USD", 250)),
                EntryItem::new("C", 3, Amount::new("EUR", 5))
            ]
        );
        assert!(EntryItems::window(&all, 3, 0).unwrap().is_empty());
        assert!(EntryItems::window(&all, 2, 2).is_none());
        assert!(EntryItems::window(&all, usize::MAX, 2).is_none());
        assert_eq!(
            serde_json::to_value(&second).unwrap()[1],
            json!({"sku": "C", "quantity": 3, "unit_price": {"currency": "EUR", "minor": 5}})
        );
        let back: EntryItems = serde_json::from_value(serde_json::to_value(&second).unwrap()).unwrap();
        assert_eq!(back, second);
    }

    #[test]
    fn builders_write_a_history_concisely() {
        let history = History::new(Customer::new("c1"), 10_000)
            .with_entry(
                HistoryEntry::purchase(1_000, "USD", 1750)
                    .with_channel("web")
                    .with_item("MUG", 1, 1250)
                    .with_item("TEA", 2, 250),
            )
            .with_entry(HistoryEntry::new("email_open", 2_000).with_payload(json!({"campaign": "spring"})))
            .with_entry(HistoryEntry::new("visit", 3_000).with_payload(json!({})));
        let p = &history.interactions[0];
        assert_eq!((p.kind.as_str(), p.channel.as_deref()), ("purchase", Some("web")));
        assert_eq!(p.amount, Some(Amount::new("USD", 1750)));
        assert_eq!(p.items[1], EntryItem::new("TEA", 2, Amount::new("USD", 250)));
        assert_eq!(history.interactions[1].payload, Some(json!({"campaign": "spring"})));
        assert_eq!(history.interactions[2].payload, None);
        assert_eq!(history.of_kind("purchase").count(), 1);
        assert_eq!(history.customer.id, "c1");
        // JSON round trip, strings as strings.
        let text = serde_json::to_value(&history).unwrap();
        assert_eq!(text["interactions"][0]["kind"], json!("purchase"));
        assert_eq!(text["interactions"][0]["items"][0]["sku"], json!("MUG"));
        assert_eq!(serde_json::from_value::<History>(text).unwrap(), history);
    }

    #[test]
    fn full_interactions_convert_with_shared_strings() {
        let full = |id: &str, kind: &str, payload: serde_json::Value| Interaction {
            id: id.into(),
            customer_id: "c1".into(),
            kind: kind.into(),
            channel: Some("web".into()),
            occurred_at: 7,
            amount: Some(Money::new("USD", 300)),
            items: vec![LineItem {
                sku: "A".into(),
                quantity: 3,
                unit_price: Money::new("USD", 100),
            }],
            payload,
        };
        let history = History::from_interactions(
            Customer::new("c1"),
            &[
                full("i1", "purchase", json!({})),
                full("i2", "purchase", json!({"x": 1})),
            ],
            9,
        );
        let [a, b] = [&history.interactions[0], &history.interactions[1]];
        assert!(Name::ptr_eq(&a.kind, &b.kind));
        assert!(Name::ptr_eq(
            &a.items[0].unit_price.currency,
            &b.amount.as_ref().unwrap().currency
        ));
        assert_eq!(a.payload, None);
        assert_eq!(b.payload, Some(json!({"x": 1})));
        assert_eq!(LineItem::from(&a.items[0]), full("i", "k", json!({})).items[0]);
        assert_eq!(Money::from(a.amount.as_ref().unwrap()), Money::new("USD", 300));
    }

    #[test]
    fn bad_wire_indexes_are_invalid_input() {
        let strings = WireStrings::new(vec!["purchase".into(), "USD".into()]);
        assert_eq!(strings.get(1, || unreachable!()).unwrap(), "USD");
        assert_eq!(
            strings.get(2, || "entry 0 kind".into()),
            Err(PluginError::InvalidInput(
                "customer-history: entry 0 kind refers to string 2, but the history has 2 strings".into()
            ))
        );
        assert!(matches!(
            strings.get(u32::MAX, || "x".into()),
            Err(PluginError::InvalidInput(_))
        ));
        let all: Arc<[EntryItem]> = Arc::from(vec![EntryItem::new("A", 1, Amount::new("USD", 1))]);
        assert_eq!(wire_items(&all, 0, 1, 0).unwrap().len(), 1);
        assert_eq!(
            wire_items(&all, 1, 1, 4),
            Err(PluginError::InvalidInput(
                "customer-history: entry 4 has items 1..1+1, but the history has 1 items".into()
            ))
        );
        assert!(wire_items(&all, u32::MAX, u32::MAX, 0).is_err());
    }
}
