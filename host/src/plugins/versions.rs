//! Which version of a plugin serves a call, and loading uploaded versions.
//!
//! A plugin id may have several versions at once: the manifest's entry (the
//! declarative default) and components a platform admin uploaded for that
//! id (`store::artifacts`, allowed per tenant). Per tenant, the database
//! row of `store::plugin_versions` says which is active (none: the
//! manifest's) and which, if any, is staged on a share of the customers.
//! That row is read once per call (or per batch chunk), so a stage, promote
//! or rollback applies at once on every node.
//!
//! A customer is served the staged version when a hash of (tenant, plugin,
//! customer) falls below the staged percentage: stable, so a customer
//! always sees the same version, and monotone, so raising the share only
//! adds customers. Calls without a customer (fits, deliveries, reward
//! schemes) run the active version.
//!
//! An uploaded version runs with the manifest entry's limits, allowed hosts
//! and per-tenant config; its own declared capabilities decide what it may
//! import. Compiled once per node per (id, version): an artifact is never
//! changed once stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::{PluginFailure, PluginService, failure};
use crate::manifest::PluginSpec;
use crate::runtime::{Capability, Plugin, PluginDefinition, PluginKind, Runtime};
use crate::store::TenantId;
use crate::store::artifacts::Artifact;
use crate::store::plugin_versions::VersionState;

/// The versions of one plugin a tenant runs, as read for one call or chunk.
#[derive(Debug, Clone)]
pub struct VersionPick {
    pub active: String,
    pub staged: Option<(String, i64)>,
}

impl VersionPick {
    pub fn new(manifest_version: &str, state: &VersionState) -> VersionPick {
        VersionPick {
            active: state
                .active_version
                .clone()
                .unwrap_or_else(|| manifest_version.to_owned()),
            staged: state
                .staged_version
                .clone()
                .filter(|_| state.staged_percent > 0)
                .map(|v| (v, state.staged_percent)),
        }
    }

    /// The version that serves `customer` (the active one without a customer).
    pub fn for_customer(&self, tenant: &TenantId, plugin: &str, customer: Option<&str>) -> &str {
        match (&self.staged, customer) {
            (Some((staged, percent)), Some(customer)) if bucket(tenant, plugin, customer) < *percent => staged,
            _ => &self.active,
        }
    }
}

/// A customer's stable bucket, 0-99, for one tenant's plugin. sha256, not
/// the std hasher: the answer must be the same on every node and release.
pub fn bucket(tenant: &TenantId, plugin: &str, customer: &str) -> i64 {
    let mut hasher = Sha256::new();
    for part in [tenant.as_str(), plugin, customer] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::try_from(u64::from_be_bytes(first) % 100).unwrap_or(0)
}

/// (plugin id, version) -> the artifact's metadata and its compiled plugin.
type Loaded = HashMap<(String, String), (Artifact, Arc<Plugin>)>;

/// Uploaded versions compiled on this node, by (plugin id, version).
#[derive(Default)]
pub struct UploadCache {
    loaded: Mutex<Loaded>,
}

impl UploadCache {
    fn get(&self, plugin: &str, version: &str) -> Option<(Artifact, Arc<Plugin>)> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(plugin.to_owned(), version.to_owned()))
            .cloned()
    }

    fn put(&self, artifact: Artifact, plugin: Arc<Plugin>) {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner()).insert(
            (artifact.plugin_id.clone(), artifact.version.clone()),
            (artifact, plugin),
        );
    }
}

/// Capability names as the runtime takes them; an unknown name is refused
/// with the name.
pub fn parse_capabilities(names: &[String]) -> Result<std::collections::BTreeSet<Capability>, String> {
    names
        .iter()
        .map(|n| Capability::parse(n).ok_or_else(|| format!("unknown capability `{n}`")))
        .collect()
}

/// The runtime's definition of an uploaded version, run with the manifest
/// entry's limits and allowed hosts.
pub fn upload_definition(spec: &PluginSpec, artifact: &Artifact, wasm: Vec<u8>) -> Result<PluginDefinition, String> {
    let kind = PluginKind::parse(&artifact.kind).ok_or_else(|| format!("unknown kind `{}`", artifact.kind))?;
    if kind != spec.kind {
        return Err(format!(
            "version {} of `{}` is a {kind} plugin; the manifest declares a {}",
            artifact.version, spec.id, spec.kind
        ));
    }
    Ok(PluginDefinition {
        id: spec.id.clone(),
        kind,
        contract: artifact.contract.clone(),
        wasm,
        sha256: artifact.digest.clone(),
        capabilities: parse_capabilities(&artifact.capabilities)?,
        allowed_hosts: spec.allowed_hosts.clone(),
        limits: super::runtime_limits(&spec.limits),
    })
}

/// Compiles a definition off the async workers.
pub async fn compile(runtime: Runtime, definition: PluginDefinition) -> Result<Arc<Plugin>, String> {
    let id = definition.id.clone();
    tokio::task::spawn_blocking(move || runtime.load(definition).map_err(|e| e.to_string()))
        .await
        .unwrap_or_else(|join| Err(format!("plugin `{id}`: loading it failed: {join}")))
}

impl PluginService {
    /// The versions of `plugin` the tenant runs now (one database read).
    pub async fn version_pick(&self, tenant: &TenantId, plugin: &str) -> Result<VersionPick, PluginFailure> {
        let manifest = self.manifest.current();
        let spec = manifest
            .plugin(plugin)
            .ok_or_else(|| failure("plugin_not_found", format!("plugin `{plugin}` is not in the manifest")))?;
        let state = self.store.plugin_version_state(tenant, plugin).await.map_err(|e| {
            tracing::error!(tenant = %tenant, plugin, error = %e, "cannot read the plugin's version state");
            failure("plugin_unavailable", "the plugin's version could not be read")
        })?;
        Ok(VersionPick::new(&spec.version, &state))
    }

    /// The tenant's active version of `plugin`, loaded (reward schemes:
    /// their calls are not assigned by customer).
    pub async fn load_active(&self, tenant: &TenantId, plugin: &str) -> Result<Arc<Plugin>, PluginFailure> {
        let pick = self.version_pick(tenant, plugin).await?;
        self.load_version(tenant, plugin, &pick.active).await
    }

    /// The loaded `version` of `plugin` for `tenant`: the manifest's entry
    /// when it names that version, else an upload the tenant may run.
    pub async fn load_version(
        &self,
        tenant: &TenantId,
        plugin: &str,
        version: &str,
    ) -> Result<Arc<Plugin>, PluginFailure> {
        let manifest = self.manifest.current();
        let spec = manifest
            .plugin(plugin)
            .ok_or_else(|| failure("plugin_not_found", format!("plugin `{plugin}` is not in the manifest")))?;
        if spec.version == version {
            return self.load(plugin).await;
        }
        let unavailable = || {
            failure(
                "plugin_load_failed",
                format!("version {version} of `{plugin}` is not available to this tenant"),
            )
        };
        if let Some((artifact, loaded)) = self.uploads.get(plugin, version) {
            // Cached per node; the tenant's permission is checked each time.
            return if artifact.allows(tenant) {
                Ok(loaded)
            } else {
                Err(unavailable())
            };
        }
        let (artifact, wasm) = self
            .store
            .tenant_artifact_bytes(tenant, plugin, version)
            .await
            .map_err(|e| {
                tracing::error!(tenant = %tenant, plugin, version, error = %e, "cannot read an uploaded version");
                failure("plugin_load_failed", "the uploaded version could not be read")
            })?
            .ok_or_else(unavailable)?;
        let definition = upload_definition(spec, &artifact, wasm).map_err(|m| failure("plugin_load_failed", m))?;
        let loaded = compile(self.runtime()?, definition)
            .await
            .map_err(|m| failure("plugin_load_failed", m))?;
        self.uploads.put(artifact, loaded.clone());
        Ok(loaded)
    }

    /// Every version of `plugin` the tenant may run: the manifest's first,
    /// then its uploads, oldest first.
    pub async fn available_versions(
        &self,
        tenant: &TenantId,
        plugin: &str,
    ) -> crate::store::StoreResult<Vec<AvailableVersion>> {
        let manifest = self.manifest.current();
        let mut versions = Vec::new();
        if let Some(spec) = manifest.plugin(plugin) {
            versions.push(AvailableVersion {
                version: spec.version.clone(),
                source: VersionSource::Manifest,
                digest: spec.sha256.clone(),
                capabilities: spec.capabilities.iter().map(|c| c.as_str().to_owned()).collect(),
                uploaded_at: None,
            });
        }
        for artifact in self.store.tenant_artifacts(tenant, plugin).await? {
            // The manifest wins for a version it names (see the API docs).
            if versions.iter().any(|v| v.version == artifact.version) {
                continue;
            }
            versions.push(AvailableVersion {
                version: artifact.version,
                source: VersionSource::Upload,
                digest: artifact.digest,
                capabilities: artifact.capabilities,
                uploaded_at: Some(artifact.uploaded_at),
            });
        }
        Ok(versions)
    }
}

/// Where a version comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VersionSource {
    Manifest,
    Upload,
}

/// One version of a plugin a tenant may run.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AvailableVersion {
    pub version: String,
    pub source: VersionSource,
    /// sha256 of the component.
    pub digest: String,
    pub capabilities: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub uploaded_at: Option<time::OffsetDateTime>,
}
