//! The per-call host state stored in each wasmtime `Store`: who the call is
//! for (tenant, plugin), what it may use (limits, config, services) and what
//! it produced besides its result (logs, captured stderr).
//!
//! The tenant lives here and only here: host imports read it from the store,
//! never from their arguments, which is what keeps a plugin inside the
//! tenant it was called for.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand_wasi::{SeedableRng as _, TryRng};
use sha2::{Digest as _, Sha256};

use serde::{Deserialize, Serialize};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::Limits;
use super::capabilities::outbound_http::HttpPolicy;
use super::capabilities::outbound_smtp::SmtpPolicy;
use super::services::HostServices;
use crate::store::TenantId;

/// Severity of a plugin log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// One line a plugin logged during a call (capability `log`), or a chunk of
/// what it wrote to stdout/stderr (level `warn`, field `stream`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

impl LogLine {
    fn size(&self) -> usize {
        self.message.len() + self.fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }
}

/// Log lines of one call, capped at `max_bytes`; lines that would go over
/// are dropped whole and counted.
#[derive(Debug, Default)]
pub(crate) struct LogBuffer {
    pub lines: Vec<LogLine>,
    pub bytes: usize,
    pub dropped: u32,
    pub max_bytes: usize,
}

impl LogBuffer {
    pub fn push(&mut self, line: LogLine) {
        let size = line.size();
        if self.bytes + size > self.max_bytes {
            self.dropped = self.dropped.saturating_add(1);
        } else {
            self.bytes += size;
            self.lines.push(line);
        }
    }
}

/// Memory and table limits, remembering whether a growth was refused so a
/// failure can be reported as [`super::CallError::MemoryLimit`] rather than
/// as whatever trap the guest's allocator turns it into.
pub(crate) struct Limiter {
    inner: StoreLimits,
    pub memory_denied: bool,
}

impl Limiter {
    pub fn new(memory_bytes: usize) -> Limiter {
        Limiter {
            inner: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .instances(16)
                .build(),
            memory_denied: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let ok = self.inner.memory_growing(current, desired, maximum)?;
        if !ok {
            self.memory_denied = true;
        }
        Ok(ok)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_denied = true;
        self.inner.memory_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// What a guest sees of time and chance through WASI, per call: both
/// clocks stand still at the call's host `now` (the `now` its input carries,
/// or the host's clock when the call was made), and randomness, secure and
/// insecure alike, is a stream seeded from (tenant, plugin, now). The same
/// call with the same input therefore behaves the same, as `wit/README.md`
/// promises; a plugin has no clock of its own to time or fingerprint the
/// host with.
pub(crate) struct CallWorld {
    now_ms: AtomicI64,
    secure: Mutex<rand_wasi::rngs::StdRng>,
    insecure: Mutex<rand_wasi::rngs::StdRng>,
    insecure_seed: Mutex<u128>,
}

impl CallWorld {
    fn new() -> CallWorld {
        CallWorld {
            now_ms: AtomicI64::new(0),
            secure: Mutex::new(rand_wasi::rngs::StdRng::from_seed([0; 32])),
            insecure: Mutex::new(rand_wasi::rngs::StdRng::from_seed([0; 32])),
            insecure_seed: Mutex::new(0),
        }
    }

    /// Freezes the clocks at `now_ms` and reseeds every stream for a call.
    pub fn begin_call(&self, tenant: &TenantId, plugin: &str, now_ms: i64) {
        self.now_ms.store(now_ms, Ordering::Relaxed);
        let seed = |domain: &str| -> [u8; 32] {
            let mut h = Sha256::new();
            for part in [domain.as_bytes(), tenant.as_str().as_bytes(), plugin.as_bytes()] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part);
            }
            h.update(now_ms.to_le_bytes());
            h.finalize().into()
        };
        *lock(&self.secure) = rand_wasi::rngs::StdRng::from_seed(seed("secure"));
        *lock(&self.insecure) = rand_wasi::rngs::StdRng::from_seed(seed("insecure"));
        let s = seed("insecure-seed");
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&s[..16]);
        *lock(&self.insecure_seed) = u128::from_le_bytes(bytes);
    }

    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A generator is still a generator after a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `wasi:clocks/wall-clock`: the call's `now`.
struct FrozenWall(Arc<CallWorld>);

impl HostWallClock for FrozenWall {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.now_ms()).unwrap_or(0))
    }
}

/// `wasi:clocks/monotonic-clock`: the call's `now` in nanoseconds, so
/// elapsed time inside a call is always zero.
struct FrozenMonotonic(Arc<CallWorld>);

impl HostMonotonicClock for FrozenMonotonic {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        u64::try_from(self.0.now_ms()).unwrap_or(0).saturating_mul(1_000_000)
    }
}

/// `wasi:random/random` or `wasi:random/insecure`: the call's seeded stream.
struct SeededRandom(Arc<CallWorld>, bool);

impl SeededRandom {
    fn with<R>(&self, f: impl FnOnce(&mut rand_wasi::rngs::StdRng) -> R) -> R {
        let world = &self.0;
        f(&mut lock(if self.1 { &world.secure } else { &world.insecure }))
    }
}

impl TryRng for SeededRandom {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        self.with(|r| r.try_next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.with(|r| r.try_next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.with(|r| r.try_fill_bytes(dst))
    }
}

/// The network policies of a connector (none for other kinds): present
/// only for the capabilities the manifest granted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Network {
    pub http: Option<Arc<HttpPolicy>>,
    pub smtp: Option<Arc<SmtpPolicy>>,
}

pub(crate) struct HostState {
    pub tenant: TenantId,
    pub plugin_id: Arc<str>,
    pub config_json: String,
    pub services: Arc<dyn HostServices>,
    pub limits: Arc<Limits>,
    pub limiter: Limiter,
    pub log: LogBuffer,
    pub http: Option<Arc<HttpPolicy>>,
    pub smtp: Option<Arc<SmtpPolicy>>,
    /// When the current call must end; read by the epoch callback.
    pub deadline: Instant,
    /// The clocks and randomness WASI shows this call.
    pub world: Arc<CallWorld>,
    /// Built on first use: most calls never touch WASI, and building a
    /// context (RNG seeding) is a measurable part of a small call.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    /// Guest stdout+stderr (panic messages land here), capped like logs.
    output: Option<MemoryOutputPipe>,
    /// How much of `output` earlier calls of a session already reported.
    output_seen: usize,
}

impl HostState {
    pub fn new(
        tenant: TenantId,
        plugin_id: Arc<str>,
        config_json: String,
        services: Arc<dyn HostServices>,
        limits: Arc<Limits>,
        network: Network,
        deadline: Instant,
    ) -> HostState {
        let limiter = Limiter::new((limits.memory_mb as usize) << 20);
        let log = LogBuffer {
            max_bytes: limits.max_log_bytes,
            ..LogBuffer::default()
        };
        HostState {
            tenant,
            plugin_id,
            config_json,
            services,
            limits,
            limiter,
            log,
            http: network.http,
            smtp: network.smtp,
            deadline,
            world: Arc::new(CallWorld::new()),
            wasi: None,
            table: ResourceTable::new(),
            output: None,
            output_seen: 0,
        }
    }

    /// What the guest wrote to stdout/stderr since the last
    /// [`Self::take_captured_output`], lossily decoded.
    pub fn captured_output(&self) -> String {
        match &self.output {
            Some(pipe) => {
                let bytes = pipe.contents();
                String::from_utf8_lossy(bytes.get(self.output_seen..).unwrap_or_default())
                    .trim_end()
                    .to_owned()
            }
            None => String::new(),
        }
    }

    /// Like [`Self::captured_output`], and marks it reported.
    pub fn take_captured_output(&mut self) -> String {
        let text = self.captured_output();
        if let Some(pipe) = &self.output {
            self.output_seen = pipe.contents().len();
        }
        text
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let HostState {
            wasi,
            table,
            output,
            limits,
            world,
            ..
        } = self;
        let ctx = wasi.get_or_insert_with(|| {
            // Empty by default: no preopens, no env, no args, stdin closed,
            // every socket address denied, name lookup denied; clocks and
            // randomness are the call's (see `CallWorld`).
            let pipe = MemoryOutputPipe::new(limits.max_log_bytes);
            let mut builder = WasiCtxBuilder::new();
            builder
                .wall_clock(FrozenWall(world.clone()))
                .monotonic_clock(FrozenMonotonic(world.clone()))
                .secure_random(SeededRandom(world.clone(), true))
                .insecure_random(SeededRandom(world.clone(), false))
                .insecure_random_seed(*lock(&world.insecure_seed))
                .stdout(pipe.clone())
                .stderr(pipe.clone())
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false);
            *output = Some(pipe);
            builder.build()
        });
        WasiCtxView { ctx, table }
    }
}
