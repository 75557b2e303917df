//! Loading plugins: every plugin of the manifest is compiled when the
//! manifest is loaded (start-up, each reload), in the background, so that
//! the server serves at once and no tenant's call pays for a compilation
//! (a Python component takes tens of seconds). `/readyz` answers 200 once
//! nothing is left compiling.
//!
//! A plugin whose artifact is missing, no longer matches its sha256, or does
//! not compile or link is **unavailable**, with the reason: visible to
//! tenants (`GET /v1/plugins`), to operators (`/v1/admin/manifest`, the
//! `rapport_plugin_unavailable` gauge, an error log line), and never a reason
//! for the rest of the server not to serve. Its calls fail with
//! `plugin_load_failed` and never count towards its suspension: the operator
//! broke it, not the plugin. A reload retries every unavailable plugin, so
//! restoring the file (or fixing the digest) makes it available again.
//!
//! One load per (plugin, digest), shared: a call arriving while its plugin
//! compiles waits for that compilation instead of starting another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::manifest::{Manifest, PluginSpec};
use crate::runtime::{Plugin, Runtime};

/// Gauge, labelled `plugin`: 1 while the plugin is unavailable, else 0.
pub const UNAVAILABLE_METRIC: &str = "rapport_plugin_unavailable";

/// Where a plugin's load stands.
#[derive(Clone)]
pub enum LoadState {
    Compiling,
    Ready(Arc<Plugin>),
    /// Why it cannot run (no server path in it: tenants see it).
    Unavailable(String),
}

/// [`LoadState`] as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadStatus {
    /// Being compiled; calls wait for it.
    Loading,
    Ready,
    /// Missing or changed artifact, or it does not compile or link.
    Unavailable,
}

struct Entry {
    digest: String,
    state: watch::Receiver<LoadState>,
}

/// The plugins loaded (or loading) by id, for the digest the manifest named
/// when the load started.
#[derive(Default)]
pub struct Loader {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Loader {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Single inserts and removals: a panic cannot leave the map
        // inconsistent, so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts loading every plugin of `manifest` that is not loaded or
    /// loading for its current digest; a plugin whose artifact the manifest
    /// found missing or changed is unavailable at once. `reload` (the
    /// manifest was just read again, every artifact verified) also retries
    /// the unavailable ones: the operator may have fixed the file. Entries
    /// of plugins no longer in the manifest are dropped.
    pub fn load_all(&self, manifest: &Manifest, runtime: impl Fn() -> Result<Runtime, String>, reload: bool) {
        let mut entries = self.lock();
        entries.retain(|id, _| manifest.plugin(id).is_some());
        for spec in &manifest.plugins {
            if let Some(reason) = manifest.artifact_problems.get(&spec.id) {
                let known = entries.get(&spec.id).is_some_and(|e| {
                    e.digest == spec.sha256 && matches!(&*e.state.borrow(), LoadState::Unavailable(r) if r == reason)
                });
                if !known {
                    entries.insert(spec.id.clone(), unavailable(spec, reason.clone()));
                }
                continue;
            }
            let current = entries.get(&spec.id).is_some_and(|e| {
                e.digest == spec.sha256 && !(reload && matches!(*e.state.borrow(), LoadState::Unavailable(_)))
            });
            if !current {
                let entry = start(spec, runtime());
                entries.insert(spec.id.clone(), entry);
            }
        }
    }

    /// The loaded plugin for `spec`, waiting for a compilation under way and
    /// starting one if none was (a plugin added by a reload that a call
    /// reaches first).
    pub async fn get(
        &self,
        spec: &PluginSpec,
        runtime: impl Fn() -> Result<Runtime, String>,
    ) -> Result<Arc<Plugin>, String> {
        let mut state = {
            let mut entries = self.lock();
            match entries.get(&spec.id) {
                Some(entry) if entry.digest == spec.sha256 => entry.state.clone(),
                _ => {
                    let entry = start(spec, runtime());
                    let state = entry.state.clone();
                    entries.insert(spec.id.clone(), entry);
                    state
                }
            }
        };
        let done = state
            .wait_for(|s| !matches!(s, LoadState::Compiling))
            .await
            .map(|s| s.clone());
        match done {
            Ok(LoadState::Ready(plugin)) => Ok(plugin),
            Ok(LoadState::Unavailable(reason)) => Err(reason),
            // The loader task ended without an answer (it panicked).
            Ok(LoadState::Compiling) | Err(_) => Err(format!("plugin `{}`: loading it failed", spec.id)),
        }
    }

    /// How `id` stands: `None` when no load was started for it.
    pub fn status(&self, id: &str) -> Option<(LoadStatus, Option<String>)> {
        let entries = self.lock();
        let entry = entries.get(id)?;
        let state = entry.state.borrow();
        Some(match &*state {
            LoadState::Compiling => (LoadStatus::Loading, None),
            LoadState::Ready(_) => (LoadStatus::Ready, None),
            LoadState::Unavailable(reason) => (LoadStatus::Unavailable, Some(reason.clone())),
        })
    }

    /// Why `id` cannot run for the manifest's digest `digest`, if it cannot.
    pub fn unavailable(&self, id: &str, digest: &str) -> Option<String> {
        let entries = self.lock();
        let entry = entries.get(id).filter(|e| e.digest == digest)?;
        match &*entry.state.borrow() {
            LoadState::Unavailable(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    /// The plugins of `manifest` not yet loaded or marked unavailable, in
    /// manifest order: what `/readyz` waits for.
    pub fn pending(&self, manifest: &Manifest) -> Vec<String> {
        let entries = self.lock();
        manifest
            .plugins
            .iter()
            .filter(|spec| {
                entries
                    .get(&spec.id)
                    .is_none_or(|e| e.digest != spec.sha256 || matches!(*e.state.borrow(), LoadState::Compiling))
            })
            .map(|spec| spec.id.clone())
            .collect()
    }
}

/// Records that `spec` cannot be loaded, for `reason`.
fn unavailable(spec: &PluginSpec, reason: String) -> Entry {
    tracing::error!(plugin = %spec.id, error = %reason, "plugin unavailable");
    metrics::gauge!(UNAVAILABLE_METRIC, "plugin" => spec.id.clone()).set(1.0);
    let (_, rx) = watch::channel(LoadState::Unavailable(reason));
    Entry {
        digest: spec.sha256.clone(),
        state: rx,
    }
}

/// Spawns the load of one plugin version (reading, verifying and compiling
/// are blocking work, so off the async workers) and returns its entry.
fn start(spec: &PluginSpec, runtime: Result<Runtime, String>) -> Entry {
    let (tx, rx) = watch::channel(LoadState::Compiling);
    let entry = Entry {
        digest: spec.sha256.clone(),
        state: rx,
    };
    let id = spec.id.clone();
    let finish = move |state: LoadState| {
        match &state {
            LoadState::Unavailable(reason) => {
                tracing::error!(plugin = %id, error = %reason, "plugin unavailable");
                metrics::gauge!(UNAVAILABLE_METRIC, "plugin" => id.clone()).set(1.0);
            }
            _ => {
                tracing::info!(plugin = %id, "plugin loaded");
                metrics::gauge!(UNAVAILABLE_METRIC, "plugin" => id.clone()).set(0.0);
            }
        }
        // No receiver left only means the entry was replaced meanwhile.
        let _ = tx.send(state);
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(reason) => {
            finish(LoadState::Unavailable(reason));
            return entry;
        }
    };
    let spec = spec.clone();
    tokio::spawn(async move {
        let id = spec.id.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&runtime, &spec))
            .await
            .unwrap_or_else(|join| Err(format!("plugin `{id}`: loader task failed: {join}")));
        finish(match loaded {
            Ok(plugin) => LoadState::Ready(plugin),
            Err(reason) => LoadState::Unavailable(reason),
        });
    });
    entry
}

/// Reads, verifies (sha256), compiles and links one plugin: what the server
/// does at load and `rapport manifest check` does for every plugin.
pub fn load(runtime: &Runtime, spec: &PluginSpec) -> Result<Arc<Plugin>, String> {
    // The path stays out of the reason: tenants read it.
    let wasm =
        std::fs::read(&spec.artifact).map_err(|e| format!("plugin `{}`: its artifact cannot be read: {e}", spec.id))?;
    runtime.load(super::definition(spec, wasm)).map_err(|e| e.to_string())
}
