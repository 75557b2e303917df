//! The effective state of a plugin for one tenant: the manifest combined
//! with the admin's stored overrides and the failure/suspension state.
//!
//! Precedence, in order:
//! 1. **Availability** comes from the manifest only: a plugin is available
//!    to a tenant iff the plugin is declared and the tenant's `[[tenant]]`
//!    section lists it. A plugin removed from the manifest (or unlisted for
//!    the tenant) is unavailable whatever the database says; its stored
//!    row is kept, inert, and applies again if the plugin comes back.
//! 2. **Enabled** and **config**: an admin's explicit choice stored through
//!    the API wins over the manifest's tenant defaults (`source: admin`);
//!    clearing it (`DELETE .../config`, `DELETE .../enabled`) falls back to
//!    the manifest (`source: manifest`). A config override replaces the
//!    manifest's config wholesale rather than merging, so what the plugin
//!    sees is exactly one document someone wrote (plus the defaults of the
//!    plugin's `config_schema`, filled in for keys it leaves out).
//! 3. **Suspension** (too many consecutive failures) overrides enabled: a
//!    suspended plugin does not run until an admin resumes it, even if
//!    enabled. A disabled plugin reports `disabled` even while suspended.
//! 4. **Misconfigured**: the plugin itself refused its config
//!    (`invalid-config`), or a secret it references cannot be resolved. It
//!    still runs (so a corrected config, or a secret set meanwhile, shows on
//!    the next call) and is not counted towards suspension (the config is
//!    the admin's, not the plugin's fault); `last_error` says why. A new
//!    config, or a call that succeeds, clears it.
//! 5. **Unavailable** (its artifact is missing, changed or does not load;
//!    see `plugins::loader`) overrides active and suspended, since neither
//!    running nor resuming can help; `last_error` says why. A disabled plugin
//!    still reports `disabled`. This one is not stored: the plugin service
//!    applies it ([`EffectivePlugin::mark_unavailable`]) from its loader.
//!
//! This is a pure function of (manifest, rows) so it can be tested without
//! a database, and so the API and the runtime cannot disagree about it.

use serde::Serialize;
use utoipa::ToSchema;

use super::{Capability, Manifest, PluginKind, PluginSpec, TenantPlugin};
use crate::store::plugins::PluginState;

/// Where an effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SettingSource {
    Manifest,
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginStatus {
    /// Enabled and not suspended: it runs.
    Active,
    Disabled,
    /// Enabled but stopped after too many consecutive failures.
    Suspended,
    /// Enabled, but its artifact is missing, changed or does not load.
    Unavailable,
    /// Enabled and running, but the plugin refused its config (or a secret
    /// reference did not resolve) on its last call: see `last_error`.
    Misconfigured,
}

/// A plugin as one tenant sees it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EffectivePlugin {
    pub id: String,
    pub kind: PluginKind,
    pub version: String,
    pub contract: String,
    pub capabilities: Vec<Capability>,
    pub enabled: bool,
    /// Where `enabled` came from.
    pub source: SettingSource,
    /// The config the plugin receives (a JSON object), with the schema's
    /// defaults filled in; secret fields show their reference.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    pub config_source: SettingSource,
    pub status: PluginStatus,
    pub consecutive_failures: i64,
    pub max_consecutive_failures: u32,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_failure_at: Option<time::OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub suspended_at: Option<time::OffsetDateTime>,
}

impl EffectivePlugin {
    /// Whether the runtime may call it.
    pub fn runs(&self) -> bool {
        matches!(self.status, PluginStatus::Active | PluginStatus::Misconfigured)
    }

    /// The plugin cannot be loaded, for `reason` (rule 4 of the module doc).
    pub fn mark_unavailable(&mut self, reason: String) {
        if self.status != PluginStatus::Disabled {
            self.status = PluginStatus::Unavailable;
            self.last_error = Some(reason);
        }
    }
}

fn combine(spec: &PluginSpec, entry: &TenantPlugin, state: Option<&PluginState>) -> EffectivePlugin {
    let (enabled, source) = match state.and_then(|s| s.enabled) {
        Some(enabled) => (enabled, SettingSource::Admin),
        None => (entry.enabled, SettingSource::Manifest),
    };
    let (config, config_source) = match state.and_then(|s| s.config.clone()) {
        Some(config) => (config, SettingSource::Admin),
        None => (entry.config.clone(), SettingSource::Manifest),
    };
    let config = match &spec.config_schema {
        Some(schema) => super::config_schema::with_defaults(schema, &config),
        None => config,
    };
    let config_error = state.and_then(|s| s.config_error.clone());
    let suspended_at = state.and_then(|s| s.suspended_at);
    let status = if !enabled {
        PluginStatus::Disabled
    } else if suspended_at.is_some() {
        PluginStatus::Suspended
    } else if config_error.is_some() {
        PluginStatus::Misconfigured
    } else {
        PluginStatus::Active
    };
    EffectivePlugin {
        id: spec.id.clone(),
        kind: spec.kind,
        version: spec.version.clone(),
        contract: spec.contract.clone(),
        capabilities: spec.capabilities.iter().copied().collect(),
        enabled,
        source,
        config,
        config_source,
        status,
        consecutive_failures: state.map_or(0, |s| s.consecutive_failures),
        max_consecutive_failures: spec.limits.max_consecutive_failures,
        last_error: config_error.or_else(|| state.and_then(|s| s.last_error.clone())),
        last_failure_at: state.and_then(|s| s.last_failure_at),
        suspended_at,
    }
}

/// Every plugin available to `tenant`, in the order the tenant's section
/// lists them. `states` are the tenant's stored rows (any order; rows for
/// unavailable plugins are ignored).
pub fn effective_plugins(manifest: &Manifest, tenant: &str, states: &[PluginState]) -> Vec<EffectivePlugin> {
    manifest
        .tenant_plugins(tenant)
        .iter()
        .filter_map(|entry| {
            let spec = manifest.plugin(&entry.plugin)?;
            let state = states.iter().find(|s| s.plugin_id == entry.plugin);
            Some(combine(spec, entry, state))
        })
        .collect()
}

/// One plugin for `tenant`; `None` when it is not available to the tenant.
pub fn effective_plugin(
    manifest: &Manifest,
    tenant: &str,
    plugin: &str,
    state: Option<&PluginState>,
) -> Option<EffectivePlugin> {
    let (spec, entry) = manifest.tenant_plugin(tenant, plugin)?;
    Some(combine(spec, entry, state.filter(|s| s.plugin_id == plugin)))
}

/// The tenant's connector for message channel `channel`: the first
/// channel-connector in the tenant's manifest order that lists the channel
/// and runs (enabled, not suspended). `None` when there is none; a disabled
/// or suspended connector is skipped, so another one serving the same
/// channel takes over.
pub fn connector_for_channel(
    manifest: &Manifest,
    tenant: &str,
    states: &[PluginState],
    channel: &str,
) -> Option<EffectivePlugin> {
    connector_among(manifest, effective_plugins(manifest, tenant, states), channel)
}

/// [`connector_for_channel`] among a tenant's effective plugins (in the
/// tenant's manifest order) that the caller has already computed.
pub fn connector_among(manifest: &Manifest, plugins: Vec<EffectivePlugin>, channel: &str) -> Option<EffectivePlugin> {
    plugins.into_iter().find(|p| {
        p.kind == PluginKind::ChannelConnector
            && p.runs()
            && manifest
                .plugin(&p.id)
                .is_some_and(|spec| spec.channels.iter().any(|c| c == channel))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::manifest::{Limits, TenantPlugins};

    fn spec(id: &str) -> PluginSpec {
        PluginSpec {
            id: id.into(),
            kind: PluginKind::ScoringRule,
            version: "0.1.0".into(),
            contract: "rapport:crm@0.1.0".into(),
            artifact: PathBuf::from("/x.wasm"),
            sha256: "0".repeat(64),
            capabilities: BTreeSet::from([Capability::Customers]),
            allowed_hosts: vec![],
            limits: Limits::default(),
            channels: vec![],
            delivery: Default::default(),
            config_schema: None,
        }
    }

    fn manifest() -> Manifest {
        let mut m = Manifest::empty();
        m.plugins = vec![spec("rfm"), spec("churn"), spec("extra")];
        m.tenants = vec![
            TenantPlugins {
                tenant: "acme".into(),
                plugins: vec![
                    TenantPlugin {
                        plugin: "rfm".into(),
                        enabled: true,
                        config: json!({ "window_days": 365 }),
                    },
                    TenantPlugin {
                        plugin: "churn".into(),
                        enabled: false,
                        config: json!({}),
                    },
                ],
                message_rate_per_second: None,
            },
            TenantPlugins {
                tenant: "other".into(),
                plugins: vec![TenantPlugin {
                    plugin: "extra".into(),
                    enabled: true,
                    config: json!({}),
                }],
                message_rate_per_second: None,
            },
        ];
        m
    }

    fn row(plugin: &str) -> PluginState {
        PluginState {
            plugin_id: plugin.into(),
            enabled: None,
            config: None,
            consecutive_failures: 0,
            suspended_at: None,
            last_error: None,
            last_failure_at: None,
            config_error: None,
            updated_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn manifest_defaults_without_rows() {
        let all = effective_plugins(&manifest(), "acme", &[]);
        let ids: Vec<&str> = all.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["rfm", "churn"]);
        assert_eq!(
            (all[0].enabled, all[0].source, all[0].status),
            (true, SettingSource::Manifest, PluginStatus::Active)
        );
        assert_eq!(all[0].config, json!({ "window_days": 365 }));
        assert_eq!(all[0].config_source, SettingSource::Manifest);
        assert_eq!((all[1].enabled, all[1].status), (false, PluginStatus::Disabled));
        // Unknown tenants see nothing; another tenant's plugin is not available.
        assert!(effective_plugins(&manifest(), "nobody", &[]).is_empty());
        assert!(effective_plugin(&manifest(), "acme", "extra", None).is_none());
    }

    #[test]
    fn admin_overrides_win() {
        let mut r = row("rfm");
        r.enabled = Some(false);
        r.config = Some(json!({ "window_days": 30 }));
        let mut c = row("churn");
        c.enabled = Some(true);
        let all = effective_plugins(&manifest(), "acme", &[c, r]);
        assert_eq!(
            (all[0].enabled, all[0].source, all[0].status),
            (false, SettingSource::Admin, PluginStatus::Disabled)
        );
        assert_eq!(
            (all[0].config.clone(), all[0].config_source),
            (json!({ "window_days": 30 }), SettingSource::Admin)
        );
        assert_eq!(
            (all[1].enabled, all[1].source, all[1].status),
            (true, SettingSource::Admin, PluginStatus::Active)
        );
        assert_eq!(all[1].config_source, SettingSource::Manifest);
    }

    #[test]
    fn removed_plugin_is_unavailable_whatever_the_rows_say() {
        let mut m = manifest();
        m.plugins.retain(|p| p.id != "rfm");
        let mut r = row("rfm");
        r.enabled = Some(true);
        let all = effective_plugins(&m, "acme", &[r.clone()]);
        assert_eq!(all.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["churn"]);
        assert!(effective_plugin(&m, "acme", "rfm", Some(&r)).is_none());
    }

    #[test]
    fn suspension_overrides_enabled() {
        let mut r = row("rfm");
        r.consecutive_failures = 5;
        r.suspended_at = Some(time::OffsetDateTime::UNIX_EPOCH);
        r.last_error = Some("trap".into());
        let p = effective_plugin(&manifest(), "acme", "rfm", Some(&r)).unwrap();
        assert_eq!((p.enabled, p.status, p.runs()), (true, PluginStatus::Suspended, false));
        assert_eq!((p.consecutive_failures, p.last_error.as_deref()), (5, Some("trap")));
        // Disabled wins in the reported status; still not runnable.
        r.enabled = Some(false);
        let p = effective_plugin(&manifest(), "acme", "rfm", Some(&r)).unwrap();
        assert_eq!((p.status, p.runs()), (PluginStatus::Disabled, false));
        // A row for another plugin is never applied.
        let p = effective_plugin(&manifest(), "acme", "churn", Some(&r)).unwrap();
        assert_eq!((p.source, p.status), (SettingSource::Manifest, PluginStatus::Disabled));
    }

    #[test]
    fn unavailable_overrides_active_and_suspended_not_disabled() {
        let mut p = effective_plugin(&manifest(), "acme", "rfm", None).unwrap();
        p.mark_unavailable("sha256 mismatch".into());
        assert_eq!((p.status, p.runs()), (PluginStatus::Unavailable, false));
        assert_eq!(p.last_error.as_deref(), Some("sha256 mismatch"));
        let mut r = row("rfm");
        r.suspended_at = Some(time::OffsetDateTime::UNIX_EPOCH);
        let mut p = effective_plugin(&manifest(), "acme", "rfm", Some(&r)).unwrap();
        p.mark_unavailable("gone".into());
        assert_eq!(p.status, PluginStatus::Unavailable);
        let mut p = effective_plugin(&manifest(), "acme", "churn", None).unwrap();
        p.mark_unavailable("gone".into());
        assert_eq!((p.status, p.last_error), (PluginStatus::Disabled, None));
    }

    #[test]
    fn connector_for_channel_skips_suspended_and_disabled() {
        let mut m = manifest();
        for (id, channels) in [
            ("rfm", vec!["email"]),
            ("churn", vec!["email", "sms"]),
            ("extra", vec!["sms"]),
        ] {
            let spec = m.plugins.iter_mut().find(|p| p.id == id).unwrap();
            spec.kind = PluginKind::ChannelConnector;
            spec.channels = channels.into_iter().map(String::from).collect();
        }
        // rfm (active) serves email; churn is disabled by the manifest.
        assert_eq!(connector_for_channel(&m, "acme", &[], "email").unwrap().id, "rfm");
        assert!(connector_for_channel(&m, "acme", &[], "sms").is_none());
        assert!(connector_for_channel(&m, "acme", &[], "push").is_none());
        // rfm suspended, churn enabled by an admin: churn takes over.
        let mut suspended = row("rfm");
        suspended.suspended_at = Some(time::OffsetDateTime::UNIX_EPOCH);
        let mut enabled = row("churn");
        enabled.enabled = Some(true);
        let states = [suspended, enabled];
        assert_eq!(connector_for_channel(&m, "acme", &states, "email").unwrap().id, "churn");
        assert_eq!(connector_for_channel(&m, "acme", &states, "sms").unwrap().id, "churn");
        // Another tenant never sees acme's connectors.
        assert_eq!(connector_for_channel(&m, "other", &[], "sms").unwrap().id, "extra");
        assert!(connector_for_channel(&m, "other", &[], "email").is_none());
    }
}
