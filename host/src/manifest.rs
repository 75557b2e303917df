//! The plugin manifest (TOML): which plugins exist, which artifact (pinned by
//! SHA-256) each one is, what host capabilities it may import, its resource
//! limits, and which tenants may use it with what default config.
//!
//! Loading is strict on purpose. A manifest decides what third-party code
//! runs next to tenant data, so every field is checked (`deny_unknown_fields`
//! everywhere, ranges, host patterns, digests) and *every* problem is
//! reported at once as `file:line:column: field: message`, so an operator can
//! fix a manifest in one pass instead of one error per restart.
//!
//! The loaded manifest lives in a [`ManifestHandle`] (an `ArcSwap`), so it can
//! be reloaded at run time (SIGHUP, `POST /v1/admin/manifest/reload`) without
//! a restart; a reload that fails keeps the previous manifest and records the
//! error. How the manifest combines with the per-tenant state that admins set
//! through the API is described in [`effective`].

pub mod config_schema;
pub mod effective;
mod parse;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

pub use crate::runtime::HostPattern;

/// WIT contract versions this host can run. A plugin names the one it was
/// built against; anything else is refused at load instead of failing at
/// instantiation time on some tenant's request.
pub const SUPPORTED_CONTRACTS: &[&str] = &["rapport:crm@0.1.0"];

/// A loaded, validated manifest. Spans are dropped; paths are absolute.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// The file it was loaded from (empty for [`Manifest::empty`]).
    pub path: PathBuf,
    /// Plugins in manifest order.
    pub plugins: Vec<PluginSpec>,
    /// Tenants named by the manifest, in manifest order.
    pub tenants: Vec<TenantPlugins>,
    #[serde(with = "time::serde::rfc3339")]
    pub loaded_at: time::OffsetDateTime,
    /// Plugins whose artifact was missing or did not match its sha256 when
    /// the manifest was read, with the reason as tenants may read it (no
    /// server path). Only [`Manifest::load_serving`] leaves such plugins in;
    /// the server serves without them (see `plugins::loader`).
    #[serde(skip)]
    pub artifact_problems: std::collections::BTreeMap<String, String>,
}

/// One `[[plugin]]` entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PluginSpec {
    pub id: String,
    pub kind: PluginKind,
    /// The plugin's own semantic version.
    pub version: String,
    /// The WIT package it targets, e.g. `rapport:crm@0.1.0`.
    pub contract: String,
    /// Absolute path of the component file.
    #[schema(value_type = String)]
    pub artifact: PathBuf,
    /// Lower-case hex SHA-256 of the artifact, verified at load.
    pub sha256: String,
    pub capabilities: BTreeSet<Capability>,
    #[schema(value_type = Vec<String>)]
    pub allowed_hosts: Vec<HostPattern>,
    pub limits: Limits,
    /// The message channels a `channel-connector` serves (e.g. `email`);
    /// empty for every other kind.
    pub channels: Vec<String>,
    /// How the outbox retries and paces this connector's deliveries
    /// (defaults for other kinds, which never deliver).
    pub delivery: DeliveryPolicy,
    /// JSON Schema of the per-tenant config (`[plugin.config_schema]`);
    /// `None`: the plugin declares none and any JSON object is accepted.
    #[schema(value_type = Option<Object>)]
    pub config_schema: Option<serde_json::Value>,
}

impl PluginSpec {
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }
}

/// Plugin kinds and capabilities are the runtime's own types: one
/// definition for what the manifest declares and what the runtime enforces.
pub use crate::runtime::{Capability, PluginKind};

/// Per-call and per-tenant resource limits. Every field is optional in the
/// manifest; the defaults are deliberately tight, since a plugin that needs
/// more can say so and one that does not should not get it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Limits {
    /// Wall-clock budget of one call (epoch interruption).
    pub timeout_ms: u64,
    /// Optional deterministic instruction budget per call.
    pub fuel: Option<u64>,
    /// Linear memory cap per instance.
    pub memory_mb: u64,
    /// Wasm stack cap.
    pub stack_kb: u64,
    /// Largest result a call may return (serialized).
    pub max_output_bytes: u64,
    /// Log bytes a call may emit before further logs are dropped.
    pub max_log_bytes: u64,
    /// Consecutive failures (per tenant) after which the plugin is suspended
    /// for that tenant until an admin resumes it.
    pub max_consecutive_failures: u32,
    /// Total key-value storage per plugin per tenant.
    pub kv_max_bytes: u64,
    /// Cap on one outbound HTTP request, connect to last body byte
    /// (capability `outbound-http`; the call's `timeout_ms` still bounds it).
    pub http_timeout_ms: u64,
    /// Largest outbound HTTP response body a request may read.
    pub http_max_response_bytes: u64,
    /// Cap on one SMTP submission, connection to final reply (capability
    /// `outbound-smtp`; the call's `timeout_ms` still bounds it).
    pub smtp_timeout_ms: u64,
    /// Largest message one SMTP submission may send.
    pub smtp_max_message_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 200,
            fuel: None,
            memory_mb: 64,
            stack_kb: 512,
            max_output_bytes: 1024 * 1024,
            max_log_bytes: 16 * 1024,
            max_consecutive_failures: 5,
            kv_max_bytes: 1024 * 1024,
            // The runtime's own defaults, so an entry that sets none of them
            // behaves as before these keys existed.
            http_timeout_ms: 5_000,
            http_max_response_bytes: 1024 * 1024,
            smtp_timeout_ms: 10_000,
            smtp_max_message_bytes: 10 * 1024 * 1024,
        }
    }
}

/// `[plugin.delivery]` of a channel connector: the outbox's retry policy and
/// pace for its messages. Every field is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeliveryPolicy {
    /// Attempts in one retry window before a retryable failure becomes `dead`.
    pub max_attempts: u32,
    /// Length of the retry window, from the message's creation (or replay).
    pub max_age_s: u64,
    /// Backoff before retry n is random in [0, min(max, initial * 2^(n-1))]
    /// ("full jitter"), so retries of many messages spread out.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Deliveries per second through this connector, all tenants together,
    /// on each node (limits are per node). `None`: unlimited.
    pub rate_per_second: Option<u32>,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            max_attempts: 8,
            max_age_s: 86_400,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 600_000,
            rate_per_second: None,
        }
    }
}

/// The plugins one tenant may use, with the manifest's defaults.
#[derive(Debug, Clone, Serialize)]
pub struct TenantPlugins {
    pub tenant: String,
    pub plugins: Vec<TenantPlugin>,
    /// Outbound messages per second for this tenant, all channels together,
    /// on each node. `None`: unlimited.
    pub message_rate_per_second: Option<u32>,
}

/// One `[[tenant.plugin]]` entry: listing a plugin makes it available to the
/// tenant; `enabled` is the default an admin may override.
#[derive(Debug, Clone, Serialize)]
pub struct TenantPlugin {
    pub plugin: String,
    pub enabled: bool,
    /// Always a JSON object.
    pub config: serde_json::Value,
}

/// One problem in a manifest, located precisely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ManifestIssue {
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in bytes.
    pub column: usize,
    /// Field path such as `plugin[1].capabilities[2]` (empty when the
    /// problem is the document's syntax).
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ManifestIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: ", self.path.display(), self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: cannot read: {source}", path = path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// Every problem found, sorted by position; one per line when displayed.
    #[error("{}", issues_text(errors))]
    Invalid { errors: Vec<ManifestIssue> },
    #[error("no plugin manifest is configured (set [plugins] manifest in the server config)")]
    NotConfigured,
}

fn issues_text(issues: &[ManifestIssue]) -> String {
    issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

impl ManifestError {
    /// The located issues (empty for read errors).
    pub fn issues(&self) -> &[ManifestIssue] {
        match self {
            ManifestError::Invalid { errors } => errors,
            _ => &[],
        }
    }
}

impl Manifest {
    /// A manifest with no plugins, for servers configured without one.
    pub fn empty() -> Manifest {
        Manifest {
            path: PathBuf::new(),
            plugins: Vec::new(),
            tenants: Vec::new(),
            loaded_at: time::OffsetDateTime::now_utc(),
            artifact_problems: Default::default(),
        }
    }

    /// Reads, parses and validates a manifest, including reading every
    /// artifact and verifying its SHA-256. Relative artifact paths resolve
    /// against the manifest's directory.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Manifest::parse(path, &text)
    }

    /// Like [`Manifest::load`] with the text already read; `path` is used
    /// for messages and to resolve relative artifact paths.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        match parse::parse(path, text) {
            Ok((manifest, artifact_issues)) if artifact_issues.is_empty() => Ok(manifest),
            Ok((_, errors)) | Err(errors) => Err(ManifestError::Invalid { errors }),
        }
    }

    /// Like [`Manifest::load`], except that a plugin whose artifact is
    /// missing or does not match its sha256 stays in the manifest, its
    /// problem returned beside it: what a server runs with, marking that
    /// plugin unavailable instead of refusing to start (see
    /// `plugins::loader`).
    pub fn load_serving(path: &Path) -> Result<(Manifest, Vec<ManifestIssue>), ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        parse::parse(path, &text).map_err(|errors| ManifestError::Invalid { errors })
    }

    pub fn plugin(&self, id: &str) -> Option<&PluginSpec> {
        self.plugins.iter().find(|p| p.id == id)
    }

    /// The plugins the manifest makes available to `tenant` (empty when the
    /// tenant is not named).
    pub fn tenant_plugins(&self, tenant: &str) -> &[TenantPlugin] {
        self.tenants
            .iter()
            .find(|t| t.tenant == tenant)
            .map_or(&[], |t| t.plugins.as_slice())
    }

    /// The tenant's `message_rate_per_second` (`None`: unlimited or not named).
    pub fn tenant_message_rate(&self, tenant: &str) -> Option<u32> {
        self.tenants
            .iter()
            .find(|t| t.tenant == tenant)
            .and_then(|t| t.message_rate_per_second)
    }

    /// A plugin as available to one tenant: its spec and the tenant's
    /// manifest defaults. `None` when the tenant may not use it.
    pub fn tenant_plugin(&self, tenant: &str, plugin: &str) -> Option<(&PluginSpec, &TenantPlugin)> {
        let entry = self.tenant_plugins(tenant).iter().find(|p| p.plugin == plugin)?;
        Some((self.plugin(plugin)?, entry))
    }
}

/// Lower-case hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// [`Manifest::load_serving`], logging each artifact problem (the plugin
/// service then reports that plugin unavailable).
fn serving(path: &Path) -> Result<Manifest, ManifestError> {
    let (manifest, artifact_issues) = Manifest::load_serving(path)?;
    for issue in &artifact_issues {
        tracing::error!(issue = %issue, "plugin artifact unusable; that plugin will be unavailable");
    }
    Ok(manifest)
}

/// Why the last reload failed (the previous manifest stayed in force).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReloadFailure {
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
    /// The whole error, one issue per line.
    pub message: String,
    pub issues: Vec<ManifestIssue>,
}

/// The current manifest, swappable at run time. Readers take a cheap
/// snapshot (`current()`) and keep using it for the whole call even if a
/// reload happens meanwhile.
pub struct ManifestHandle {
    path: Option<PathBuf>,
    current: ArcSwap<Manifest>,
    last_error: Mutex<Option<ReloadFailure>>,
    /// Serialises reloads so two concurrent ones cannot finish out of order.
    reloading: Mutex<()>,
}

impl std::fmt::Debug for ManifestHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestHandle")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ManifestHandle {
    /// No manifest configured: no plugins, and reloading is an error.
    pub fn empty() -> ManifestHandle {
        ManifestHandle::with(None, Manifest::empty())
    }

    /// Loads the manifest at `path` (if any). Start-up fails on an invalid
    /// manifest: better not to start than to start with a configuration
    /// nobody wrote. A missing or changed artifact is not that: it costs one
    /// plugin, not the server (see [`Manifest::load_serving`]).
    pub fn open(path: Option<&Path>) -> Result<ManifestHandle, ManifestError> {
        match path {
            None => Ok(ManifestHandle::empty()),
            Some(path) => Ok(ManifestHandle::with(Some(path.to_path_buf()), serving(path)?)),
        }
    }

    /// Wraps an already loaded manifest; reloads re-read `manifest.path`.
    pub fn new(manifest: Manifest) -> ManifestHandle {
        let path = (!manifest.path.as_os_str().is_empty()).then(|| manifest.path.clone());
        ManifestHandle::with(path, manifest)
    }

    fn with(path: Option<PathBuf>, manifest: Manifest) -> ManifestHandle {
        ManifestHandle {
            path,
            current: ArcSwap::from_pointee(manifest),
            last_error: Mutex::new(None),
            reloading: Mutex::new(()),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn current(&self) -> Arc<Manifest> {
        self.current.load_full()
    }

    /// Re-reads the manifest file. On success the new manifest replaces the
    /// old one and the last error is cleared; on failure the old one stays
    /// and the error is recorded for `GET /v1/admin/manifest`.
    pub fn reload(&self) -> Result<Arc<Manifest>, ManifestError> {
        let Some(path) = &self.path else {
            return Err(ManifestError::NotConfigured);
        };
        // A poisoned lock only means an earlier reload panicked; the data it
        // guards is still consistent (it is swapped atomically).
        let _guard = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        match serving(path) {
            Ok(manifest) => {
                let manifest = Arc::new(manifest);
                self.current.store(manifest.clone());
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(manifest)
            }
            Err(err) => {
                let failure = ReloadFailure {
                    at: time::OffsetDateTime::now_utc(),
                    message: err.to_string(),
                    issues: err.issues().to_vec(),
                };
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(failure);
                Err(err)
            }
        }
    }

    /// The error of the last reload, if it failed.
    pub fn last_error(&self) -> Option<ReloadFailure> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
