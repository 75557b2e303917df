//! A loaded plugin version (`Plugin`) and the calls into it.
//!
//! Every one-shot call (`Plugin::score`, ...) builds a fresh `Store` whose
//! host state carries the tenant, instantiates from the plugin's
//! `InstancePre` (cheap with the pooling allocator and copy-on-write memory
//! images) and calls one export. A [`Session`] keeps one instance for many
//! calls of the same tenant (batch rescoring); after any trap it throws the
//! store away and instantiates afresh, so a trap never leaks into a later
//! call.
//!
//! Limits per call: wall-clock deadline (epoch callback traps the guest;
//! a tokio timer also bounds time spent awaiting host services), fuel,
//! memory (`Limiter`), stack (engine-wide), output size, log volume.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use wasmtime::component::{InstancePre, Linker};
use wasmtime::{Store, Trap, UpdateDeadline};

use super::admission::{Permit, Refused};
use super::capabilities::outbound_http::HttpPolicy;
use super::capabilities::outbound_smtp::SmtpPolicy;
use super::capabilities::{self};
use super::contract_v0_1_0::channel::{InboundError, InboundEvent, InboundRequest, Message, Receipt};
use super::contract_v0_1_0::cross_selling::{RecommendRequest, Recommendation};
use super::contract_v0_1_0::inputs::{CustomerHistory, PurchaseSummary};
use super::contract_v0_1_0::rewards::{InteractionContext, LedgerIntent, RewardOutcome};
use super::contract_v0_1_0::scoring::CustomerScore;
use super::contract_v0_1_0::types::{LoyaltyAccount, PluginError, Reward, Tier, Timestamp};
use super::host_state::{HostState, LogLevel, LogLine, Network};
use super::lift;
use super::output::{self, OutputSize};
use super::services::HostServices;
use super::{CallError, Capability, Limits, LoadError, PluginDefinition, PluginErrorKind, PluginKind, Runtime};
use crate::store::TenantId;

/// Who a call is for. The tenant comes from the caller's authenticated
/// context, never from plugin input.
#[derive(Clone)]
pub struct CallContext {
    pub tenant: TenantId,
    /// The tenant's configuration of this plugin, a JSON object.
    pub config_json: String,
    pub services: Arc<dyn HostServices>,
}

/// What a call cost and logged, returned with every result (also on error).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallReport {
    pub duration: Duration,
    /// `None` when the runtime does not meter fuel.
    pub fuel_used: Option<u64>,
    pub logs: Vec<LogLine>,
    pub logs_dropped: u32,
}

impl CallReport {
    /// Adds up the reports of the calls that make one operation (a
    /// streamed fit).
    fn absorb(&mut self, other: CallReport) {
        self.duration += other.duration;
        self.fuel_used = match (self.fuel_used, other.fuel_used) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (a, b) => a.or(b),
        };
        self.logs.extend(other.logs);
        self.logs_dropped = self.logs_dropped.saturating_add(other.logs_dropped);
    }
}

/// Summaries per `fit-chunk` call: bounded guest memory per call (about
/// 5 MB for customers with 10 purchases) however large the tenant, while
/// the per-call overhead (microseconds) stays negligible. The SDK's
/// constant is the one definition: guests size their buffers by it.
pub const FIT_CHUNK: usize = rapport_plugin_sdk::FIT_CHUNK_MAX;

/// The shortest deadline the load-time instantiation gets, whatever the
/// plugin's own `timeout_ms` (see `Session::prepare`).
const LOAD_CHECK_MIN_DEADLINE: Duration = Duration::from_secs(1);

/// Export indices of the plugin's kind, resolved once at load.
enum Exports {
    Scoring(lift::ScoringIndices),
    CrossSell(lift::CrossSellIndices),
    Rewards(lift::RewardsIndices),
    Channel(lift::ChannelIndices),
}

/// One loaded, verified and pre-linked plugin version.
pub struct Plugin {
    runtime: Runtime,
    id: Arc<str>,
    kind: PluginKind,
    sha256: String,
    capabilities: BTreeSet<Capability>,
    limits: Arc<Limits>,
    pre: InstancePre<HostState>,
    exports: Exports,
    http: Option<Arc<HttpPolicy>>,
    smtp: Option<Arc<SmtpPolicy>>,
    compiled_from_cache: bool,
    /// The `plugin` metrics label, shared rather than reallocated per call.
    label: metrics::SharedString,
    /// Metric handles per tenant label, registered on a tenant's first
    /// call: looking a labelled metric up in the registry on every call was
    /// a visible part of a warm call.
    tenant_metrics: Mutex<HashMap<metrics::SharedString, Arc<TenantMetrics>>>,
    /// Consecutive failures per tenant (circuit breaker).
    failures: Mutex<HashMap<TenantId, u32>>,
    /// False while `failures` is empty: the common path skips the lock.
    any_failures: AtomicBool,
}

/// The per-call metrics of one export.
struct ExportMetrics {
    export: &'static str,
    calls: metrics::Counter,
    duration: metrics::Histogram,
}

/// One plugin's metric handles for one tenant label.
struct TenantMetrics {
    tenant: metrics::SharedString,
    exports: Vec<ExportMetrics>,
    fuel_used: metrics::Counter,
}

/// Distinct `tenant` label values: the first [`MAX_TENANT_LABELS`] tenants
/// that call a plugin get their own, later ones share `other`, so a host
/// with many tenants cannot blow up the metrics registry.
pub const MAX_TENANT_LABELS: usize = 100;

fn tenant_label(tenant: &TenantId) -> metrics::SharedString {
    static LABELS: std::sync::LazyLock<Mutex<HashMap<String, metrics::SharedString>>> =
        std::sync::LazyLock::new(Mutex::default);
    let mut labels = LABELS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(label) = labels.get(tenant.as_str()) {
        return label.clone();
    }
    if labels.len() >= MAX_TENANT_LABELS {
        return metrics::SharedString::const_str("other");
    }
    let label = metrics::SharedString::from_owned(tenant.as_str().to_owned());
    labels.insert(tenant.as_str().to_owned(), label.clone());
    label
}

/// The exports of each kind, as the metrics name them.
fn export_names(kind: PluginKind) -> &'static [&'static str] {
    match kind {
        PluginKind::ScoringRule => &["score", "score-batch", "fit-chunk", "fit-finish"],
        PluginKind::CrossSell => &["recommend", "fit-baskets"],
        PluginKind::RewardScheme => &["on-interaction", "redeemable"],
        PluginKind::ChannelConnector => &["deliver", "parse-inbound"],
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("sha256", &self.sha256)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

/// Marks the tokio-timer side of the deadline (time spent in host calls).
#[derive(Debug)]
struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline exceeded while awaiting a host call")
    }
}

impl std::error::Error for DeadlineExceeded {}

impl Plugin {
    pub(crate) fn prepare(
        runtime: Runtime,
        def: PluginDefinition,
        component: wasmtime::component::Component,
        compiled_from_cache: bool,
    ) -> Result<Arc<Plugin>, LoadError> {
        let plugin = def.id.clone();
        let link_err = |e: wasmtime::Error| LoadError::Link {
            plugin: plugin.clone(),
            message: format!("{e:#}"),
        };
        let mut linker: Linker<HostState> = Linker::new(runtime.engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_err)?;
        capabilities::link_type_interfaces(&mut linker).map_err(link_err)?;
        for &cap in &def.capabilities {
            capabilities::link(&mut linker, cap).map_err(link_err)?;
        }
        let pre = linker.instantiate_pre(&component).map_err(link_err)?;
        let missing = |export: &str, message: String| LoadError::MissingExport {
            plugin: plugin.clone(),
            kind: def.kind,
            export: format!("rapport:crm/{export}@0.1.0"),
            message,
        };
        let exports = match def.kind {
            PluginKind::ScoringRule => {
                Exports::Scoring(lift::ScoringIndices::new(&component).map_err(|e| missing("scoring", e))?)
            }
            PluginKind::CrossSell => {
                Exports::CrossSell(lift::CrossSellIndices::new(&component).map_err(|e| missing("cross-selling", e))?)
            }
            PluginKind::RewardScheme => {
                Exports::Rewards(lift::RewardsIndices::new(&component).map_err(|e| missing("rewards", e))?)
            }
            PluginKind::ChannelConnector => {
                Exports::Channel(lift::ChannelIndices::new(&component).map_err(|e| missing("channel", e))?)
            }
        };
        let allowed = def.allowed_hosts.clone();
        let smtp = def.capabilities.contains(&Capability::OutboundSmtp).then(|| {
            Arc::new(SmtpPolicy {
                allowed: allowed.clone(),
                max_timeout: Duration::from_millis(def.limits.smtp_timeout_ms),
                max_message_bytes: def.limits.smtp_max_message_bytes,
            })
        });
        let http = if def.capabilities.contains(&Capability::OutboundHttp) {
            Some(Arc::new(HttpPolicy {
                allowed,
                client: runtime.http().clone(),
                max_timeout: Duration::from_millis(def.limits.http_timeout_ms),
                max_response_bytes: def.limits.http_max_response_bytes,
            }))
        } else {
            None
        };
        let id: Arc<str> = def.id.into();
        let label = metrics::SharedString::from_shared(id.clone());
        let plugin = Arc::new(Plugin {
            runtime,
            label,
            tenant_metrics: Mutex::new(HashMap::new()),
            id,
            kind: def.kind,
            sha256: def.sha256.to_ascii_lowercase(),
            capabilities: def.capabilities,
            limits: Arc::new(def.limits),
            pre,
            exports,
            http,
            smtp,
            compiled_from_cache,
            failures: Mutex::new(HashMap::new()),
            any_failures: AtomicBool::new(false),
        });
        plugin.check_export_types()?;
        Ok(plugin)
    }

    /// Instantiates the component once, in a throwaway store whose
    /// capabilities have no data behind them, so that the typed lookup of
    /// its exports happens now. Export *names* are checked when the
    /// `InstancePre` is built, their *types* only against an instance: a
    /// component built against another revision of the contract (same
    /// names, other record fields) is refused here, with the mismatch named,
    /// instead of loading fine and failing every call. Runs under the
    /// plugin's own fuel and memory limits like any call, and its deadline
    /// with a floor of [`LOAD_CHECK_MIN_DEADLINE`].
    fn check_export_types(&self) -> Result<(), LoadError> {
        let ctx = CallContext {
            tenant: TenantId::load_check(),
            config_json: "{}".to_owned(),
            services: Arc::new(super::fixture::FixtureServices::default()),
        };
        let mut session = self.session(ctx);
        // Outside admission: load checks use the pool slots admission keeps
        // in reserve, so a tenant's flood can never stop a plugin loading.
        session.load_check = true;
        // Instantiation never awaits a host service (Rust components have no
        // start function that calls imports), so a minimal executor is
        // enough, and load stays callable from synchronous code.
        match pollster::block_on(session.prepare()) {
            Ok(_) => Ok(()),
            Err(e) => Err(LoadError::ExportTypes {
                plugin: self.id.to_string(),
                kind: self.kind,
                message: match e {
                    CallError::Instantiate(message) => message,
                    other => other.to_string(),
                },
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn kind(&self) -> PluginKind {
        self.kind
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn capabilities(&self) -> &BTreeSet<Capability> {
        &self.capabilities
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// True when the compiled code came from the disk or memory cache
    /// rather than from compiling WebAssembly.
    pub fn compiled_from_cache(&self) -> bool {
        self.compiled_from_cache
    }

    /// Consecutive failed calls for `tenant` (0 after a success).
    pub fn consecutive_failures(&self, tenant: &TenantId) -> u32 {
        if !self.any_failures.load(Ordering::Acquire) {
            return 0;
        }
        self.lock_failures().get(tenant).copied().unwrap_or(0)
    }

    /// Lifts a suspension (e.g. after the tenant fixed its config).
    pub fn reset_failures(&self, tenant: &TenantId) {
        let mut failures = self.lock_failures();
        failures.remove(tenant);
        self.any_failures.store(!failures.is_empty(), Ordering::Release);
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, u32>> {
        // Plain counters: still meaningful after a panic elsewhere.
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reusable instance for many calls of one tenant.
    pub fn session(&self, ctx: CallContext) -> Session<'_> {
        Session {
            plugin: self,
            ctx,
            live: None,
            fresh_since: None,
            load_check: false,
            call_now: None,
            reserved: None,
        }
    }

    /// Takes `tenant`'s share of the instance pool for one call of this
    /// plugin now, waiting at most the plugin's deadline, so that a caller
    /// can do its own expensive preparation (reading a customer's history)
    /// only once the call is sure to run: a flood's calls then wait for
    /// capacity without touching the database. Hand it to
    /// [`Session::with_reservation`]; dropped unused, it frees the share.
    pub async fn reserve(&self, tenant: &TenantId) -> Result<Reservation, CallError> {
        let permit = match admit(self, tenant, false).await {
            Ok(permit) => permit,
            Err(e) => {
                // Counted like a call refused inside the runtime (`busy`);
                // never towards suspension.
                let tenant_label = self.metrics_for(tenant).tenant.clone();
                metrics::counter!("rapport_plugin_errors_total", "plugin" => self.label.clone(), "tenant" => tenant_label, "cause" => e.cause()).increment(1);
                return Err(e);
            }
        };
        Ok(Reservation {
            tenant: tenant.clone(),
            plugin: self.id.clone(),
            permit,
        })
    }

    pub async fn score(
        &self,
        ctx: CallContext,
        input: &CustomerHistory,
    ) -> (Result<CustomerScore, CallError>, CallReport) {
        self.session(ctx).score(input).await
    }

    pub async fn score_batch(
        &self,
        ctx: CallContext,
        inputs: &[CustomerHistory],
    ) -> (Result<Vec<Result<CustomerScore, CallError>>, CallError>, CallReport) {
        self.session(ctx).score_batch(inputs).await
    }

    /// Scoring plugins: population fit, returning the plugin's JSON summary.
    pub async fn fit(
        &self,
        ctx: CallContext,
        population: &[PurchaseSummary],
        now: Timestamp,
    ) -> (Result<String, CallError>, CallReport) {
        self.session(ctx).fit(population, now).await
    }

    pub async fn recommend(
        &self,
        ctx: CallContext,
        request: &RecommendRequest,
    ) -> (Result<Vec<Recommendation>, CallError>, CallReport) {
        self.session(ctx).recommend(request).await
    }

    /// Cross-sell plugins: learn from baskets, returning a JSON summary.
    pub async fn fit_baskets(
        &self,
        ctx: CallContext,
        baskets: &[Vec<String>],
    ) -> (Result<String, CallError>, CallReport) {
        self.session(ctx).fit_baskets(baskets).await
    }

    pub async fn on_interaction(
        &self,
        ctx: CallContext,
        context: &InteractionContext,
    ) -> (Result<RewardOutcome, CallError>, CallReport) {
        self.session(ctx).on_interaction(context).await
    }

    pub async fn redeemable(
        &self,
        ctx: CallContext,
        account: &LoyaltyAccount,
        tiers: &[Tier],
        rewards: &[Reward],
    ) -> (Result<Vec<String>, CallError>, CallReport) {
        self.session(ctx).redeemable(account, tiers, rewards).await
    }

    pub async fn deliver(&self, ctx: CallContext, message: &Message) -> (Result<Receipt, CallError>, CallReport) {
        self.session(ctx).deliver(message).await
    }

    pub async fn parse_inbound(
        &self,
        ctx: CallContext,
        request: &InboundRequest,
    ) -> (Result<Vec<InboundEvent>, CallError>, CallReport) {
        self.session(ctx).parse_inbound(request).await
    }

    fn new_store(&self, ctx: &CallContext) -> Store<HostState> {
        let deadline = Instant::now() + Duration::from_millis(self.limits.timeout_ms);
        let state = HostState::new(
            ctx.tenant.clone(),
            self.id.clone(),
            ctx.config_json.clone(),
            ctx.services.clone(),
            self.limits.clone(),
            Network {
                http: self.http.clone(),
                smtp: self.smtp.clone(),
            },
            deadline,
        );
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limiter);
        // Yield to the executor at every tick; trap once past the deadline.
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// This plugin's metric handles for `tenant`'s label.
    fn metrics_for(&self, tenant: &TenantId) -> Arc<TenantMetrics> {
        let label = tenant_label(tenant);
        let mut map = self.tenant_metrics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = map.get(&label) {
            return m.clone();
        }
        let plugin = &self.label;
        let kind = self.kind.as_str();
        let handles = Arc::new(TenantMetrics {
            exports: export_names(self.kind)
                .iter()
                .map(|&export| ExportMetrics {
                    export,
                    calls: metrics::counter!("rapport_plugin_calls_total", "plugin" => plugin.clone(), "tenant" => label.clone(), "kind" => kind, "export" => export),
                    duration: metrics::histogram!("rapport_plugin_call_duration_seconds", "plugin" => plugin.clone(), "tenant" => label.clone(), "export" => export),
                })
                .collect(),
            fuel_used: metrics::counter!("rapport_plugin_fuel_used_total", "plugin" => plugin.clone(), "tenant" => label.clone()),
            tenant: label.clone(),
        });
        map.insert(label, handles.clone());
        handles
    }

    fn record(&self, export: &'static str, result: Result<(), &CallError>, report: &CallReport, tenant: &TenantId) {
        let plugin = self.label.clone();
        let handles = self.metrics_for(tenant);
        if let Some(m) = handles.exports.iter().find(|m| m.export == export) {
            m.calls.increment(1);
            m.duration.record(report.duration.as_secs_f64());
        }
        if let Some(fuel) = report.fuel_used {
            handles.fuel_used.increment(fuel);
        }
        match result {
            Ok(()) => {
                if self.any_failures.load(Ordering::Acquire) {
                    self.reset_failures(tenant);
                }
            }
            Err(e) => {
                metrics::counter!("rapport_plugin_errors_total", "plugin" => plugin, "tenant" => handles.tenant.clone(), "cause" => e.cause()).increment(1);
                if e.counts_toward_suspension() {
                    let mut failures = self.lock_failures();
                    *failures.entry(tenant.clone()).or_insert(0) += 1;
                    self.any_failures.store(true, Ordering::Release);
                }
                tracing::debug!(plugin = %self.id, tenant = %tenant, export, error = %e, "plugin call failed");
            }
        }
    }
}

/// A share of the instance pool taken ahead of a call ([`Plugin::reserve`]).
pub struct Reservation {
    tenant: TenantId,
    plugin: Arc<str>,
    permit: Option<Permit>,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("tenant", &self.tenant)
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

/// One instance of a plugin kept across calls for one tenant. Each call
/// gets its own deadline, fuel budget and log buffer.
pub struct Session<'p> {
    plugin: &'p Plugin,
    ctx: CallContext,
    live: Option<Live>,
    /// Set right after instantiation: the next call's duration counts it.
    fresh_since: Option<Instant>,
    /// The load-time type check: instantiates outside admission.
    load_check: bool,
    /// The `now` the next call's input carries, which its WASI clocks show
    /// (the host's clock when the input has none).
    call_now: Option<Timestamp>,
    /// A share taken ahead ([`Plugin::reserve`]), used by the first
    /// instantiation instead of waiting for one.
    reserved: Option<Permit>,
}

/// A live instance with its exports looked up once (type-checking an
/// export on every call was a visible part of a warm call).
struct Live {
    store: Store<HostState>,
    guest: Loaded,
    /// This instance's share of the pool, returned when it is dropped.
    _permit: Option<Permit>,
}

enum Loaded {
    Scoring(lift::ScoringGuest),
    CrossSell(lift::CrossSellGuest),
    Rewards(lift::RewardsGuest),
    Channel(lift::ChannelGuest),
}

/// Runs one export of the session's instance: `$variant` is the plugin
/// kind's `Exports` case, `$call` uses `$guest` and `$store`.
macro_rules! guest_call {
    ($session:ident, $export:literal, $variant:ident, |$guest:ident, $store:ident| $call:expr) => {{
        let started = Instant::now();
        if !matches!($session.plugin.exports, Exports::$variant(_)) {
            (Err(CallError::WrongKind), started)
        } else {
            match $session.prepare().await {
                Err(e) => (Err(e), started),
                Ok(started) => match &mut $session.live {
                    Some(Live {
                        store,
                        guest: Loaded::$variant($guest),
                        ..
                    }) => {
                        let deadline = store.data().deadline;
                        let limit = $session.plugin.limits.max_output_bytes;
                        let raw = {
                            let $store = &mut *store;
                            // The result is lifted under the output cap,
                            // inside the deadline (see `runtime/lift.rs`);
                            // the guest runs only on a run slot.
                            let call = lift::capped(limit, $call);
                            within(
                                deadline,
                                on_slot($session.plugin, &$session.ctx.tenant, $session.load_check, call),
                            )
                            .await
                        };
                        match raw {
                            Ok(v) => (Ok(v), started),
                            Err(e) => (Err(classify(e, store, $session.plugin.limits.timeout_ms)), started),
                        }
                    }
                    _ => (Err(CallError::Instantiate("no instance".into())), started),
                },
            }
        }
    }};
}

impl Session<'_> {
    /// Uses `reservation` for this session's first instance. One taken for
    /// another tenant or plugin is dropped (freed) and the session waits
    /// for its own share as usual.
    pub fn with_reservation(mut self, reservation: Option<Reservation>) -> Self {
        if let Some(r) = reservation
            && r.tenant == self.ctx.tenant
            && r.plugin == self.plugin.id
        {
            self.reserved = r.permit;
        }
        self
    }

    /// Makes sure an instance exists (instantiating after a trap), then
    /// resets the per-call budget. Returns when the call's clock started.
    async fn prepare(&mut self) -> Result<Instant, CallError> {
        let plugin = self.plugin;
        let max = plugin.limits.max_consecutive_failures;
        if max > 0 {
            let failures = plugin.consecutive_failures(&self.ctx.tenant);
            if failures >= max {
                return Err(CallError::Suspended { failures });
            }
        }
        if self.live.is_none() {
            let permit = match self.reserved.take() {
                Some(permit) => Some(permit),
                None => admit(plugin, &self.ctx.tenant, self.load_check).await?,
            };
            let now = Instant::now();
            let mut store = plugin.new_store(&self.ctx);
            if self.load_check {
                // Instantiating to type-check the exports is the host's work
                // at load, not a call: a plugin whose own deadline is a few
                // ms must not fail to load because the machine is busy. A
                // start function that loops still ends, at the floor.
                let state = store.data_mut();
                state.deadline = state.deadline.max(now + LOAD_CHECK_MIN_DEADLINE);
            }
            store.set_epoch_deadline(1);
            if plugin.runtime.consume_fuel() {
                // Errors only when fuel is off or the interval is 0, both
                // excluded by `Runtime::new`.
                let _ = store.set_fuel(u64::MAX);
                let _ = store.fuel_async_yield_interval(Some(plugin.runtime.fuel_yield_interval()));
            }
            let deadline = store.data().deadline;
            // A start function is guest code too: on a run slot.
            let instantiate = plugin.pre.instantiate_async(&mut store);
            let instantiated = within(
                deadline,
                on_slot(plugin, &self.ctx.tenant, self.load_check, instantiate),
            )
            .await;
            let loaded = instantiated.and_then(|instance| {
                Ok(match &plugin.exports {
                    Exports::Scoring(i) => Loaded::Scoring(i.load(&mut store, &instance)?),
                    Exports::CrossSell(i) => Loaded::CrossSell(i.load(&mut store, &instance)?),
                    Exports::Rewards(i) => Loaded::Rewards(i.load(&mut store, &instance)?),
                    Exports::Channel(i) => Loaded::Channel(i.load(&mut store, &instance)?),
                })
            });
            match loaded {
                Ok(guest) => {
                    self.live = Some(Live {
                        store,
                        guest,
                        _permit: permit,
                    });
                    self.fresh_since = Some(now);
                }
                Err(e) => {
                    return Err(match classify(e, &store, plugin.limits.timeout_ms) {
                        // The load check reports the detail to the operator
                        // (e.g. exports of the wrong types); a tenant's call
                        // gets no internal detail (it may name pool sizes).
                        CallError::Trap(m) if self.load_check => CallError::Instantiate(m),
                        CallError::Trap(m) => {
                            tracing::warn!(plugin = %plugin.id, tenant = %self.ctx.tenant, error = %m, "cannot instantiate plugin");
                            CallError::Instantiate("the host could not start the plugin for this call".into())
                        }
                        other => other,
                    });
                }
            }
        }
        let started = self.fresh_since.take().unwrap_or_else(Instant::now);
        let call_now = self.call_now.take().unwrap_or_else(crate::store::now_ms);
        if let Some(Live { store, .. }) = &mut self.live {
            let state = store.data_mut();
            state.world.begin_call(&self.ctx.tenant, &plugin.id, call_now);
            state.deadline = started + Duration::from_millis(plugin.limits.timeout_ms);
            state.log.lines.clear();
            state.log.bytes = 0;
            state.log.dropped = 0;
            store.set_epoch_deadline(1);
            if plugin.runtime.consume_fuel() {
                let _ = store.set_fuel(plugin.limits.fuel.unwrap_or(u64::MAX));
            }
        }
        Ok(started)
    }

    /// Size-checks and validates the result, builds the report, records
    /// metrics, and drops the instance after anything trap-like.
    fn finish<T: OutputSize>(
        &mut self,
        export: &'static str,
        started: Instant,
        result: Result<T, CallError>,
        validate: impl FnOnce(&T) -> Result<(), CallError>,
    ) -> (Result<T, CallError>, CallReport) {
        let plugin = self.plugin;
        let result = result.and_then(|v| {
            output::check_size(&v, plugin.limits.max_output_bytes)?;
            validate(&v)?;
            Ok(v)
        });
        let mut report = CallReport {
            duration: started.elapsed(),
            ..CallReport::default()
        };
        if let Some(Live { store, .. }) = &mut self.live {
            if plugin.runtime.consume_fuel() {
                let budget = plugin.limits.fuel.unwrap_or(u64::MAX);
                report.fuel_used = store.get_fuel().ok().map(|left| budget.saturating_sub(left));
            }
            let state = store.data_mut();
            let captured = state.take_captured_output();
            if !captured.is_empty() {
                state.log.push(LogLine {
                    level: LogLevel::Warn,
                    message: captured,
                    fields: vec![("stream".into(), "stdio".into())],
                });
            }
            report.logs = std::mem::take(&mut state.log.lines);
            report.logs_dropped = state.log.dropped;
        }
        if let Err(e) = &result
            && !matches!(
                e,
                CallError::Guest(..) | CallError::InvalidOutput(_) | CallError::Suspended { .. } | CallError::WrongKind
            )
        {
            // The instance may be mid-way through anything: never reuse it.
            self.live = None;
        }
        plugin.record(export, result.as_ref().map(|_| ()), &report, &self.ctx.tenant);
        (result, report)
    }

    pub async fn score(&mut self, input: &CustomerHistory) -> (Result<CustomerScore, CallError>, CallReport) {
        self.call_now = Some(input.now);
        let (raw, started) = guest_call!(self, "score", Scoring, |g, s| g.call_score(s, input));
        let result = raw.and_then(|r| r.map_err(plugin_error));
        self.finish("score", started, result, |s| {
            output::validate_score(s).map_err(CallError::InvalidOutput)
        })
    }

    pub async fn score_batch(
        &mut self,
        inputs: &[CustomerHistory],
    ) -> (Result<Vec<Result<CustomerScore, CallError>>, CallError>, CallReport) {
        self.call_now = inputs.first().map(|i| i.now);
        let (raw, started) = guest_call!(self, "score-batch", Scoring, |g, s| g.call_score_batch(s, inputs));
        let expected = inputs.len();
        let (result, report) = self.finish("score-batch", started, raw, |v| {
            if v.len() == expected {
                Ok(())
            } else {
                Err(CallError::InvalidOutput(format!(
                    "{} results for {expected} inputs",
                    v.len()
                )))
            }
        });
        let result = result.map(|items| {
            items
                .into_iter()
                .map(|r| {
                    let s = r.map_err(plugin_error)?;
                    output::validate_score(&s).map_err(CallError::InvalidOutput)?;
                    Ok(s)
                })
                .collect()
        });
        (result, report)
    }

    /// Scoring plugins: the population fit, streamed so that a tenant of
    /// any size fits in the plugin's memory: `fit-chunk` for every
    /// [`FIT_CHUNK`] summaries on this session's one instance, then
    /// `fit-finish`, whose JSON summary is the result. The first failure
    /// ends the fit: after a trap the instance (and the chunks it had taken
    /// in) is gone, and carrying on with a fresh one would fit a part of
    /// the population as if it were all of it. The report adds up every
    /// call's; each call has its own deadline and fuel budget.
    pub async fn fit(
        &mut self,
        population: &[PurchaseSummary],
        now: Timestamp,
    ) -> (Result<String, CallError>, CallReport) {
        let mut total = CallReport::default();
        for chunk in population.chunks(FIT_CHUNK) {
            self.call_now = Some(now);
            let (raw, started) = guest_call!(self, "fit-chunk", Scoring, |g, s| g.call_fit_chunk(s, chunk, now));
            let result = raw.and_then(|r| r.map_err(plugin_error));
            let (result, report) = self.finish("fit-chunk", started, result, |_| Ok(()));
            total.absorb(report);
            if let Err(e) = result {
                return (Err(e), total);
            }
        }
        self.call_now = Some(now);
        let (raw, started) = guest_call!(self, "fit-finish", Scoring, |g, s| g.call_fit_finish(s, now));
        let result = raw.and_then(|r| r.map_err(plugin_error));
        let (result, report) = self.finish("fit-finish", started, result, |j| {
            output::validate_json("fit summary", j).map_err(CallError::InvalidOutput)
        });
        total.absorb(report);
        (result, total)
    }

    pub async fn recommend(
        &mut self,
        request: &RecommendRequest,
    ) -> (Result<Vec<Recommendation>, CallError>, CallReport) {
        self.call_now = Some(request.history.now);
        let (raw, started) = guest_call!(self, "recommend", CrossSell, |g, s| g.call_recommend(s, request));
        let result = raw.and_then(|r| r.map_err(plugin_error));
        let limit = request.limit as usize;
        self.finish("recommend", started, result, |recs| {
            if recs.len() > limit {
                return Err(CallError::InvalidOutput(format!(
                    "{} recommendations, {limit} wanted",
                    recs.len()
                )));
            }
            for r in recs {
                output::finite(&format!("score of `{}`", r.sku), r.score)
                    .and_then(|_| output::text("sku", &r.sku))
                    .and_then(|_| output::text("reason", &r.reason))
                    .map_err(CallError::InvalidOutput)?;
            }
            Ok(())
        })
    }

    pub async fn fit_baskets(&mut self, baskets: &[Vec<String>]) -> (Result<String, CallError>, CallReport) {
        let (raw, started) = guest_call!(self, "fit-baskets", CrossSell, |g, s| g.call_fit(s, baskets));
        let result = raw.and_then(|r| r.map_err(plugin_error));
        self.finish("fit-baskets", started, result, |j| {
            output::validate_json("fit summary", j).map_err(CallError::InvalidOutput)
        })
    }

    pub async fn on_interaction(
        &mut self,
        context: &InteractionContext,
    ) -> (Result<RewardOutcome, CallError>, CallReport) {
        self.call_now = Some(context.now);
        let (raw, started) = guest_call!(self, "on-interaction", Rewards, |g, s| g
            .call_on_interaction(s, context));
        let result = raw.and_then(|r| r.map_err(plugin_error));
        self.finish("on-interaction", started, result, |o| {
            for intent in &o.ledger {
                let reason = match intent {
                    LedgerIntent::Earn(e) if e.points <= 0 => {
                        return Err(CallError::InvalidOutput(format!("earn intent of {} points", e.points)));
                    }
                    LedgerIntent::Earn(e) => &e.reason,
                    LedgerIntent::Adjust(a) => &a.reason,
                };
                output::text("ledger reason", reason).map_err(CallError::InvalidOutput)?;
            }
            match &o.tier_change {
                Some(t) => output::text("tier-change reason", &t.reason).map_err(CallError::InvalidOutput),
                None => Ok(()),
            }
        })
    }

    pub async fn redeemable(
        &mut self,
        account: &LoyaltyAccount,
        tiers: &[Tier],
        rewards: &[Reward],
    ) -> (Result<Vec<String>, CallError>, CallReport) {
        let (raw, started) = guest_call!(self, "redeemable", Rewards, |g, s| g
            .call_redeemable(s, account, tiers, rewards));
        let result = raw.and_then(|r| r.map_err(plugin_error));
        self.finish("redeemable", started, result, |ids| {
            match ids.iter().find(|id| !rewards.iter().any(|r| &r.id == *id)) {
                Some(id) => Err(CallError::InvalidOutput(format!("unknown reward id `{id}`"))),
                None => Ok(()),
            }
        })
    }

    pub async fn deliver(&mut self, message: &Message) -> (Result<Receipt, CallError>, CallReport) {
        self.call_now = Some(message.now);
        let (raw, started) = guest_call!(self, "deliver", Channel, |g, s| g.call_deliver(s, message));
        let result = raw.and_then(|r| {
            r.map_err(|e| {
                let kind = if e.retryable {
                    PluginErrorKind::DeliveryRetryable
                } else {
                    PluginErrorKind::DeliveryFailed
                };
                CallError::Guest(kind, e.message)
            })
        });
        self.finish("deliver", started, result, |r| {
            output::text("provider id", r.provider_id.as_deref().unwrap_or_default())
                .and_then(|_| output::text("detail", r.detail.as_deref().unwrap_or_default()))
                .map_err(CallError::InvalidOutput)
        })
    }

    pub async fn parse_inbound(
        &mut self,
        request: &InboundRequest,
    ) -> (Result<Vec<InboundEvent>, CallError>, CallReport) {
        let (raw, started) = guest_call!(self, "parse-inbound", Channel, |g, s| g.call_parse_inbound(s, request));
        let result = raw.and_then(|r| {
            r.map_err(|e| match e {
                InboundError::Unauthenticated(m) => CallError::Guest(PluginErrorKind::Unauthenticated, m),
                InboundError::Malformed(m) => CallError::Guest(PluginErrorKind::Malformed, m),
            })
        });
        self.finish("parse-inbound", started, result, |events| {
            for e in events {
                output::validate_json("event payload", &e.payload)
                    .and_then(|_| output::text("customer external id", &e.customer_external_id))
                    .and_then(|_| output::text("kind", &e.kind))
                    .and_then(|_| output::text("idempotency key", &e.idempotency_key))
                    .map_err(CallError::InvalidOutput)?;
            }
            Ok(())
        })
    }
}

/// A share of the instance pool for a new instance of `plugin` for
/// `tenant`, waiting at most the call's own deadline (see
/// `runtime/admission.rs`). `None` for the load check, and outside a tokio
/// runtime (no timer to bound a wait).
async fn admit(plugin: &Plugin, tenant: &TenantId, load_check: bool) -> Result<Option<Permit>, CallError> {
    if load_check || tokio::runtime::Handle::try_current().is_err() {
        return Ok(None);
    }
    let wait = Duration::from_millis(plugin.limits.timeout_ms);
    match plugin.runtime.admission().acquire(tenant, &plugin.id, wait).await {
        Ok(permit) => Ok(Some(permit)),
        Err(refused) => {
            tracing::debug!(plugin = %plugin.id, tenant = %tenant, global = refused == Refused::Global, "plugin call refused: no capacity");
            Err(CallError::Busy {
                retry_after_ms: plugin.limits.timeout_ms.max(1_000),
            })
        }
    }
}

/// Runs guest code (a call, an instantiation) only while it holds one of
/// the runtime's run slots, shared round-robin between tenants (see
/// `runtime/run_slots.rs`). The load check runs outside them, as it runs
/// outside admission: loading a plugin never waits behind a tenant's flood.
async fn on_slot<F: std::future::Future>(plugin: &Plugin, tenant: &TenantId, load_check: bool, fut: F) -> F::Output {
    if load_check {
        fut.await
    } else {
        plugin.runtime.run_slots().run(tenant, fut).await
    }
}

/// Bounds time spent awaiting host services (the epoch callback bounds
/// time spent in guest code).
///
/// The timer is armed only if the call actually waits: most calls (pure
/// compute, a warm scoring call) finish on their first poll, and
/// registering a tokio timer for them was a measurable part of a call.
async fn within<T>(
    deadline: Instant,
    fut: impl std::future::Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    let mut fut = std::pin::pin!(fut);
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    if let Poll::Ready(result) = first {
        return result;
    }
    // Outside a tokio runtime (load's type check from synchronous code)
    // there is no timer; the epoch deadline still bounds guest code, and no
    // host service is awaited there.
    if tokio::runtime::Handle::try_current().is_err() {
        return fut.await;
    }
    match tokio::time::timeout_at(deadline.into(), fut).await {
        Ok(r) => r,
        Err(_) => Err(wasmtime::Error::new(DeadlineExceeded)),
    }
}

/// Turns a wasmtime failure into the precise [`CallError`].
fn classify(e: wasmtime::Error, store: &Store<HostState>, timeout_ms: u64) -> CallError {
    if e.downcast_ref::<DeadlineExceeded>().is_some() {
        return CallError::Timeout { ms: timeout_ms };
    }
    // Refused mid-lift: the instance never ran its post-return, so it is
    // dropped like after a trap (`finish`).
    if let Some(over) = e.downcast_ref::<lift::OverCap>() {
        return CallError::OutputTooLarge {
            bytes: over.bytes,
            limit: over.limit,
        };
    }
    let trap = e.downcast_ref::<Trap>().copied();
    match trap {
        Some(Trap::Interrupt) => return CallError::Timeout { ms: timeout_ms },
        Some(Trap::OutOfFuel) => return CallError::OutOfFuel,
        Some(Trap::StackOverflow) => return CallError::StackOverflow,
        _ => {}
    }
    if store.data().limiter.memory_denied {
        return CallError::MemoryLimit;
    }
    let mut message = match trap {
        Some(t) => t.to_string(),
        None => format!("{e:#}"),
    };
    let captured = store.data().captured_output();
    if !captured.is_empty() {
        message.push_str("; guest output: ");
        message.push_str(&captured);
    }
    CallError::Trap(message)
}

fn plugin_error(e: PluginError) -> CallError {
    match e {
        PluginError::InvalidInput(m) => CallError::Guest(PluginErrorKind::InvalidInput, m),
        PluginError::InvalidConfig(m) => CallError::Guest(PluginErrorKind::InvalidConfig, m),
        PluginError::Unavailable(m) => CallError::Guest(PluginErrorKind::Unavailable, m),
        PluginError::Internal(m) => CallError::Guest(PluginErrorKind::Internal, m),
    }
}
