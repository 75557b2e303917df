//! Plain Rust mirrors of the `rapport:crm@0.1.0` records, the types a
//! plugin's business logic sees.
//!
//! They exist on every target (the generated WIT bindings only exist on
//! wasm32), derive serde so a plugin can keep them in `kv` or build test
//! fixtures from JSON, and are converted field by field from and to the
//! generated types in `bindings`. Naming follows the WIT with Rust case;
//! a few records get shorter names (`History` for `customer-history`,
//! `Score` for `customer-score`). Times are epoch milliseconds (UTC), money
//! is integer minor units plus an ISO 4217 currency.
//!
//! The history a scoring or cross-sell plugin receives is compact on the
//! wire; its types ([`History`], [`HistoryEntry`], [`Name`], ...) are in
//! [`crate::history`], re-exported here.

use serde::{Deserialize, Serialize};

// The history types (WIT `customer-history` and its compact entries) live
// in their own module; they are part of the same flat namespace.
pub use crate::history::{Amount, EntryItem, EntryItems, History, HistoryEntry, Interner, Name};

/// Milliseconds since 1970-01-01T00:00:00Z (WIT `timestamp`).
pub type Timestamp = i64;

/// WIT `money`: `amount_minor` in minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub currency: String,
    pub amount_minor: i64,
}

/// WIT `customer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub external_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Tenant-defined attributes, a JSON object, parsed on first use.
    pub attributes: Attributes,
    pub created_at: Timestamp,
}

/// A customer's attributes: the JSON text the host sent, parsed into a
/// [`serde_json::Value`] the first time the plugin looks at it (`Deref`),
/// so that plugins which never read attributes (most scoring rules) do not
/// pay for parsing them for every customer of a batch. Measured on the
/// CDNOW tenant's attributes, eager parsing was about 7% of the rfm
/// plugin's time inside the guest.
///
/// Build one from a value with `json!({...}).into()`; it reads, compares,
/// clones and (de)serialises as that value. Text that is not JSON (the host
/// validates it, so this should not happen) reads as a JSON string holding
/// the text rather than being lost.
#[derive(Default, Clone)]
pub struct Attributes {
    /// The wire text, until parsed (`None` when built from a value).
    raw: Option<String>,
    parsed: std::sync::OnceLock<serde_json::Value>,
}

impl Attributes {
    /// Attributes from the JSON text of the wire record (not parsed yet).
    pub fn from_json_text(text: String) -> Attributes {
        Attributes {
            raw: Some(text),
            parsed: std::sync::OnceLock::new(),
        }
    }

    /// The parsed value (parsing now if this is the first use).
    pub fn value(&self) -> &serde_json::Value {
        self.parsed.get_or_init(|| match &self.raw {
            Some(text) => serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.clone())),
            // `Default`: no attributes, the empty object the host sends.
            None => serde_json::Value::Object(Default::default()),
        })
    }
}

impl From<serde_json::Value> for Attributes {
    fn from(value: serde_json::Value) -> Attributes {
        Attributes {
            raw: None,
            parsed: std::sync::OnceLock::from(value),
        }
    }
}

impl std::ops::Deref for Attributes {
    type Target = serde_json::Value;

    fn deref(&self) -> &serde_json::Value {
        self.value()
    }
}

impl std::ops::DerefMut for Attributes {
    fn deref_mut(&mut self) -> &mut serde_json::Value {
        self.value();
        // Parsed just above; after a change the wire text is stale.
        self.raw = None;
        match self.parsed.get_mut() {
            Some(value) => value,
            None => unreachable!("`value()` initialised the attributes"),
        }
    }
}

impl PartialEq for Attributes {
    fn eq(&self, other: &Attributes) -> bool {
        self.value() == other.value()
    }
}

impl std::fmt::Debug for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value().fmt(f)
    }
}

impl Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Attributes, D::Error> {
        serde_json::Value::deserialize(deserializer).map(Attributes::from)
    }
}

impl Customer {
    /// A customer with just an id (also the external id), no contact
    /// details, empty attributes, created at the epoch: for tests.
    pub fn new(id: impl Into<String>) -> Customer {
        let id = id.into();
        Customer {
            external_id: id.clone(),
            id,
            name: None,
            email: None,
            phone: None,
            attributes: Attributes::default(),
            created_at: 0,
        }
    }
}

/// WIT `line-item`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    pub sku: String,
    pub quantity: i64,
    pub unit_price: Money,
}

/// WIT `interaction`: one entry of a customer's contact history, in full
/// (the `interactions` capability, reward schemes). Scoring and cross-sell
/// receive the compact [`HistoryEntry`] instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    pub id: String,
    pub customer_id: String,
    /// purchase, visit, email_open, ... or a tenant-defined kind.
    pub kind: String,
    pub channel: Option<String>,
    pub occurred_at: Timestamp,
    pub amount: Option<Money>,
    pub items: Vec<LineItem>,
    /// Free-form event data, a JSON object.
    pub payload: serde_json::Value,
}

/// WIT `product`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub category: Option<String>,
    pub price: Money,
    pub attributes: serde_json::Value,
}

/// WIT `loyalty-account`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoyaltyAccount {
    pub customer_id: String,
    /// Spendable points (never negative).
    pub balance: i64,
    pub lifetime_earned: i64,
    pub tier_id: Option<String>,
}

/// WIT `ledger-kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    Earn,
    Redeem,
    Expire,
    Adjust,
}

/// WIT `ledger-entry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub id: String,
    pub kind: LedgerKind,
    /// Signed: positive for credits, negative for debits.
    pub points: i64,
    pub reason: String,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// WIT `tier`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub id: String,
    pub name: String,
    /// 0 is the entry tier; higher is better.
    pub rank: i64,
    pub min_points: i64,
}

/// WIT `reward`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reward {
    pub id: String,
    pub name: String,
    pub cost_points: i64,
    pub min_tier_rank: Option<i64>,
    /// Remaining stock; `None` means unlimited.
    pub stock: Option<i64>,
}

/// WIT `plugin-error`: how a plugin fails on purpose (never panic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind", content = "message")]
pub enum PluginError {
    /// The input cannot be handled.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The tenant's configuration for this plugin is unusable.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// Something the plugin depends on is temporarily unavailable (e.g. no
    /// fitted model yet, or a host capability failed).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or unexpected state inside the plugin.
    #[error("internal: {0}")]
    Internal(String),
}

/// WIT `host-error`: a host capability call failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind", content = "message")]
pub enum HostError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("host unavailable: {0}")]
    Unavailable(String),
}

/// A failed host call becomes the plugin error a caller would expect: a
/// quota or outage is `unavailable` (retrying later may work), a rejected
/// argument is the plugin's own bug (`internal`).
impl From<HostError> for PluginError {
    fn from(err: HostError) -> Self {
        match err {
            HostError::InvalidArgument(m) => PluginError::Internal(format!("host refused: {m}")),
            HostError::QuotaExceeded(m) => PluginError::Unavailable(format!("quota exceeded: {m}")),
            HostError::Unavailable(m) => PluginError::Unavailable(m),
        }
    }
}

/// WIT `purchase`: one purchase, for population fits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    pub at: Timestamp,
    pub amount_minor: i64,
    pub currency: String,
}

/// WIT `purchase-summary`: a customer's purchases (oldest first), for
/// population fits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseSummary {
    pub customer_id: String,
    pub created_at: Timestamp,
    pub purchases: Vec<Purchase>,
}

/// WIT `customer-score`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Must be finite (the host refuses NaN and infinities).
    pub value: f64,
    /// Short label, e.g. "555" or "high".
    pub label: Option<String>,
    /// Named segment, e.g. "Champions".
    pub segment: Option<String>,
    pub explanation: String,
    /// Named sub-scores (each finite).
    pub components: Vec<(String, f64)>,
}

/// WIT `recommendation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub sku: String,
    /// Higher is better; the host sorts by it.
    pub score: f64,
    pub reason: String,
}

/// WIT `recommend-request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendRequest {
    pub history: History,
    /// An optional basket (e.g. the cart) to recommend against.
    pub basket: Option<Vec<LineItem>>,
    /// The most recommendations wanted.
    pub limit: u32,
}

/// WIT `earn-intent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarnIntent {
    pub points: i64,
    pub reason: String,
    pub expires_at: Option<Timestamp>,
}

/// WIT `adjust-intent` (signed; may not take the balance below zero).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdjustIntent {
    pub points: i64,
    pub reason: String,
}

/// WIT `ledger-intent`: a ledger change the plugin asks the host for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerIntent {
    Earn(EarnIntent),
    Adjust(AdjustIntent),
}

/// WIT `tier-change`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierChange {
    /// The new tier's id, or `None` for no tier.
    pub tier_id: Option<String>,
    pub reason: String,
}

/// WIT `reward-outcome`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RewardOutcome {
    pub ledger: Vec<LedgerIntent>,
    pub tier_change: Option<TierChange>,
}

/// WIT `interaction-context`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteractionContext {
    pub interaction: Interaction,
    pub account: LoyaltyAccount,
    pub tiers: Vec<Tier>,
    /// Spend over the last 12 months, minor units, interaction's currency.
    pub rolling_spend_minor: i64,
    pub now: Timestamp,
}

/// WIT `message` (channel connectors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Stable id: use it as the delivery's idempotency key.
    pub id: String,
    pub customer_id: String,
    pub channel: String,
    pub to: String,
    pub subject: Option<String>,
    pub body: String,
    pub metadata: serde_json::Value,
    /// Which attempt this is, starting at 1.
    pub attempt: u32,
    /// The host's clock at this attempt, ms since the epoch.
    pub now: Timestamp,
}

/// WIT `receipt`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Receipt {
    pub provider_id: Option<String>,
    pub detail: Option<String>,
}

/// WIT `delivery-error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("delivery failed (retryable: {retryable}): {message}")]
pub struct DeliveryError {
    /// True when trying again later may succeed (timeouts, 5xx, 429).
    pub retryable: bool,
    pub message: String,
}

impl DeliveryError {
    /// A failure that another attempt later may fix (timeouts, 5xx, 429).
    pub fn retryable(message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            retryable: true,
            message: message.into(),
        }
    }

    /// A failure no retry will fix (a refused destination, a 4xx, bad config).
    pub fn permanent(message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            retryable: false,
            message: message.into(),
        }
    }
}

/// WIT `inbound-request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundRequest {
    pub method: String,
    pub path: String,
    /// Compare names case-insensitively ([`InboundRequest::header`]).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received_at: Timestamp,
}

impl InboundRequest {
    /// The first header named `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// WIT `inbound-event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundEvent {
    pub customer_external_id: String,
    pub kind: String,
    pub occurred_at: Timestamp,
    pub idempotency_key: String,
    pub payload: serde_json::Value,
}

/// WIT `inbound-error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind", content = "message")]
pub enum InboundError {
    /// Signature missing or wrong: the host answers 401.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Not a request this connector understands: 400.
    #[error("malformed: {0}")]
    Malformed(String),
}

/// WIT `outbound-http.request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// GET, POST, PUT, PATCH or DELETE.
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: Option<u32>,
}

/// WIT `outbound-http.response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// WIT `outbound-http.http-error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind", content = "message")]
pub enum HttpError {
    #[error("destination not allowed: {0}")]
    Denied(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("timed out")]
    Timeout,
    #[error("response too large")]
    ResponseTooLarge,
    #[error("connection failed: {0}")]
    Connection(String),
}

/// How `outbound-smtp` secures the connection (WIT `tls-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain text (loopback relays, tests).
    None,
    /// Plain, then upgraded with STARTTLS (required: no fallback), port 587.
    Starttls,
    /// TLS from the first byte ("SMTPS"), port 465.
    Implicit,
}

/// WIT `outbound-smtp.submission`: one message for one SMTP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpSubmission {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// (username, password) for AUTH, if the server wants it.
    pub credentials: Option<(String, String)>,
    /// Envelope sender (MAIL FROM).
    pub mail_from: String,
    /// Envelope recipients (RCPT TO).
    pub rcpt_to: Vec<String>,
    /// The complete RFC 5322 message, CRLF line endings.
    pub message: Vec<u8>,
    pub timeout_ms: Option<u32>,
}

/// An SMTP server reply (WIT `outbound-smtp.reply`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpReply {
    /// e.g. 250, 451, 550.
    pub code: u16,
    pub text: String,
}

/// WIT `outbound-smtp.smtp-error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum SmtpError {
    #[error("destination not allowed: {0}")]
    Denied(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Connection(String),
    /// A 4xx reply: trying again later may succeed.
    #[error("transient SMTP error {}: {}", .0.code, .0.text)]
    Transient(SmtpReply),
    /// A 5xx reply: the server refused for good.
    #[error("permanent SMTP error {}: {}", .0.code, .0.text)]
    Permanent(SmtpReply),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_parse_on_first_use_and_behave_as_their_value() {
        let wire = Attributes::from_json_text(r#"{"tier":"gold","visits":3}"#.into());
        assert!(wire.parsed.get().is_none(), "nothing parsed before use");
        assert_eq!(wire["tier"], "gold");
        assert!(wire.parsed.get().is_some());
        assert_eq!(wire, Attributes::from(serde_json::json!({"visits": 3, "tier": "gold"})));
        assert_eq!(Attributes::default().value(), &serde_json::json!({}));
        // Text that is not JSON is kept, as a JSON string.
        assert_eq!(Attributes::from_json_text("not json".into()).value(), "not json");

        let mut changed = wire.clone();
        changed["tier"] = "silver".into();
        assert_eq!(changed["tier"], "silver");
        assert_eq!(wire["tier"], "gold", "a clone is independent");
        let text = serde_json::to_string(&changed).unwrap();
        let back: Attributes = serde_json::from_str(&text).unwrap();
        assert_eq!(back, changed);
        assert_eq!(format!("{changed:?}"), format!("{:?}", changed.value()));
    }

    #[test]
    fn errors_serialise_as_tagged_objects() {
        assert_eq!(
            serde_json::to_value(PluginError::Unavailable("not fitted".into())).unwrap(),
            serde_json::json!({"kind": "unavailable", "message": "not fitted"})
        );
        assert_eq!(
            PluginError::from(HostError::InvalidArgument("cursor".into())),
            PluginError::Internal("host refused: cursor".into())
        );
    }

    #[test]
    fn inbound_headers_compare_case_insensitively() {
        let request = InboundRequest {
            method: "POST".into(),
            path: "/hook".into(),
            headers: vec![("X-Signature".into(), "abc".into())],
            body: vec![],
            received_at: 0,
        };
        assert_eq!(request.header("x-signature"), Some("abc"));
        assert_eq!(request.header("x-other"), None);
    }
}
