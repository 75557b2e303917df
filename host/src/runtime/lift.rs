//! Calling a plugin's exports with its results lifted under the output cap.
//!
//! wasmtime copies a result out of guest memory while lifting it, before
//! the host sees any of it, and only then could the host compare its size
//! with `max_output_bytes`: a 50 MB explanation, or 64 strings aliasing one
//! 32 MiB buffer, were copied in full (up to wasmtime's own 128 MiB) and
//! outside the call's deadline. Here every export is called through a
//! `TypedFunc` whose result types are mirrors of the contract's, with
//! [`CappedString`] and [`CappedVec`] in place of `String` and `Vec`: each
//! charges its length to the call's budget *before* copying, and the lift
//! fails with [`OverCap`] as soon as the budget is spent. So at most
//! `max_output_bytes` of string data is ever copied, inside the call's
//! future (hence inside its deadline). The WIT does not change: the mirrors
//! type-check against the same contract, and convert into the bindgen types
//! the rest of the host uses.
//!
//! The budget travels in a thread-local set around every poll of the call
//! (see [`capped`]): `Lift` has no other way to reach per-call state, and a
//! lift runs synchronously inside one poll, on the polling thread.

use std::cell::Cell;
use std::future::Future;
use std::task::Poll;

use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{Component, ComponentExportIndex, ComponentType, Func, Instance, Lift, TypedFunc};
use wasmtime::{Store, ValRaw};

use super::contract_v0_1_0::channel::{InboundError, InboundEvent, InboundRequest, Message, Receipt};
use super::contract_v0_1_0::cross_selling::{RecommendRequest, Recommendation};
use super::contract_v0_1_0::inputs::{CustomerHistory, PurchaseSummary};
use super::contract_v0_1_0::rewards::{
    AdjustIntent, EarnIntent, InteractionContext, LedgerIntent, RewardOutcome, TierChange,
};
use super::contract_v0_1_0::scoring::CustomerScore;
use super::contract_v0_1_0::types::{Json, LoyaltyAccount, PluginError, Reward, Tier, Timestamp};
use super::contract_v0_1_0::{VERSION_SUFFIX, channel};
use super::host_state::HostState;

/// The part of the output budget a call has used so far.
#[derive(Clone, Copy)]
struct Budget {
    used: usize,
    limit: usize,
}

thread_local! {
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
}

/// A result over the call's output budget, raised inside the lift before the
/// copy that would have exceeded it.
#[derive(Debug)]
pub(crate) struct OverCap {
    /// What the result had claimed when the budget ran out (at least).
    pub bytes: usize,
    pub limit: usize,
}

impl std::fmt::Display for OverCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "result of at least {} bytes, over the {}-byte limit",
            self.bytes, self.limit
        )
    }
}

impl std::error::Error for OverCap {}

/// Charges `bytes` to the budget of the call being polled on this thread.
fn charge(bytes: usize) -> wasmtime::Result<()> {
    BUDGET.with(|cell| match cell.get() {
        // Not inside `capped`: only the load check instantiates without a
        // call, and it lifts nothing.
        None => Ok(()),
        Some(mut budget) => {
            budget.used = budget.used.saturating_add(bytes);
            cell.set(Some(budget));
            if budget.used > budget.limit {
                Err(wasmtime::Error::new(OverCap {
                    bytes: budget.used,
                    limit: budget.limit,
                }))
            } else {
                Ok(())
            }
        }
    })
}

/// Runs `fut` (one export call) with an output budget of `limit` bytes.
pub(crate) async fn capped<F: Future>(limit: usize, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut used = 0usize;
    std::future::poll_fn(move |cx| {
        let previous = BUDGET.replace(Some(Budget { used, limit }));
        let polled: Poll<F::Output> = fut.as_mut().poll(cx);
        if let Some(budget) = BUDGET.replace(previous) {
            used = budget.used;
        }
        polled
    })
    .await
}

/// The length half of a canonical-ABI pointer pair, flat or in memory.
fn flat_len(src: &[ValRaw; 2]) -> usize {
    src[1].get_u32() as usize
}

fn memory_len(bytes: &[u8]) -> usize {
    bytes
        .get(4..8)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(usize::MAX, |b| u32::from_le_bytes(b) as usize)
}

/// A `string` result: its length is charged before it is copied. (UTF-8,
/// as Rust and Python guests encode; a UTF-16 length counts code units.)
pub(crate) struct CappedString(pub String);

// SAFETY: the lowered form, ABI and type check are exactly `String`'s (a
// pointer pair, checked against `string`), and lifting delegates to it.
unsafe impl ComponentType for CappedString {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <String as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: see `ComponentType` above.
unsafe impl Lift for CappedString {
    fn linear_lift_from_flat(cx: &mut LiftContext<'_>, ty: InterfaceType, src: &Self::Lower) -> wasmtime::Result<Self> {
        charge(flat_len(src))?;
        String::linear_lift_from_flat(cx, ty, src).map(CappedString)
    }

    fn linear_lift_from_memory(cx: &mut LiftContext<'_>, ty: InterfaceType, bytes: &[u8]) -> wasmtime::Result<Self> {
        charge(memory_len(bytes))?;
        String::linear_lift_from_memory(cx, ty, bytes).map(CappedString)
    }
}

/// A `list` result: 8 bytes per element are charged before any element is
/// lifted (as [`super::output::OutputSize`] counts them), the elements'
/// own strings as they are lifted.
pub(crate) struct CappedVec<T>(pub Vec<T>);

/// What one list element costs the budget.
const PER_ELEMENT: usize = 8;

// SAFETY: the lowered form, ABI and type check are exactly `Vec<T>`'s (a
// pointer pair, checked against `list<T>`), and lifting delegates to it.
unsafe impl<T: ComponentType> ComponentType for CappedVec<T> {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <Vec<T> as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: see `ComponentType` above.
unsafe impl<T: Lift> Lift for CappedVec<T> {
    fn linear_lift_from_flat(cx: &mut LiftContext<'_>, ty: InterfaceType, src: &Self::Lower) -> wasmtime::Result<Self> {
        charge(flat_len(src).saturating_mul(PER_ELEMENT))?;
        Vec::<T>::linear_lift_from_flat(cx, ty, src).map(CappedVec)
    }

    fn linear_lift_from_memory(cx: &mut LiftContext<'_>, ty: InterfaceType, bytes: &[u8]) -> wasmtime::Result<Self> {
        charge(memory_len(bytes).saturating_mul(PER_ELEMENT))?;
        Vec::<T>::linear_lift_from_memory(cx, ty, bytes).map(CappedVec)
    }
}

impl From<CappedString> for String {
    fn from(s: CappedString) -> String {
        s.0
    }
}

fn opt(s: Option<CappedString>) -> Option<String> {
    s.map(|s| s.0)
}

// Mirrors of the contract's result types (wit/crm@0.1.0), field for field.

#[derive(ComponentType, Lift)]
#[component(variant)]
enum RawPluginError {
    #[component(name = "invalid-input")]
    InvalidInput(CappedString),
    #[component(name = "invalid-config")]
    InvalidConfig(CappedString),
    #[component(name = "unavailable")]
    Unavailable(CappedString),
    #[component(name = "internal")]
    Internal(CappedString),
}

impl From<RawPluginError> for PluginError {
    fn from(e: RawPluginError) -> PluginError {
        match e {
            RawPluginError::InvalidInput(m) => PluginError::InvalidInput(m.0),
            RawPluginError::InvalidConfig(m) => PluginError::InvalidConfig(m.0),
            RawPluginError::Unavailable(m) => PluginError::Unavailable(m.0),
            RawPluginError::Internal(m) => PluginError::Internal(m.0),
        }
    }
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct RawCustomerScore {
    #[component(name = "value")]
    value: f64,
    #[component(name = "label")]
    label: Option<CappedString>,
    #[component(name = "segment")]
    segment: Option<CappedString>,
    #[component(name = "explanation")]
    explanation: CappedString,
    #[component(name = "components")]
    components: CappedVec<(CappedString, f64)>,
}

impl From<RawCustomerScore> for CustomerScore {
    fn from(s: RawCustomerScore) -> CustomerScore {
        CustomerScore {
            value: s.value,
            label: opt(s.label),
            segment: opt(s.segment),
            explanation: s.explanation.0,
            components: s.components.0.into_iter().map(|(k, v)| (k.0, v)).collect(),
        }
    }
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct RawRecommendation {
    #[component(name = "sku")]
    sku: CappedString,
    #[component(name = "score")]
    score: f64,
    #[component(name = "reason")]
    reason: CappedString,
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct RawEarnIntent {
    #[component(name = "points")]
    points: i64,
    #[component(name = "reason")]
    reason: CappedString,
    #[component(name = "expires-at")]
    expires_at: Option<Timestamp>,
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct RawAdjustIntent {
    #[component(name = "points")]
    points: i64,
    #[component(name = "reason")]
    reason: CappedString,
}

#[derive(ComponentType, Lift)]
#[component(variant)]
enum RawLedgerIntent {
    #[component(name = "earn")]
    Earn(RawEarnIntent),
    #[component(name = "adjust")]
    Adjust(RawAdjustIntent),
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct RawTierChange {
    #[component(name = "tier-id")]
    tier_id: Option<CappedString>,
    #[component(name = "reason")]
    reason: CappedString,
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct RawRewardOutcome {
    #[component(name = "ledger")]
    ledger: CappedVec<RawLedgerIntent>,
    #[component(name = "tier-change")]
    tier_change: Option<RawTierChange>,
}

impl From<RawRewardOutcome> for RewardOutcome {
    fn from(o: RawRewardOutcome) -> RewardOutcome {
        RewardOutcome {
            ledger: o
                .ledger
                .0
                .into_iter()
                .map(|i| match i {
                    RawLedgerIntent::Earn(e) => LedgerIntent::Earn(EarnIntent {
                        points: e.points,
                        reason: e.reason.0,
                        expires_at: e.expires_at,
                    }),
                    RawLedgerIntent::Adjust(a) => LedgerIntent::Adjust(AdjustIntent {
                        points: a.points,
                        reason: a.reason.0,
                    }),
                })
                .collect(),
            tier_change: o.tier_change.map(|t| TierChange {
                tier_id: opt(t.tier_id),
                reason: t.reason.0,
            }),
        }
    }
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct RawReceipt {
    #[component(name = "provider-id")]
    provider_id: Option<CappedString>,
    #[component(name = "detail")]
    detail: Option<CappedString>,
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct RawDeliveryError {
    #[component(name = "retryable")]
    retryable: bool,
    #[component(name = "message")]
    message: CappedString,
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct RawInboundEvent {
    #[component(name = "customer-external-id")]
    customer_external_id: CappedString,
    #[component(name = "kind")]
    kind: CappedString,
    #[component(name = "occurred-at")]
    occurred_at: Timestamp,
    #[component(name = "idempotency-key")]
    idempotency_key: CappedString,
    #[component(name = "payload")]
    payload: CappedString,
}

#[derive(ComponentType, Lift)]
#[component(variant)]
enum RawInboundError {
    #[component(name = "unauthenticated")]
    Unauthenticated(CappedString),
    #[component(name = "malformed")]
    Malformed(CappedString),
}

/// `result<T, plugin-error>` with both sides converted.
fn plugin_result<R, T: From<R>>(r: Result<R, RawPluginError>) -> Result<T, PluginError> {
    r.map(T::from).map_err(PluginError::from)
}

/// One interface's export indices, resolved once per plugin version, and
/// its functions per instance, type-checked once per instantiation against
/// the mirror signatures (which is also how a component built against
/// another revision of the contract is caught at load).
macro_rules! exports {
    (
        $indices:ident, $guest:ident, $iface:literal;
        $( $field:ident = $name:literal : ( $($param:ident : $pty:ty),* ) -> $ret:ty
            => fn $method:ident -> $out:ty { |$raw:ident| $convert:expr } ; )*
    ) => {
        pub(crate) struct $indices {
            $( $field: ComponentExportIndex, )*
        }

        pub(crate) struct $guest {
            $( $field: Func, )*
        }

        impl $indices {
            /// The interface's exports in `component`, or the missing one's
            /// name and why.
            pub fn new(component: &Component) -> Result<$indices, String> {
                let iface = format!("rapport:crm/{}{}", $iface, VERSION_SUFFIX);
                let instance = component
                    .get_export_index(None, &iface)
                    .ok_or_else(|| format!("no exported instance named `{iface}`"))?;
                Ok($indices {
                    $( $field: component
                        .get_export_index(Some(&instance), $name)
                        .ok_or_else(|| format!("instance export `{iface}` has no function `{}`", $name))?, )*
                })
            }

            pub fn load(&self, store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<$guest> {
                Ok($guest {
                    $( $field: {
                        let func = instance
                            .get_func(&mut *store, &self.$field)
                            .ok_or_else(|| wasmtime::format_err!("export `{}` is not a function", $name))?;
                        func.typed::<( $($pty,)* ), ($ret,)>(&*store)
                            .map_err(|e| e.context(format!("export `{}`", $name)))?;
                        func
                    }, )*
                })
            }
        }

        impl $guest {
            $(
                pub async fn $method(
                    &self,
                    store: &mut Store<HostState>,
                    $($param: $pty),*
                ) -> wasmtime::Result<$out> {
                    // SAFETY: `load` type-checked this function against
                    // exactly this signature.
                    let func = unsafe { TypedFunc::<( $($pty,)* ), ($ret,)>::new_unchecked(self.$field) };
                    let ($raw,) = func.call_async(store, ( $($param,)* )).await?;
                    Ok($convert)
                }
            )*
        }
    };
}

exports! {
    ScoringIndices, ScoringGuest, "scoring";
    score = "score": (input: &CustomerHistory) -> Result<RawCustomerScore, RawPluginError>
        => fn call_score -> Result<CustomerScore, PluginError> { |r| plugin_result(r) };
    score_batch = "score-batch": (inputs: &[CustomerHistory]) -> CappedVec<Result<RawCustomerScore, RawPluginError>>
        => fn call_score_batch -> Vec<Result<CustomerScore, PluginError>> { |r| r.0.into_iter().map(plugin_result).collect() };
    fit_chunk = "fit-chunk": (chunk: &[PurchaseSummary], now: Timestamp) -> Result<(), RawPluginError>
        => fn call_fit_chunk -> Result<(), PluginError> { |r| r.map_err(PluginError::from) };
    fit_finish = "fit-finish": (now: Timestamp) -> Result<CappedString, RawPluginError>
        => fn call_fit_finish -> Result<Json, PluginError> { |r| plugin_result(r) };
}

exports! {
    CrossSellIndices, CrossSellGuest, "cross-selling";
    recommend = "recommend": (request: &RecommendRequest) -> Result<CappedVec<RawRecommendation>, RawPluginError>
        => fn call_recommend -> Result<Vec<Recommendation>, PluginError> {
            |r| r.map(|recs| recs.0.into_iter().map(|x| Recommendation {
                sku: x.sku.0,
                score: x.score,
                reason: x.reason.0,
            }).collect()).map_err(PluginError::from)
        };
    fit = "fit": (baskets: &[Vec<String>]) -> Result<CappedString, RawPluginError>
        => fn call_fit -> Result<Json, PluginError> { |r| plugin_result(r) };
}

exports! {
    RewardsIndices, RewardsGuest, "rewards";
    on_interaction = "on-interaction": (context: &InteractionContext) -> Result<RawRewardOutcome, RawPluginError>
        => fn call_on_interaction -> Result<RewardOutcome, PluginError> { |r| plugin_result(r) };
    redeemable = "redeemable": (account: &LoyaltyAccount, tiers: &[Tier], rewards: &[Reward])
        -> Result<CappedVec<CappedString>, RawPluginError>
        => fn call_redeemable -> Result<Vec<String>, PluginError> {
            |r| r.map(|ids| ids.0.into_iter().map(|s| s.0).collect()).map_err(PluginError::from)
        };
}

exports! {
    ChannelIndices, ChannelGuest, "channel";
    deliver = "deliver": (message: &Message) -> Result<RawReceipt, RawDeliveryError>
        => fn call_deliver -> Result<Receipt, channel::DeliveryError> {
            |r| r.map(|x| Receipt {
                provider_id: opt(x.provider_id),
                detail: opt(x.detail),
            }).map_err(|e| channel::DeliveryError {
                retryable: e.retryable,
                message: e.message.0,
            })
        };
    parse_inbound = "parse-inbound": (request: &InboundRequest) -> Result<CappedVec<RawInboundEvent>, RawInboundError>
        => fn call_parse_inbound -> Result<Vec<InboundEvent>, InboundError> {
            |r| r.map(|events| events.0.into_iter().map(|e| InboundEvent {
                customer_external_id: e.customer_external_id.0,
                kind: e.kind.0,
                occurred_at: e.occurred_at,
                idempotency_key: e.idempotency_key.0,
                payload: e.payload.0,
            }).collect()).map_err(|e| match e {
                RawInboundError::Unauthenticated(m) => InboundError::Unauthenticated(m.0),
                RawInboundError::Malformed(m) => InboundError::Malformed(m.0),
            })
        };
}
