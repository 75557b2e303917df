//! The plugin service: the glue between the manifest (which plugins exist,
//! what they may do), the per-tenant state in the database (enabled,
//! config, suspension), the wasmtime runtime (which runs them) and the store
//! (what their capabilities read).
//!
//! Callers (the API, batch jobs) ask for "the tenant's active plugins of a
//! kind" and run them; this module makes sure that
//! - the tenant comes from the caller (never from plugin input) and is the
//!   one the runtime binds into the call's host state;
//! - every plugin of the manifest is compiled when the manifest is loaded
//!   (start-up, reload), in the background, once per artifact digest; a
//!   load failure (missing or changed artifact, ungranted import, not a
//!   component) makes the plugin unavailable, is remembered and reported on
//!   every call instead of recompiling each time, and never counts towards
//!   suspension (see `loader`);
//! - every call that failed through the plugin's own misbehaviour
//!   ([`CallError::counts_toward_suspension`]: not a load failure, not a
//!   call refused for capacity) is counted against (tenant, plugin) in the
//!   database, and the plugin is suspended for that tenant after the manifest's
//!   `max_consecutive_failures`, visible in `GET /v1/plugins` until an admin
//!   resumes it. The database is the single source of truth for
//!   suspension, so it survives restarts and is shared by several nodes;
//! - a config the plugin refuses (`invalid-config`), or a secret reference
//!   that does not resolve, is recorded as the plugin's `config_error`
//!   (status `misconfigured`), never counted towards suspension;
//! - secret references in the config are resolved into the call's config
//!   only (`manifest::config_schema::resolve_secrets`), never stored;
//! - every call is queued for the run history (`run_log`), off the call
//!   path.

pub mod cross_sell;
pub mod inbound;
pub mod loader;
pub mod rewards;
pub mod run_log;
pub mod scoring;
pub mod simulate;
pub mod store_services;
pub mod versions;

use std::sync::{Arc, Mutex};

use serde::Serialize;
use utoipa::ToSchema;

use crate::manifest::config_schema::{self, SecretSource};
use crate::manifest::effective::{EffectivePlugin, PluginStatus, effective_plugin, effective_plugins};
use crate::manifest::{ManifestHandle, PluginKind, PluginSpec};
use crate::runtime::PluginErrorKind;
use crate::runtime::contract::inputs::CustomerHistory;
use crate::runtime::contract::types;
use crate::runtime::{CallContext, CallError, CallReport, Plugin, PluginDefinition, Runtime, RuntimeConfig};
use crate::store::plugin_runs::{NewRun, RunLogLine};
use crate::store::{Store, StoreError, StoreResult, TenantId, now_ms};

/// How much history a plugin gets with each customer. Beyond this the
/// oldest interactions are left out and `truncated` is set; a plugin that
/// needs everything pages through the `interactions` capability.
pub const MAX_HISTORY: usize = 2_000;

/// Why a plugin call produced no result, as the API reports it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PluginFailure {
    /// `plugin_timeout`, `plugin_trap`, `plugin_load_failed`, `plugin_busy`, ...
    pub code: String,
    pub message: String,
    /// `plugin_busy` only: when a retry may find capacity.
    #[serde(skip)]
    pub retry_after_ms: Option<u64>,
}

impl PluginFailure {
    /// The tenant's share of plugin capacity was full (`plugin_busy`).
    pub fn is_busy(&self) -> bool {
        self.retry_after_ms.is_some()
    }
}

/// The code of [`CallError::Busy`] as the API reports it.
pub const BUSY: &str = "plugin_busy";

/// If any of `runs` found no capacity, the longest wait it suggests: the
/// API then answers 429 for the whole request (the tenant retries it).
pub fn busy_retry_after<T>(runs: &[PluginRun<T>]) -> Option<u64> {
    runs.iter()
        .filter_map(|r| r.result.as_ref().err().and_then(|f| f.retry_after_ms))
        .max()
}

/// One plugin's answer (or failure) plus what the call cost.
#[derive(Debug, Clone)]
pub struct PluginRun<T> {
    pub plugin: String,
    /// The plugin version that ran (empty when none could be chosen).
    pub version: String,
    pub result: Result<T, PluginFailure>,
    pub report: CallReport,
}

pub struct PluginService {
    /// Created when the first plugin is loaded: an app without plugins
    /// (most tests, a node with no manifest) never reserves the engine's
    /// instance pool or starts its epoch ticker.
    runtime_config: RuntimeConfig,
    runtime: Mutex<Option<Runtime>>,
    manifest: Arc<ManifestHandle>,
    store: Store,
    services: Arc<store_services::StoreServices>,
    loader: loader::Loader,
    /// Uploaded versions compiled on this node (see [`versions`]).
    uploads: versions::UploadCache,
    reward_locks: rewards::CustomerLocks,
    /// Where secret references in configs resolve.
    secrets: SecretSource,
    runs: run_log::RunLog,
}

fn failure(code: &str, message: impl Into<String>) -> PluginFailure {
    PluginFailure {
        code: code.to_string(),
        message: message.into(),
        retry_after_ms: None,
    }
}

/// Removes resolved secret values from what a call returned: its typed
/// error and its log lines (see `config_schema::scrub`).
pub(crate) fn scrub_secrets<T>(secrets: &[String], result: &mut Result<T, CallError>, report: &mut CallReport) {
    if secrets.is_empty() {
        return;
    }
    if let Err(CallError::Guest(_, message)) = result {
        config_schema::scrub(message, secrets);
    }
    for line in &mut report.logs {
        config_schema::scrub(&mut line.message, secrets);
        for (_, value) in &mut line.fields {
            config_schema::scrub(value, secrets);
        }
    }
}

/// A runtime error as the API names it: `plugin_` + the runtime's cause.
fn call_failure(err: &CallError) -> PluginFailure {
    let mut fail = failure(&format!("plugin_{}", err.cause()), err.to_string());
    if let CallError::Busy { retry_after_ms } = err {
        fail.retry_after_ms = Some(*retry_after_ms);
    }
    fail
}

/// The runtime's view of a manifest entry. The manifest has already checked
/// ranges and patterns; the runtime checks again what only it can (stack
/// size against the engine, capabilities against the kind).
fn definition(spec: &PluginSpec, wasm: Vec<u8>) -> PluginDefinition {
    PluginDefinition {
        id: spec.id.clone(),
        kind: spec.kind,
        contract: spec.contract.clone(),
        wasm,
        sha256: spec.sha256.clone(),
        capabilities: spec.capabilities.clone(),
        allowed_hosts: spec.allowed_hosts.clone(),
        limits: runtime_limits(&spec.limits),
    }
}

/// A manifest entry's limits as the runtime takes them. Suspension is
/// tracked in the database (see the module doc), not in the runtime's
/// memory, so the runtime's own circuit breaker stays off.
pub fn runtime_limits(limits: &crate::manifest::Limits) -> crate::runtime::Limits {
    crate::runtime::Limits {
        timeout_ms: limits.timeout_ms,
        fuel: limits.fuel,
        memory_mb: u32::try_from(limits.memory_mb).unwrap_or(u32::MAX),
        stack_kb: u32::try_from(limits.stack_kb).unwrap_or(u32::MAX),
        max_output_bytes: usize::try_from(limits.max_output_bytes).unwrap_or(usize::MAX),
        max_log_bytes: usize::try_from(limits.max_log_bytes).unwrap_or(usize::MAX),
        max_consecutive_failures: 0,
        kv_max_bytes: limits.kv_max_bytes,
        http_timeout_ms: limits.http_timeout_ms,
        http_max_response_bytes: usize::try_from(limits.http_max_response_bytes).unwrap_or(usize::MAX),
        smtp_timeout_ms: limits.smtp_timeout_ms,
        smtp_max_message_bytes: usize::try_from(limits.smtp_max_message_bytes).unwrap_or(usize::MAX),
    }
}

/// Loads (compiles, verifies and links) every plugin of `manifest`, as the
/// server does at start-up, and returns `(plugin id, reason)` for each one
/// that would fail: not a component, an import its capabilities do not
/// grant, an unknown contract, limits the engine cannot honour.
/// `rapport manifest check` reports these before anything is deployed.
pub fn check_components(manifest: &crate::manifest::Manifest, runtime: &Runtime) -> Vec<(String, String)> {
    let mut failures = Vec::new();
    for spec in &manifest.plugins {
        if let Err(reason) = loader::load(runtime, spec) {
            failures.push((spec.id.clone(), reason));
        }
    }
    failures
}

impl PluginService {
    pub fn new(runtime_config: RuntimeConfig, manifest: Arc<ManifestHandle>, store: Store) -> PluginService {
        let services = Arc::new(store_services::StoreServices::new(store.clone()));
        PluginService {
            runtime_config,
            runtime: Mutex::new(None),
            manifest,
            store,
            services,
            loader: loader::Loader::default(),
            uploads: versions::UploadCache::default(),
            reward_locks: rewards::CustomerLocks::default(),
            secrets: SecretSource::default(),
            runs: run_log::RunLog::default(),
        }
    }

    /// Where secret references in plugin configs resolve (the server
    /// config's `[plugins] secrets_file`, and the environment).
    pub fn with_secrets(mut self, secrets: SecretSource) -> PluginService {
        self.secrets = secrets;
        self
    }

    /// Starts compiling, in the background, every plugin of the current
    /// manifest not yet loaded for its digest (see [`loader`]); `reload`
    /// (after a manifest reload) also retries the unavailable ones.
    pub fn load_all(&self, reload: bool) {
        let manifest = self.manifest.current();
        self.loader
            .load_all(&manifest, || self.runtime().map_err(|f| f.message), reload);
    }

    /// The plugins of the current manifest still compiling: the server is
    /// ready (`/readyz`) when there are none.
    pub fn pending(&self) -> Vec<String> {
        self.loader.pending(&self.manifest.current())
    }

    /// How one plugin's load stands, and why it is unavailable if it is.
    pub fn load_status(&self, id: &str) -> (loader::LoadStatus, Option<String>) {
        self.loader.status(id).unwrap_or((loader::LoadStatus::Loading, None))
    }

    /// Marks the plugins whose current artifact cannot be loaded as
    /// unavailable (see `manifest::effective`, rule 4).
    pub fn mark_unavailable(&self, plugins: &mut [EffectivePlugin]) {
        let manifest = self.manifest.current();
        for plugin in plugins {
            let Some(spec) = manifest.plugin(&plugin.id) else {
                continue;
            };
            if let Some(reason) = self.loader.unavailable(&spec.id, &spec.sha256) {
                plugin.mark_unavailable(reason);
            }
        }
    }

    /// The tenant's plugins with their effective state, availability
    /// included: what `GET /v1/plugins` lists.
    pub async fn effective(&self, tenant: &TenantId) -> StoreResult<Vec<EffectivePlugin>> {
        let manifest = self.manifest.current();
        let states = self.store.plugin_states(tenant).await?;
        let mut plugins = effective_plugins(&manifest, tenant.as_str(), &states);
        self.mark_unavailable(&mut plugins);
        Ok(plugins)
    }

    /// The runtime, created on first use (the first load).
    pub fn runtime(&self) -> Result<Runtime, PluginFailure> {
        let mut slot = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(runtime) = slot.as_ref() {
            return Ok(runtime.clone());
        }
        let runtime = Runtime::new(self.runtime_config.clone())
            .map_err(|e| failure("plugin_runtime_unavailable", e.to_string()))?;
        *slot = Some(runtime.clone());
        Ok(runtime)
    }

    /// Sets the gauges read at scrape time: plugins suspended (all
    /// tenants, from the database, so every node agrees) and plugin
    /// instances alive on this node.
    pub async fn refresh_gauges(&self) {
        match self.store.suspended_plugin_count().await {
            Ok(n) => metrics::gauge!("rapport_plugins_suspended").set(n as f64),
            Err(e) => tracing::warn!(error = %e, "cannot count suspended plugins"),
        }
        let in_use = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |rt| rt.instances_in_use());
        metrics::gauge!("rapport_plugin_instances_in_use").set(in_use as f64);
    }

    /// The tenant's plugins of `kind` that may run now, in manifest order.
    pub async fn active(&self, tenant: &TenantId, kind: PluginKind) -> StoreResult<Vec<EffectivePlugin>> {
        Ok(self
            .effective(tenant)
            .await?
            .into_iter()
            .filter(|p| p.kind == kind && p.runs())
            .collect())
    }

    /// The tenant's connector for a message channel (enabled, not
    /// suspended; see [`crate::manifest::effective::connector_for_channel`])
    /// with its delivery policy.
    pub async fn connector_for_channel(
        &self,
        tenant: &TenantId,
        channel: &str,
    ) -> StoreResult<Option<(EffectivePlugin, crate::manifest::DeliveryPolicy)>> {
        let manifest = self.manifest.current();
        let states = self.store.plugin_states(tenant).await?;
        let mut plugins = effective_plugins(&manifest, tenant.as_str(), &states);
        // An unavailable connector is skipped like a suspended one.
        self.mark_unavailable(&mut plugins);
        Ok(
            crate::manifest::effective::connector_among(&manifest, plugins, channel).and_then(|p| {
                let policy = manifest.plugin(&p.id)?.delivery.clone();
                Some((p, policy))
            }),
        )
    }

    /// Delivers one message through a channel connector. A `delivery-error`
    /// is the connector's answer (codes `plugin_delivery_retryable`,
    /// `plugin_delivery_failed`) and does not count towards suspension;
    /// traps and timeouts do, like for every plugin call (load failures and
    /// `plugin_busy` never do).
    pub async fn deliver(
        &self,
        tenant: &TenantId,
        plugin: &EffectivePlugin,
        message: &crate::runtime::contract::channel::Message,
    ) -> PluginRun<crate::runtime::contract::channel::Receipt> {
        self.run(tenant, plugin, |p, ctx| async move { p.deliver(ctx, message).await })
            .await
    }

    /// One plugin of the tenant's, whatever its status (`None`: the tenant
    /// has no such plugin).
    pub async fn find(&self, tenant: &TenantId, plugin: &str) -> StoreResult<Option<EffectivePlugin>> {
        let manifest = self.manifest.current();
        let state = self.store.plugin_state(tenant, plugin).await?;
        let mut found = effective_plugin(&manifest, tenant.as_str(), plugin, state.as_ref());
        self.mark_unavailable(found.as_mut_slice());
        Ok(found)
    }

    /// The loaded plugin for the manifest's current version of `id`,
    /// waiting for its compilation if it is under way (see [`loader`]).
    async fn load(&self, id: &str) -> Result<Arc<Plugin>, PluginFailure> {
        let manifest = self.manifest.current();
        let spec = manifest
            .plugin(id)
            .ok_or_else(|| failure("plugin_not_found", format!("plugin `{id}` is not in the manifest")))?;
        if let Some(reason) = manifest.artifact_problems.get(id) {
            return Err(failure("plugin_load_failed", reason.clone()));
        }
        self.loader
            .get(spec, || self.runtime().map_err(|f| f.message))
            .await
            .map_err(|message| failure("plugin_load_failed", message))
    }

    /// Admission ahead of a call's preparation: takes `tenant`'s share of
    /// the instance pool for one call of `plugin` *before* the caller reads
    /// the customer's history, so the calls of a flood that wait for
    /// capacity (and are refused `plugin_busy` after their deadline) cost
    /// no database work while they wait. `Ok(None)`: the plugin does not
    /// load; the call itself reports why. `Err`: the run to report instead
    /// of calling (no capacity within the deadline).
    async fn reserve<T>(
        &self,
        tenant: &TenantId,
        plugin: &str,
    ) -> Result<Option<crate::runtime::Reservation>, PluginRun<T>> {
        let Ok(loaded) = self.load(plugin).await else {
            return Ok(None);
        };
        match loaded.reserve(tenant).await {
            Ok(reservation) => Ok(Some(reservation)),
            Err(err) => {
                let fail = call_failure(&err);
                tracing::debug!(tenant = %tenant, plugin, code = %fail.code, "plugin call refused before its preparation");
                Err(PluginRun {
                    plugin: plugin.to_owned(),
                    // Refused before a version was picked.
                    version: String::new(),
                    result: Err(fail),
                    report: CallReport::default(),
                })
            }
        }
    }

    /// [`Self::reserve`] before even the plugin's state is read, when the
    /// caller names one plugin (`only`) that the manifest gives the tenant
    /// with this kind: what the manifest says needs no database. `Ok(None)`
    /// otherwise; the caller reserves once it knows its plugins.
    async fn reserve_ahead<T>(
        &self,
        tenant: &TenantId,
        kind: PluginKind,
        only: Option<&str>,
    ) -> Result<Option<crate::runtime::Reservation>, PluginRun<T>> {
        let Some(id) = only else { return Ok(None) };
        let listed = self
            .manifest
            .current()
            .tenant_plugin(tenant.as_str(), id)
            .is_some_and(|(spec, _)| spec.kind == kind);
        if !listed {
            return Ok(None);
        }
        self.reserve(tenant, id).await
    }

    /// Runs one call of one plugin for `tenant`, with its active version,
    /// and records its outcome.
    async fn run<T, F, Fut>(&self, tenant: &TenantId, plugin: &EffectivePlugin, call: F) -> PluginRun<T>
    where
        F: FnOnce(Arc<Plugin>, CallContext) -> Fut,
        Fut: std::future::Future<Output = (Result<T, CallError>, CallReport)>,
    {
        self.run_for(tenant, plugin, None, call).await
    }

    /// [`PluginService::run`] for one customer: the version that serves
    /// this customer (the staged one for its share, see [`versions`]).
    async fn run_for<T, F, Fut>(
        &self,
        tenant: &TenantId,
        plugin: &EffectivePlugin,
        customer: Option<&str>,
        call: F,
    ) -> PluginRun<T>
    where
        F: FnOnce(Arc<Plugin>, CallContext) -> Fut,
        Fut: std::future::Future<Output = (Result<T, CallError>, CallReport)>,
    {
        let version = match self.version_pick(tenant, &plugin.id).await {
            Ok(pick) => pick.for_customer(tenant, &plugin.id, customer).to_owned(),
            Err(fail) => {
                return PluginRun {
                    plugin: plugin.id.clone(),
                    version: String::new(),
                    result: Err(fail),
                    report: CallReport::default(),
                };
            }
        };
        self.run_version(tenant, plugin, &version, call).await
    }

    /// Runs one call of `version` of one plugin for `tenant` and records its
    /// outcome (a staged version's failures count towards the plugin's
    /// suspension like the active one's).
    async fn run_version<T, F, Fut>(
        &self,
        tenant: &TenantId,
        plugin: &EffectivePlugin,
        version: &str,
        call: F,
    ) -> PluginRun<T>
    where
        F: FnOnce(Arc<Plugin>, CallContext) -> Fut,
        Fut: std::future::Future<Output = (Result<T, CallError>, CallReport)>,
    {
        let loaded = match self.load_version(tenant, &plugin.id, version).await {
            Ok(loaded) => loaded,
            // An artifact that does not load is the operator's problem, not
            // the plugin's behaviour for this tenant: reported, not counted.
            Err(fail) => {
                // The artifact, not the plugin's behaviour: never counted
                // towards its suspension (see `loader`).
                tracing::warn!(tenant = %tenant, plugin = %plugin.id, code = %fail.code, error = %fail.message, "plugin unavailable");
                return PluginRun {
                    plugin: plugin.id.clone(),
                    version: version.to_owned(),
                    result: Err(fail),
                    report: CallReport::default(),
                };
            }
        };
        let (config, secrets) = match self.call_config(tenant, plugin).await {
            Ok(resolved) => resolved,
            Err(fail) => {
                return PluginRun {
                    plugin: plugin.id.clone(),
                    version: version.to_owned(),
                    result: Err(fail),
                    report: CallReport::default(),
                };
            }
        };
        let ctx = CallContext {
            tenant: tenant.clone(),
            config_json: config.to_string(),
            services: self.services.clone(),
        };
        let started_at_ms = now_ms();
        let (mut result, mut report) = call(loaded, ctx).await;
        scrub_secrets(&secrets, &mut result, &mut report);
        let result = match result {
            Ok(value) => {
                if (plugin.consecutive_failures > 0 || plugin.status == PluginStatus::Misconfigured)
                    && let Err(e) = self.store.record_plugin_success(tenant, &plugin.id).await
                {
                    tracing::warn!(plugin = %plugin.id, error = %e, "could not record plugin success");
                }
                Ok(value)
            }
            // The plugin refused the tenant's config: the admin's to fix,
            // so shown as the plugin's status, not counted as misbehaviour.
            Err(CallError::Guest(PluginErrorKind::InvalidConfig, message)) => {
                let fail = failure("plugin_invalid_config", message);
                self.record_config_error(tenant, plugin, &fail.message).await;
                Err(fail)
            }
            // A typed error the plugin returned on purpose (bad input, not
            // fitted yet, ...) is an answer, not misbehaviour: it is
            // reported but does not count towards suspension.
            Err(CallError::Guest(kind, message)) => Err(failure(&format!("plugin_{kind}"), message)),
            // Neither do failures of the host's or other tenants' making
            // (no capacity, cannot instantiate): `counts_toward_suspension`
            // is the one rule.
            Err(err) if !err.counts_toward_suspension() => {
                let fail = call_failure(&err);
                tracing::warn!(tenant = %tenant, plugin = %plugin.id, code = %fail.code, error = %fail.message, "plugin call failed (not counted towards suspension)");
                Err(fail)
            }
            Err(err) => {
                let mut fail = call_failure(&err);
                config_schema::scrub(&mut fail.message, &secrets);
                self.record_failure(tenant, plugin, &fail).await;
                Err(fail)
            }
        };
        self.record_run(tenant, plugin, started_at_ms, &report, result.as_ref().err());
        PluginRun {
            plugin: plugin.id.clone(),
            version: version.to_owned(),
            result,
            report,
        }
    }

    /// The config a call of `plugin` receives: its effective config with
    /// secret references resolved, and the secret values (to scrub from
    /// what comes back). A reference that does not resolve is the plugin's
    /// config error (status `misconfigured`) and fails the call.
    pub(crate) async fn call_config(
        &self,
        tenant: &TenantId,
        plugin: &EffectivePlugin,
    ) -> Result<(serde_json::Value, Vec<String>), PluginFailure> {
        let schema = self
            .manifest
            .current()
            .plugin(&plugin.id)
            .and_then(|s| s.config_schema.clone())
            .filter(config_schema::has_secrets);
        let Some(schema) = schema else {
            return Ok((plugin.config.clone(), Vec::new()));
        };
        match config_schema::resolve_secrets(&schema, &plugin.config, &self.secrets) {
            Ok(resolved) => Ok(resolved),
            Err(message) => {
                let fail = failure("plugin_invalid_config", message);
                self.record_config_error(tenant, plugin, &fail.message).await;
                // A call that never reached the plugin is still a run.
                self.record_run(tenant, plugin, now_ms(), &CallReport::default(), Some(&fail));
                Err(fail)
            }
        }
    }

    /// Queues one call for the run history (never waits; see `run_log`).
    pub(crate) fn record_run(
        &self,
        tenant: &TenantId,
        plugin: &EffectivePlugin,
        started_at_ms: i64,
        report: &CallReport,
        failure: Option<&PluginFailure>,
    ) {
        self.runs.record(
            &self.store,
            NewRun {
                tenant: tenant.clone(),
                plugin_id: plugin.id.clone(),
                version: plugin.version.clone(),
                started_at_ms,
                duration_us: i64::try_from(report.duration.as_micros()).unwrap_or(i64::MAX),
                fuel_used: report.fuel_used.map(|f| i64::try_from(f).unwrap_or(i64::MAX)),
                outcome: if failure.is_none() { "ok" } else { "error" },
                error_code: failure.map(|f| f.code.clone()),
                error: failure.map(|f| f.message.clone()),
                logs: report
                    .logs
                    .iter()
                    .map(|l| RunLogLine {
                        level: format!("{:?}", l.level).to_ascii_lowercase(),
                        message: l.message.clone(),
                        fields: l.fields.clone(),
                    })
                    .collect(),
                logs_dropped: i64::from(report.logs_dropped),
            },
        );
    }

    pub(crate) async fn record_config_error(&self, tenant: &TenantId, plugin: &EffectivePlugin, message: &str) {
        tracing::warn!(tenant = %tenant, plugin = %plugin.id, error = %message, "plugin refused its config (not counted towards suspension)");
        if let Err(e) = self.store.record_plugin_config_error(tenant, &plugin.id, message).await {
            tracing::error!(plugin = %plugin.id, error = %e, "could not record plugin config error");
        }
    }

    async fn record_failure(&self, tenant: &TenantId, plugin: &EffectivePlugin, fail: &PluginFailure) {
        tracing::warn!(tenant = %tenant, plugin = %plugin.id, code = %fail.code, error = %fail.message, "plugin call failed");
        match self
            .store
            .record_plugin_failure(
                tenant,
                &plugin.id,
                &fail.code,
                &fail.message,
                plugin.max_consecutive_failures,
            )
            .await
        {
            Ok(true) => tracing::error!(tenant = %tenant, plugin = %plugin.id, "plugin suspended for this tenant"),
            Ok(false) => {}
            Err(e) => tracing::error!(plugin = %plugin.id, error = %e, "could not record plugin failure"),
        }
    }

    /// The customer and up to [`MAX_HISTORY`] of their interactions, oldest
    /// first, as plugins receive them: the batch job's bulk history read
    /// (two queries) and its conversion, for one customer.
    pub async fn customer_history(&self, tenant: &TenantId, customer_id: &str) -> StoreResult<CustomerHistory> {
        let history = self
            .store
            .scoring_histories(tenant, &[customer_id.to_string()], MAX_HISTORY)
            .await?
            .pop()
            .ok_or(StoreError::NotFound { entity: "customer" })?;
        Ok(scoring::history_to_guest(history, now_ms(), None))
    }

    /// Runs the tenant's active cross-sell plugins (or just `only`).
    pub async fn recommend(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        basket: Option<Vec<types::LineItem>>,
        limit: u32,
        only: Option<&str>,
    ) -> StoreResult<Vec<PluginRun<Vec<crate::runtime::contract::cross_selling::Recommendation>>>> {
        let mut reserved = match self.reserve_ahead(tenant, PluginKind::CrossSell, only).await {
            Ok(r) => r,
            Err(busy) => return Ok(vec![busy]),
        };
        let plugins = self.selected(tenant, PluginKind::CrossSell, only).await?;
        if reserved.is_none()
            && let Some(first) = plugins.first()
        {
            reserved = match self.reserve(tenant, &first.id).await {
                Ok(r) => r,
                Err(busy) => return Ok(vec![busy]),
            };
        }
        let history = self.customer_history(tenant, customer_id).await?;
        let request = crate::runtime::contract::cross_selling::RecommendRequest { history, basket, limit };
        let mut runs = Vec::with_capacity(plugins.len());
        for plugin in &plugins {
            let request = &request;
            let reservation = reserved.take();
            runs.push(
                self.run_for(tenant, plugin, Some(customer_id), |p, ctx| async move {
                    p.session(ctx).with_reservation(reservation).recommend(request).await
                })
                .await,
            );
        }
        self.drop_unknown_skus(tenant, &mut runs).await?;
        Ok(runs)
    }

    /// The active plugins of `kind`, or exactly `only`: an unknown or
    /// other-kind plugin is "not found", a disabled or suspended one a
    /// conflict the caller can act on.
    async fn selected(
        &self,
        tenant: &TenantId,
        kind: PluginKind,
        only: Option<&str>,
    ) -> StoreResult<Vec<EffectivePlugin>> {
        match only {
            None => self.active(tenant, kind).await,
            Some(id) => {
                let plugin = self
                    .find(tenant, id)
                    .await?
                    .filter(|p| p.kind == kind)
                    .ok_or(StoreError::NotFound { entity: "plugin" })?;
                if !plugin.runs() {
                    return Err(StoreError::conflict(
                        "plugin_not_active",
                        format!("plugin `{id}` is {:?} for this tenant", plugin.status).to_lowercase(),
                    ));
                }
                Ok(vec![plugin])
            }
        }
    }
}
