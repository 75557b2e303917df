//! The plugin runtime: loads WebAssembly components that implement the
//! `rapport:crm` contract and calls them, sandboxed, for one tenant at a time.
//!
//! Only this module (and `runtime/*`) knows wasmtime.
//!
//! # Shape
//! - One shared [`wasmtime::Engine`] per [`Runtime`]: pooling allocator
//!   (bounded instances, memories and stacks), epoch interruption driven by a
//!   background ticker thread, optional engine-wide fuel metering.
//! - [`Runtime::load`] verifies the declared sha256 of the component bytes,
//!   compiles once per content digest (in memory, and on disk at
//!   `<cache_dir>/<sha256>-<engine hash>.cwasm`), checks every import against
//!   the granted [`Capability`]s (deny by default), links only what was
//!   granted, and keeps an `InstancePre` in the returned [`Plugin`].
//! - Each call gets a fresh `Store` holding the tenant (from
//!   [`CallContext`], never from the guest), the plugin's config, its limits
//!   and a log buffer; see `runtime/plugin.rs`.
//!
//! # Async, not a blocking pool
//! Calls use wasmtime's async support (`call_async`, async host imports). A
//! guest runs on a fiber polled by the caller's tokio task, and the epoch
//! callback makes it *yield* to the executor at every ticker tick (1 ms by
//! default) until its deadline, where it traps. With fuel on, it also yields
//! every [`RuntimeConfig::fuel_yield_interval`] units, which keeps the
//! executor responsive even when the ticker thread is starved by the OS; a
//! tokio timer around each call then enforces the deadline too. So a guest
//! spinning in a loop holds a tokio worker for at most about one tick at a
//! time, host imports await
//! the database without blocking a thread, and no extra thread hop is paid
//! per call (a `spawn_blocking` round trip costs more than the whole call
//! budget of a small plugin). `tests/it/runtime_hostile.rs` proves other
//! tenants' calls complete promptly while a hostile plugin loops.
//!
//! # Run slots: the CPU shared per tenant
//! Yielding alone left every admitted guest runnable: a few spinning guests
//! filled both workers of a 2-core node. A guest therefore runs only while
//! its call holds one of `RuntimeConfig::guest_run_slots` (cores - 1), and
//! gives it back at every yield; the next slot goes round-robin to the next
//! *tenant* waiting (`runtime/run_slots.rs`). Deadlines stay wall-clock
//! from the call's start: time waiting for a slot counts.
//!
//! # Fuel
//! Fuel metering is compiled into the code or not at all (engine-wide), so
//! [`RuntimeConfig::consume_fuel`] decides for every plugin; plugins without
//! a fuel limit then get a practically infinite budget. The wall-clock
//! deadline is the primary guard; fuel adds determinism for those who ask.
//! Measured (`cargo bench --bench plugin_call`): +6-10% on guest-heavy calls,
//! within noise on small ones, so it is on by default: it buys per-plugin
//! fuel limits and the ticker-independent yields described above.
//!
//! # Cost of a call
//! On the 2-core dev machines: fresh instance + call ≈ 12-19 µs with a
//! 10-interaction history (≈ 9-15 µs with an empty one), a call on a reused
//! instance ([`Session`]) ≈ 1.2 µs plus ≈ 0.35 µs per interaction passed in:
//! the canonical ABI lowers every string through a guest `cabi_realloc`
//! call, which dominates warm calls. Freed pool slots are reset by rewriting
//! only their dirty pages (`PAGEMAP_SCAN`) rather than madvise + page
//! faults, which halved the fresh-instance cost. Calls must run inside a
//! tokio runtime with timers enabled; [`Runtime::load`] compiles with
//! Cranelift on a cache miss, so call it from a blocking context.

mod admission;
pub mod capabilities;
pub mod contract_v0_1_0;
pub mod fixture;
pub mod history;
pub mod host_pattern;
mod host_state;
mod imports;
mod lift;
mod output;
mod plugin;
mod run_slots;
pub mod services;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use admission::AdmissionConfig;
pub use contract_v0_1_0 as contract;
pub use host_pattern::HostPattern;
pub use host_state::{LogLevel, LogLine};
pub use plugin::{CallContext, CallReport, FIT_CHUNK, Plugin, Reservation, Session};
pub use services::{HostServices, ServiceError};

/// The contract versions this host serves, side by side.
pub const SUPPORTED_CONTRACTS: &[&str] = &[contract_v0_1_0::CONTRACT];

/// Engine-wide settings. Per-plugin limits live in [`Limits`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached (`<sha256>-<engine hash>.cwasm`);
    /// `None` keeps them in memory only. The directory is trusted: its files
    /// are loaded as native code.
    pub cache_dir: Option<PathBuf>,
    /// Compile fuel metering into every plugin (see the module doc).
    pub consume_fuel: bool,
    /// The WebAssembly stack cap, engine-wide (wasmtime cannot vary it per
    /// store); a plugin asking for more in [`Limits::stack_kb`] is refused.
    pub max_stack_kb: u32,
    /// The largest linear memory any plugin may get (pool slot size).
    pub max_memory_mb: u32,
    /// How many component instances may be alive at once (pool size): the
    /// bound on concurrent calls plus live [`Session`]s.
    pub max_instances: u32,
    /// How those instances are shared between tenants and plugins (see
    /// `runtime/admission.rs`); must stay below `max_instances`. `None`:
    /// [`AdmissionConfig::for_pool`] of `max_instances`.
    pub admission: Option<AdmissionConfig>,
    /// The epoch ticker period: the timeout precision and the longest a
    /// spinning guest holds a worker thread before yielding.
    pub epoch_tick: Duration,
    /// With fuel on, a guest also yields to the executor after burning this
    /// much fuel (~1 unit per instruction). Unlike epoch ticks this does not
    /// depend on the ticker thread being scheduled: on an overloaded host a
    /// sleeping thread can be starved for 100+ ms (measured on the 2-core
    /// CI machines), and a spinning guest must not hold a worker that long.
    pub fuel_yield_interval: u64,
    /// How many guests may run at once, all tenants together (see
    /// `runtime/run_slots.rs`): a guest runs only while its call holds a
    /// run slot, and slots pass round-robin between tenants at every
    /// yield. `None`: one less than the cores, at least one, so the other
    /// cores stay free for request handling and the database.
    pub guest_run_slots: Option<u32>,
}

impl RuntimeConfig {
    /// The run slots in force: as configured, or one less than the cores.
    pub fn guest_run_slots(&self) -> u32 {
        self.guest_run_slots.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            u32::try_from(cores.saturating_sub(1)).unwrap_or(u32::MAX).max(1)
        })
    }

    /// The shares in force: as configured, or derived from the pool size.
    pub fn admission(&self) -> AdmissionConfig {
        self.admission
            .unwrap_or_else(|| AdmissionConfig::for_pool(self.max_instances))
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            consume_fuel: true,
            max_stack_kb: 512,
            max_memory_mb: 256,
            max_instances: 256,
            admission: None,
            epoch_tick: Duration::from_millis(1),
            fuel_yield_interval: 1_000_000,
            guest_run_slots: None,
        }
    }
}

/// Per-plugin limits (from the manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock budget of one call, instantiation included.
    pub timeout_ms: u64,
    /// Fuel budget of one call; `None` = unmetered.
    pub fuel: Option<u64>,
    /// Linear memory cap.
    pub memory_mb: u32,
    /// WebAssembly stack; must not exceed [`RuntimeConfig::max_stack_kb`].
    pub stack_kb: u32,
    /// The largest result a call may return (strings and lists, summed).
    pub max_output_bytes: usize,
    /// Log volume per call (capability `log`, plus captured stdout/stderr).
    pub max_log_bytes: usize,
    /// After this many failed calls in a row for one tenant the plugin is
    /// suspended for that tenant until [`Plugin::reset_failures`].
    pub max_consecutive_failures: u32,
    /// Key-value store quota per (tenant, plugin).
    pub kv_max_bytes: u64,
    /// Cap on one outbound HTTP request (capability `outbound-http`).
    pub http_timeout_ms: u64,
    /// Cap on one outbound HTTP response body.
    pub http_max_response_bytes: usize,
    /// Cap on one SMTP submission, connection to final reply (capability
    /// `outbound-smtp`).
    pub smtp_timeout_ms: u64,
    /// Cap on the size of one submitted message.
    pub smtp_max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 1_000,
            fuel: None,
            memory_mb: 64,
            stack_kb: 512,
            max_output_bytes: 1 << 20,
            max_log_bytes: 64 << 10,
            max_consecutive_failures: 20,
            kv_max_bytes: 1 << 20,
            http_timeout_ms: 5_000,
            http_max_response_bytes: 1 << 20,
            smtp_timeout_ms: 10_000,
            smtp_max_message_bytes: 10 << 20,
        }
    }
}

/// The four kinds of plugin, one per exported interface of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    ScoringRule,
    CrossSell,
    RewardScheme,
    ChannelConnector,
}

impl PluginKind {
    pub const ALL: [PluginKind; 4] = [
        PluginKind::ScoringRule,
        PluginKind::CrossSell,
        PluginKind::RewardScheme,
        PluginKind::ChannelConnector,
    ];

    /// The manifest spelling, e.g. `scoring-rule`.
    pub fn parse(s: &str) -> Option<PluginKind> {
        PluginKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::ScoringRule => "scoring-rule",
            PluginKind::CrossSell => "cross-sell",
            PluginKind::RewardScheme => "reward-scheme",
            PluginKind::ChannelConnector => "channel-connector",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PluginKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PluginKind::parse(s).ok_or_else(|| {
            format!("unknown plugin kind `{s}` (expected scoring-rule, cross-sell, reward-scheme or channel-connector)")
        })
    }
}

/// A host interface a plugin may import once the manifest grants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Customers,
    Interactions,
    Loyalty,
    Catalog,
    Kv,
    Log,
    Config,
    OutboundHttp,
    OutboundSmtp,
}

impl Capability {
    pub const ALL: [Capability; 9] = [
        Capability::Customers,
        Capability::Interactions,
        Capability::Loyalty,
        Capability::Catalog,
        Capability::Kv,
        Capability::Log,
        Capability::Config,
        Capability::OutboundHttp,
        Capability::OutboundSmtp,
    ];

    /// Network capabilities, granted to channel connectors only (and each
    /// limited to the manifest's `allowed_hosts`).
    pub fn connector_only(self) -> bool {
        matches!(self, Capability::OutboundHttp | Capability::OutboundSmtp)
    }

    /// The manifest spelling, e.g. `outbound-http`.
    pub fn parse(s: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The manifest spelling, which is also the WIT interface name.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Customers => "customers",
            Capability::Interactions => "interactions",
            Capability::Loyalty => "loyalty",
            Capability::Catalog => "catalog",
            Capability::Kv => "kv",
            Capability::Log => "log",
            Capability::Config => "config",
            Capability::OutboundHttp => "outbound-http",
            Capability::OutboundSmtp => "outbound-smtp",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Capability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Capability::parse(s).ok_or_else(|| {
            format!("unknown capability `{s}` (expected customers, interactions, loyalty, catalog, kv, log, config, outbound-http or outbound-smtp)")
        })
    }
}

/// Everything the runtime needs to load one version of one plugin.
#[derive(Debug, Clone)]
pub struct PluginDefinition {
    pub id: String,
    pub kind: PluginKind,
    /// e.g. "rapport:crm@0.1.0"; selects the host bindings.
    pub contract: String,
    /// The component's bytes.
    pub wasm: Vec<u8>,
    /// Declared sha256 of `wasm`, lowercase hex.
    pub sha256: String,
    pub capabilities: BTreeSet<Capability>,
    /// Shared by `outbound-http` and `outbound-smtp`.
    pub allowed_hosts: Vec<HostPattern>,
    pub limits: Limits,
}

impl PluginDefinition {
    /// A definition for a component on disk whose digest is taken as
    /// declared (the plugin author's inner loop, `rapport plugin run`): the
    /// id is the file stem, limits are the defaults.
    pub fn from_local_file(
        path: &Path,
        kind: PluginKind,
        capabilities: BTreeSet<Capability>,
        allowed_hosts: Vec<HostPattern>,
    ) -> std::io::Result<PluginDefinition> {
        let wasm = std::fs::read(path)?;
        Ok(PluginDefinition {
            id: path
                .file_stem()
                .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned()),
            kind,
            contract: contract_v0_1_0::CONTRACT.to_owned(),
            sha256: hex::encode(Sha256::digest(&wasm)),
            wasm,
            capabilities,
            allowed_hosts,
            limits: Limits::default(),
        })
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin `{plugin}`: unknown contract `{contract}` (this host serves {supported})")]
    UnknownContract {
        plugin: String,
        contract: String,
        supported: String,
    },
    #[error("plugin `{plugin}`: sha256 mismatch: declared {declared}, actual {actual}")]
    DigestMismatch {
        plugin: String,
        declared: String,
        actual: String,
    },
    #[error("plugin `{plugin}`: not a WebAssembly component or failed to compile: {message}")]
    Compile { plugin: String, message: String },
    #[error("plugin `{plugin}`: compiled-code cache {path}: {message}")]
    Cache {
        plugin: String,
        path: PathBuf,
        message: String,
    },
    #[error("plugin `{plugin}`: imports `{import}` but capability `{capability}` is not granted")]
    ImportNotGranted {
        plugin: String,
        import: String,
        capability: Capability,
    },
    #[error("plugin `{plugin}`: imports `{import}`, which is outside the contract and the permitted WASI interfaces")]
    ImportNotAllowed { plugin: String, import: String },
    #[error("plugin `{plugin}`: capability `{capability}` is not available to {kind} plugins")]
    CapabilityNotForKind {
        plugin: String,
        capability: Capability,
        kind: PluginKind,
    },
    #[error("plugin `{plugin}`: a {kind} plugin must export `{export}`: {message}")]
    MissingExport {
        plugin: String,
        kind: PluginKind,
        export: String,
        message: String,
    },
    /// The exports have the right names but not the contract's types: the
    /// component was built against another revision of the WIT.
    #[error(
        "plugin `{plugin}`: its exports do not match the {kind} world of this host's contract \
         (built against another revision of the WIT?): {message}"
    )]
    ExportTypes {
        plugin: String,
        kind: PluginKind,
        message: String,
    },
    #[error("plugin `{plugin}`: invalid limits: {message}")]
    Limits { plugin: String, message: String },
    #[error("plugin `{plugin}`: linking failed: {message}")]
    Link { plugin: String, message: String },
}

/// Why the runtime itself could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid runtime configuration: {0}")]
    Config(String),
    #[error("cannot create the wasmtime engine: {0}")]
    Engine(String),
    #[error("cannot create the compiled-code cache directory {path}: {message}")]
    CacheDir { path: PathBuf, message: String },
    #[error("cannot start the epoch ticker thread: {0}")]
    Ticker(String),
}

/// Why a call failed. A failed call never affects any other call: each one
/// runs in its own store.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin exceeded its {ms} ms deadline")]
    Timeout { ms: u64 },
    #[error("plugin ran out of fuel")]
    OutOfFuel,
    #[error("plugin exceeded its memory limit")]
    MemoryLimit,
    #[error("plugin overflowed its stack")]
    StackOverflow,
    #[error("plugin output is {bytes} bytes, over the {limit}-byte limit")]
    OutputTooLarge { bytes: usize, limit: usize },
    #[error("plugin returned invalid output: {0}")]
    InvalidOutput(String),
    /// The typed error the plugin returned on purpose.
    #[error("plugin error ({0}): {1}")]
    Guest(PluginErrorKind, String),
    #[error("the plugin is not of a kind that exports this function")]
    WrongKind,
    /// The host could not start an instance for this call (the detail is
    /// logged, not returned: it may name the host's internal sizes).
    #[error("cannot instantiate the plugin: {0}")]
    Instantiate(String),
    #[error("plugin suspended for this tenant after {failures} consecutive failures")]
    Suspended { failures: u32 },
    /// The tenant's share of plugin capacity stayed full for the whole of
    /// the call's deadline (or the host's capacity did): retry later.
    #[error("too many concurrent plugin calls for this tenant; retry later")]
    Busy { retry_after_ms: u64 },
}

impl CallError {
    /// A stable label for metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            CallError::Trap(_) => "trap",
            CallError::Timeout { .. } => "timeout",
            CallError::OutOfFuel => "out_of_fuel",
            CallError::MemoryLimit => "memory_limit",
            CallError::StackOverflow => "stack_overflow",
            CallError::OutputTooLarge { .. } => "output_too_large",
            CallError::InvalidOutput(_) => "invalid_output",
            CallError::Guest(..) => "plugin_error",
            CallError::WrongKind => "wrong_kind",
            CallError::Instantiate(_) => "instantiate",
            CallError::Suspended { .. } => "suspended",
            CallError::Busy { .. } => "busy",
        }
    }

    /// Whether this failure says the plugin misbehaves, and so counts
    /// towards its suspension for the tenant: the one rule every caller
    /// applies. A typed error is an answer; a suspension or a wrong-kind
    /// call says nothing new; capacity and instantiation failures are the
    /// host's (or other tenants') doing, and must never switch a tenant's
    /// plugin off.
    pub fn counts_toward_suspension(&self) -> bool {
        match self {
            CallError::Trap(_)
            | CallError::Timeout { .. }
            | CallError::OutOfFuel
            | CallError::MemoryLimit
            | CallError::StackOverflow
            | CallError::OutputTooLarge { .. }
            | CallError::InvalidOutput(_) => true,
            CallError::Guest(..)
            | CallError::WrongKind
            | CallError::Instantiate(_)
            | CallError::Suspended { .. }
            | CallError::Busy { .. } => false,
        }
    }
}

/// The contract's `plugin-error` cases (and the channel errors), flattened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginErrorKind {
    InvalidInput,
    InvalidConfig,
    Unavailable,
    Internal,
    /// `delivery-error` with `retryable = true`.
    DeliveryRetryable,
    /// `delivery-error` with `retryable = false`.
    DeliveryFailed,
    /// `inbound-error::unauthenticated`.
    Unauthenticated,
    /// `inbound-error::malformed`.
    Malformed,
}

impl fmt::Display for PluginErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginErrorKind::InvalidInput => "invalid_input",
            PluginErrorKind::InvalidConfig => "invalid_config",
            PluginErrorKind::Unavailable => "unavailable",
            PluginErrorKind::Internal => "internal",
            PluginErrorKind::DeliveryRetryable => "delivery_retryable",
            PluginErrorKind::DeliveryFailed => "delivery_failed",
            PluginErrorKind::Unauthenticated => "unauthenticated",
            PluginErrorKind::Malformed => "malformed",
        })
    }
}

/// The plugin runtime. Cheap to clone; clones share the engine and caches.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    config: RuntimeConfig,
    /// Hex of the engine's compatibility hash: part of cache file names, so
    /// an upgraded wasmtime or changed settings never load stale code.
    engine_hash: String,
    /// Compiled components by content digest: compile once per digest.
    components: Mutex<HashMap<String, Component>>,
    compilations: AtomicU64,
    /// Shares of the instance pool per tenant and plugin.
    admission: admission::CallAdmission,
    /// Who of the admitted guests runs now (the CPU, shared per tenant).
    run_slots: run_slots::RunSlots,
    http: reqwest::Client,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        if config.epoch_tick.is_zero() {
            return Err(RuntimeError::Config("epoch_tick must be positive".into()));
        }
        if config.fuel_yield_interval == 0 {
            return Err(RuntimeError::Config("fuel_yield_interval must be positive".into()));
        }
        if config.guest_run_slots == Some(0) {
            return Err(RuntimeError::Config("guest_run_slots must be at least 1".into()));
        }
        let admission = config.admission();
        admission.check(config.max_instances).map_err(RuntimeError::Config)?;
        let max_stack = (config.max_stack_kb as usize) << 10;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(config.max_instances)
            // std guests are one core module plus a few adapter shims.
            .total_core_instances(config.max_instances.saturating_mul(4))
            .total_memories(config.max_instances.saturating_mul(2))
            .total_tables(config.max_instances.saturating_mul(4))
            .total_stacks(config.max_instances)
            .max_memories_per_component(2)
            .max_tables_per_component(4)
            .max_memory_size((config.max_memory_mb as usize) << 20)
            // Reset a freed slot by rewriting only its dirty pages (found with
            // the PAGEMAP_SCAN ioctl) instead of madvise + page faults on the
            // next instantiation: measured, madvise, TLB shootdowns and page
            // faults were ~60% of a fresh call. 2 MiB covers a Rust guest's
            // 1 MiB shadow stack, its data and a first heap.
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10)
            // Without the ioctl (kernels < 6.7) wasmtime would memset the
            // whole kept range instead: `Auto` falls back to madvise then.
            .pagemap_scan(Enabled::Auto);
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .consume_fuel(config.consume_fuel)
            .max_wasm_stack(max_stack)
            // Host imports (database, HTTP) are polled on the fiber's stack
            // too: give them room above the guest's cap.
            .async_stack_size(max_stack + (1 << 20))
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // Built with `--features profiling`, `RAPPORT_WASM_PROFILER=perfmap`
        // writes /tmp/perf-PID.map so that `perf report` names the guest's
        // functions (how the plugin benchmarks were profiled).
        #[cfg(feature = "profiling")]
        if std::env::var("RAPPORT_WASM_PROFILER").as_deref() == Ok("perfmap") {
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&wasm).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let engine_hash = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            format!("{:016x}", h.finish())
        };
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| RuntimeError::CacheDir {
                path: dir.clone(),
                message: e.to_string(),
            })?;
        }
        spawn_epoch_ticker(&engine, config.epoch_tick)?;
        let run_slots = run_slots::RunSlots::new(config.guest_run_slots() as usize);
        let http = reqwest::Client::builder()
            // A redirect could lead anywhere: connectors see 3xx themselves.
            .redirect(reqwest::redirect::Policy::none())
            // HTTPS through rustls with the bundled Mozilla roots: the same
            // trust on every machine, no system OpenSSL or CA store.
            .use_rustls_tls()
            .build()
            .map_err(|e| RuntimeError::Engine(format!("http client: {e}")))?;
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                config,
                engine_hash,
                components: Mutex::new(HashMap::new()),
                compilations: AtomicU64::new(0),
                admission: admission::CallAdmission::new(admission),
                run_slots,
                http,
            }),
        })
    }

    /// How many components this runtime compiled from WebAssembly (cache
    /// hits, in memory or on disk, do not count).
    pub fn compilations(&self) -> u64 {
        self.inner.compilations.load(Ordering::Relaxed)
    }

    /// Where the compiled artifact of a component with this digest lives.
    pub fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        self.inner.config.cache_dir.as_ref().map(|dir| {
            dir.join(format!(
                "{}-{}.cwasm",
                sha256.to_ascii_lowercase(),
                self.inner.engine_hash
            ))
        })
    }

    /// Verifies, compiles (or loads from cache), checks imports against the
    /// granted capabilities and pre-links one plugin version.
    pub fn load(&self, def: PluginDefinition) -> Result<Arc<Plugin>, LoadError> {
        let plugin = def.id.clone();
        if !SUPPORTED_CONTRACTS.contains(&def.contract.as_str()) {
            return Err(LoadError::UnknownContract {
                plugin,
                contract: def.contract,
                supported: SUPPORTED_CONTRACTS.join(", "),
            });
        }
        let max_stack = self.inner.config.max_stack_kb;
        if def.limits.stack_kb > max_stack {
            return Err(LoadError::Limits {
                plugin,
                message: format!("stack_kb {} exceeds the runtime's {max_stack} KiB", def.limits.stack_kb),
            });
        }
        if def.limits.memory_mb > self.inner.config.max_memory_mb {
            return Err(LoadError::Limits {
                plugin,
                message: format!(
                    "memory_mb {} exceeds the runtime's {} MiB",
                    def.limits.memory_mb, self.inner.config.max_memory_mb
                ),
            });
        }
        if def.limits.timeout_ms == 0 {
            return Err(LoadError::Limits {
                plugin,
                message: "timeout_ms must be positive".into(),
            });
        }
        let actual = hex::encode(Sha256::digest(&def.wasm));
        if !actual.eq_ignore_ascii_case(def.sha256.trim()) {
            return Err(LoadError::DigestMismatch {
                plugin,
                declared: def.sha256,
                actual,
            });
        }
        let (component, from_cache) = self.component(&plugin, &actual, &def.wasm)?;
        imports::check(&self.inner.engine, &component, &def)?;
        plugin::Plugin::prepare(self.clone(), def, component, from_cache)
    }

    /// Compile once per digest: memory first, then disk, then Cranelift.
    fn component(&self, plugin: &str, sha256: &str, wasm: &[u8]) -> Result<(Component, bool), LoadError> {
        if let Some(c) = self.lock_components().get(sha256) {
            return Ok((c.clone(), true));
        }
        let engine = &self.inner.engine;
        let (component, from_cache) = match self.cache_path(sha256) {
            Some(path) => match load_cached(engine, &path) {
                Some(c) => (c, true),
                None => {
                    let compiled = engine.precompile_component(wasm).map_err(|e| LoadError::Compile {
                        plugin: plugin.into(),
                        message: format!("{e:#}"),
                    })?;
                    self.inner.compilations.fetch_add(1, Ordering::Relaxed);
                    // The cache only spares the next start a compilation: a
                    // plugin whose compiled code cannot be written (a full
                    // disk, a removed directory) still runs.
                    if let Err(e) = write_atomically(&path, &compiled) {
                        tracing::warn!(plugin, path = %path.display(), error = %format!("{e:#}"),
                            "could not write the compiled-plugin cache");
                    }
                    // SAFETY: these bytes were produced just now by this
                    // engine's `precompile_component`.
                    let c = unsafe { Component::deserialize(engine, &compiled) }.map_err(|e| LoadError::Compile {
                        plugin: plugin.into(),
                        message: format!("{e:#}"),
                    })?;
                    (c, false)
                }
            },
            None => {
                let c = Component::new(engine, wasm).map_err(|e| LoadError::Compile {
                    plugin: plugin.into(),
                    message: format!("{e:#}"),
                })?;
                self.inner.compilations.fetch_add(1, Ordering::Relaxed);
                (c, false)
            }
        };
        self.lock_components().insert(sha256.to_owned(), component.clone());
        Ok((component, from_cache))
    }

    fn lock_components(&self) -> std::sync::MutexGuard<'_, HashMap<String, Component>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single insert/get), so a poisoned lock is still usable.
        self.inner.components.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn consume_fuel(&self) -> bool {
        self.inner.config.consume_fuel
    }

    pub(crate) fn fuel_yield_interval(&self) -> u64 {
        self.inner.config.fuel_yield_interval
    }

    pub(crate) fn admission(&self) -> &admission::CallAdmission {
        &self.inner.admission
    }

    pub(crate) fn run_slots(&self) -> &run_slots::RunSlots {
        &self.inner.run_slots
    }

    /// Component instances alive now (calls in flight plus sessions), all
    /// tenants together.
    pub fn instances_in_use(&self) -> usize {
        self.inner.admission.in_use()
    }
}

/// Loads a cached artifact; any failure (missing, truncated, built by
/// another engine) means "recompile", never an error.
fn load_cached(engine: &Engine, path: &Path) -> Option<Component> {
    // Read, don't mmap (`deserialize_file`): a mapped file truncated or
    // rewritten in place by anyone would turn into SIGBUS in running code.
    let bytes = std::fs::read(path).ok()?;
    // SAFETY: the cache directory is trusted operator storage written only
    // by `write_atomically` below with `precompile_component` output; the
    // file name carries the engine's compatibility hash and wasmtime checks
    // the header again.
    match unsafe { Component::deserialize(engine, &bytes) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled-plugin cache file");
            None
        }
    }
}

/// Write to a temporary file then rename, so a crash or a concurrent loader
/// never sees half an artifact.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    // Unique per process AND per write: two threads compiling the same
    // digest at once must not rename each other's temporary file away.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Advances the engine's epoch every `tick` until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine, tick: Duration) -> Result<(), RuntimeError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("rapport-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })
        .map(|_| ())
        .map_err(|e| RuntimeError::Ticker(e.to_string()))
}
