//! The glue between the generated bindings and the SDK traits (wasm32
//! only): field-by-field conversions between the generated WIT types and
//! [`crate::types`], and one adapter per world that implements the
//! generated `Guest` trait by calling the plugin's SDK trait. The export
//! macros (`export_scoring_rule!`, ...) export these adapters.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::bindings::channel_connector::exports::rapport::crm::channel as wit_channel;
use crate::bindings::cross_sell::exports::rapport::crm::cross_selling as wit_cross;
use crate::bindings::reward_scheme::exports::rapport::crm::rewards as wit_rewards;
use crate::bindings::scoring_rule::exports::rapport::crm::scoring as wit_scoring;
use crate::bindings::scoring_rule::rapport::crm::inputs as wit_inputs;
use crate::bindings::scoring_rule::rapport::crm::types as wit;
use crate::history::{WireStrings, wire_items};
use crate::traits::{ChannelConnector, CrossSell, RewardScheme, ScoringRule};
use crate::types::*;

/// A WIT `json` string as a value. The host validates JSON before handing
/// it over; should it not be, the raw text is kept as a JSON string rather
/// than lost.
pub(crate) fn json_in(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
}

/// A value as a WIT `json` string (serialising a `Value` cannot fail).
pub(crate) fn json_out(value: &serde_json::Value) -> String {
    value.to_string()
}

impl From<wit::Money> for Money {
    fn from(m: wit::Money) -> Self {
        Money {
            currency: m.currency,
            amount_minor: m.amount_minor,
        }
    }
}

impl From<wit::Customer> for Customer {
    fn from(c: wit::Customer) -> Self {
        Customer {
            id: c.id,
            external_id: c.external_id,
            name: c.name,
            email: c.email,
            phone: c.phone,
            attributes: Attributes::from_json_text(c.attributes),
            created_at: c.created_at,
        }
    }
}

impl From<wit::LineItem> for LineItem {
    fn from(l: wit::LineItem) -> Self {
        LineItem {
            sku: l.sku,
            quantity: l.quantity,
            unit_price: l.unit_price.into(),
        }
    }
}

impl From<wit::Interaction> for Interaction {
    fn from(i: wit::Interaction) -> Self {
        Interaction {
            id: i.id,
            customer_id: i.customer_id,
            kind: i.kind,
            channel: i.channel,
            occurred_at: i.occurred_at,
            amount: i.amount.map(Into::into),
            items: i.items.into_iter().map(Into::into).collect(),
            payload: json_in(i.payload),
        }
    }
}

impl From<wit::Product> for Product {
    fn from(p: wit::Product) -> Self {
        Product {
            sku: p.sku,
            name: p.name,
            category: p.category,
            price: p.price.into(),
            attributes: json_in(p.attributes),
        }
    }
}

impl From<wit::LoyaltyAccount> for LoyaltyAccount {
    fn from(a: wit::LoyaltyAccount) -> Self {
        LoyaltyAccount {
            customer_id: a.customer_id,
            balance: a.balance,
            lifetime_earned: a.lifetime_earned,
            tier_id: a.tier_id,
        }
    }
}

impl From<wit::LedgerKind> for LedgerKind {
    fn from(k: wit::LedgerKind) -> Self {
        match k {
            wit::LedgerKind::Earn => LedgerKind::Earn,
            wit::LedgerKind::Redeem => LedgerKind::Redeem,
            wit::LedgerKind::Expire => LedgerKind::Expire,
            wit::LedgerKind::Adjust => LedgerKind::Adjust,
        }
    }
}

impl From<wit::LedgerEntry> for LedgerEntry {
    fn from(e: wit::LedgerEntry) -> Self {
        LedgerEntry {
            id: e.id,
            kind: e.kind.into(),
            points: e.points,
            reason: e.reason,
            expires_at: e.expires_at,
            created_at: e.created_at,
        }
    }
}

impl From<wit::Tier> for Tier {
    fn from(t: wit::Tier) -> Self {
        Tier {
            id: t.id,
            name: t.name,
            rank: t.rank,
            min_points: t.min_points,
        }
    }
}

impl From<wit::Reward> for Reward {
    fn from(r: wit::Reward) -> Self {
        Reward {
            id: r.id,
            name: r.name,
            cost_points: r.cost_points,
            min_tier_rank: r.min_tier_rank,
            stock: r.stock,
        }
    }
}

impl From<wit::HostError> for HostError {
    fn from(e: wit::HostError) -> Self {
        match e {
            wit::HostError::InvalidArgument(m) => HostError::InvalidArgument(m),
            wit::HostError::QuotaExceeded(m) => HostError::QuotaExceeded(m),
            wit::HostError::Unavailable(m) => HostError::Unavailable(m),
        }
    }
}

impl From<PluginError> for wit::PluginError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::InvalidInput(m) => wit::PluginError::InvalidInput(m),
            PluginError::InvalidConfig(m) => wit::PluginError::InvalidConfig(m),
            PluginError::Unavailable(m) => wit::PluginError::Unavailable(m),
            PluginError::Internal(m) => wit::PluginError::Internal(m),
        }
    }
}

/// The SDK history from the compact wire one: one [`Name`] per entry of
/// `strings` (allocated once, then shared by every field that refers to
/// it), one allocation for all line items (each entry's `items` is a
/// window on it), one for the entries; a payload is parsed only when the
/// host sent one. An index out of range is `invalid-input`, never a panic.
fn history_in(h: wit_inputs::CustomerHistory) -> Result<History, PluginError> {
    let strings = WireStrings::new(h.strings);
    let mut items = Vec::with_capacity(h.items.len());
    for (n, item) in h.items.into_iter().enumerate() {
        items.push(EntryItem {
            sku: strings.get(item.sku, || format!("item {n} sku"))?,
            quantity: item.quantity,
            unit_price: Amount {
                currency: strings.get(item.currency, || format!("item {n} currency"))?,
                minor: item.unit_price_minor,
            },
        });
    }
    let items: Arc<[EntryItem]> = Arc::from(items);
    let mut interactions = Vec::with_capacity(h.interactions.len());
    for (n, e) in h.interactions.into_iter().enumerate() {
        let channel = match e.channel {
            Some(c) => Some(strings.get(c, || format!("entry {n} channel"))?),
            None => None,
        };
        let amount = match e.amount {
            Some(a) => Some(Amount {
                currency: strings.get(a.currency, || format!("entry {n} amount currency"))?,
                minor: a.minor,
            }),
            None => None,
        };
        interactions.push(HistoryEntry {
            kind: strings.get(e.kind, || format!("entry {n} kind"))?,
            channel,
            occurred_at: e.occurred_at,
            amount,
            items: wire_items(&items, e.first_item, e.item_count, n)?,
            payload: e.payload.map(json_in),
        });
    }
    Ok(History {
        customer: h.customer.into(),
        interactions,
        truncated: h.truncated,
        now: h.now,
    })
}

impl From<wit_inputs::PurchaseSummary> for PurchaseSummary {
    fn from(s: wit_inputs::PurchaseSummary) -> Self {
        PurchaseSummary {
            customer_id: s.customer_id,
            created_at: s.created_at,
            purchases: s
                .purchases
                .into_iter()
                .map(|p| Purchase {
                    at: p.at,
                    amount_minor: p.amount_minor,
                    currency: p.currency,
                })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------- scoring

/// Implements the generated `scoring` guest trait for any [`ScoringRule`].
pub struct ScoringAdapter<T>(PhantomData<T>);

fn score_out(s: Score) -> wit_scoring::CustomerScore {
    wit_scoring::CustomerScore {
        value: s.value,
        label: s.label,
        segment: s.segment,
        explanation: s.explanation,
        components: s.components,
    }
}

impl<T: ScoringRule> wit_scoring::Guest for ScoringAdapter<T> {
    fn score(input: wit_inputs::CustomerHistory) -> Result<wit_scoring::CustomerScore, wit::PluginError> {
        let input = history_in(input)?;
        T::score(&input).map(score_out).map_err(Into::into)
    }

    fn score_batch(
        inputs: Vec<wit_inputs::CustomerHistory>,
    ) -> Vec<Result<wit_scoring::CustomerScore, wit::PluginError>> {
        // A history that does not convert gets its error in its place; the
        // others are scored together (the plugin reads its state once).
        let total = inputs.len();
        let mut histories = Vec::with_capacity(total);
        let mut failed: Vec<(usize, PluginError)> = Vec::new();
        for (n, input) in inputs.into_iter().enumerate() {
            match history_in(input) {
                Ok(h) => histories.push(h),
                Err(err) => failed.push((n, err)),
            }
        }
        let scored = T::score_batch(&histories);
        if failed.is_empty() {
            return scored
                .into_iter()
                .map(|r| r.map(score_out).map_err(Into::into))
                .collect();
        }
        let mut scored = scored.into_iter();
        let mut failed = failed.into_iter().peekable();
        (0..total)
            .map(|n| {
                let result = match failed.next_if(|(at, _)| *at == n) {
                    Some((_, err)) => Err(err),
                    None => scored.next().unwrap_or_else(|| {
                        Err(PluginError::Internal(
                            "score_batch returned fewer results than inputs".into(),
                        ))
                    }),
                };
                result.map(score_out).map_err(Into::into)
            })
            .collect()
    }

    fn fit_chunk(chunk: Vec<wit_inputs::PurchaseSummary>, now: wit::Timestamp) -> Result<(), wit::PluginError> {
        // The chunk's summaries live only for this call; what stays is the
        // plugin's rows, appended to this instance's fit.
        let chunk: Vec<PurchaseSummary> = chunk.into_iter().map(Into::into).collect();
        let mut rows = take_fit_rows::<T::FitRow>();
        match T::fit_rows(&chunk, now) {
            Ok(mut more) => {
                drop(chunk);
                rows.append(&mut more);
                FIT_ROWS.with(|state| *state.borrow_mut() = Some(Box::new(rows)));
                Ok(())
            }
            // The fit is over (the host does not carry on after a failed
            // chunk): its rows are dropped, so a later chunk starts anew.
            Err(err) => Err(err.into()),
        }
    }

    fn fit_finish(now: wit::Timestamp) -> Result<wit::Json, wit::PluginError> {
        // Taken out of the instance's state whatever `fit` does with them:
        // the next `fit-chunk` starts a new fit.
        let rows = take_fit_rows::<T::FitRow>();
        T::fit(rows, now).map(|v| json_out(&v)).map_err(Into::into)
    }
}

thread_local! {
    /// The rows of the population fit in progress on this instance (a
    /// `Vec<T::FitRow>` of the exported rule), `None` between fits. The
    /// guest is single-threaded and the host calls `fit-chunk` ... and
    /// `fit-finish` of one fit on one instance, so instance state is what
    /// carries the rows from call to call.
    static FIT_ROWS: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Takes the rows of the fit in progress out of the instance's state
/// (empty when no chunk came since the last `fit-finish`).
fn take_fit_rows<R: 'static>() -> Vec<R> {
    FIT_ROWS
        .with(|state| state.borrow_mut().take())
        .and_then(|rows| rows.downcast::<Vec<R>>().ok())
        .map(|rows| *rows)
        .unwrap_or_default()
}

// ------------------------------------------------------------- cross-sell

/// Implements the generated `cross-selling` guest trait for any
/// [`CrossSell`].
pub struct CrossSellAdapter<T>(PhantomData<T>);

impl<T: CrossSell> wit_cross::Guest for CrossSellAdapter<T> {
    fn recommend(request: wit_cross::RecommendRequest) -> Result<Vec<wit_cross::Recommendation>, wit::PluginError> {
        let request = RecommendRequest {
            history: history_in(request.history)?,
            basket: request.basket.map(|items| items.into_iter().map(Into::into).collect()),
            limit: request.limit,
        };
        T::recommend(&request)
            .map(|list| {
                list.into_iter()
                    .map(|r| wit_cross::Recommendation {
                        sku: r.sku,
                        score: r.score,
                        reason: r.reason,
                    })
                    .collect()
            })
            .map_err(Into::into)
    }

    fn fit(baskets: Vec<Vec<String>>) -> Result<wit::Json, wit::PluginError> {
        T::fit(&baskets).map(|v| json_out(&v)).map_err(Into::into)
    }
}

// ---------------------------------------------------------------- rewards

/// Implements the generated `rewards` guest trait for any [`RewardScheme`].
pub struct RewardAdapter<T>(PhantomData<T>);

fn outcome_out(o: RewardOutcome) -> wit_rewards::RewardOutcome {
    wit_rewards::RewardOutcome {
        ledger: o
            .ledger
            .into_iter()
            .map(|intent| match intent {
                LedgerIntent::Earn(e) => wit_rewards::LedgerIntent::Earn(wit_rewards::EarnIntent {
                    points: e.points,
                    reason: e.reason,
                    expires_at: e.expires_at,
                }),
                LedgerIntent::Adjust(a) => wit_rewards::LedgerIntent::Adjust(wit_rewards::AdjustIntent {
                    points: a.points,
                    reason: a.reason,
                }),
            })
            .collect(),
        tier_change: o.tier_change.map(|t| wit_rewards::TierChange {
            tier_id: t.tier_id,
            reason: t.reason,
        }),
    }
}

impl<T: RewardScheme> wit_rewards::Guest for RewardAdapter<T> {
    fn on_interaction(
        context: wit_rewards::InteractionContext,
    ) -> Result<wit_rewards::RewardOutcome, wit::PluginError> {
        let context = InteractionContext {
            interaction: context.interaction.into(),
            account: context.account.into(),
            tiers: context.tiers.into_iter().map(Into::into).collect(),
            rolling_spend_minor: context.rolling_spend_minor,
            now: context.now,
        };
        T::on_interaction(&context).map(outcome_out).map_err(Into::into)
    }

    fn redeemable(
        account: wit::LoyaltyAccount,
        tiers: Vec<wit::Tier>,
        rewards: Vec<wit::Reward>,
    ) -> Result<Vec<String>, wit::PluginError> {
        let tiers: Vec<Tier> = tiers.into_iter().map(Into::into).collect();
        let rewards: Vec<Reward> = rewards.into_iter().map(Into::into).collect();
        T::redeemable(&account.into(), &tiers, &rewards).map_err(Into::into)
    }
}

// ---------------------------------------------------------------- channel

/// Implements the generated `channel` guest trait for any
/// [`ChannelConnector`].
pub struct ChannelAdapter<T>(PhantomData<T>);

impl<T: ChannelConnector> wit_channel::Guest for ChannelAdapter<T> {
    fn deliver(message: wit_channel::Message) -> Result<wit_channel::Receipt, wit_channel::DeliveryError> {
        let message = Message {
            id: message.id,
            customer_id: message.customer_id,
            channel: message.channel,
            to: message.to,
            subject: message.subject,
            body: message.body,
            metadata: json_in(message.metadata),
            attempt: message.attempt,
            now: message.now,
        };
        T::deliver(&message)
            .map(|r| wit_channel::Receipt {
                provider_id: r.provider_id,
                detail: r.detail,
            })
            .map_err(|e| wit_channel::DeliveryError {
                retryable: e.retryable,
                message: e.message,
            })
    }

    fn parse_inbound(
        request: wit_channel::InboundRequest,
    ) -> Result<Vec<wit_channel::InboundEvent>, wit_channel::InboundError> {
        let request = InboundRequest {
            method: request.method,
            path: request.path,
            headers: request.headers,
            body: request.body,
            received_at: request.received_at,
        };
        T::parse_inbound(&request)
            .map(|events| {
                events
                    .into_iter()
                    .map(|e| wit_channel::InboundEvent {
                        customer_external_id: e.customer_external_id,
                        kind: e.kind,
                        occurred_at: e.occurred_at,
                        idempotency_key: e.idempotency_key,
                        payload: json_out(&e.payload),
                    })
                    .collect()
            })
            .map_err(|e| match e {
                InboundError::Unauthenticated(m) => wit_channel::InboundError::Unauthenticated(m),
                InboundError::Malformed(m) => wit_channel::InboundError::Malformed(m),
            })
    }
}
