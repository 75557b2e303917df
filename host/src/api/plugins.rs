//! Plugins per tenant (`/v1/plugins`) and the manifest itself
//! (`/v1/admin/manifest`).
//!
//! Tenants see only the plugins the manifest makes available to them, with
//! their effective state (see `manifest::effective` for the precedence
//! rules) and, one at a time, their config schema and recent runs; tenant
//! admins enable, disable, configure (validated against the plugin's
//! `config_schema`, see `manifest::config_schema`) and resume them. Platform
//! admins inspect and reload the manifest. Every change is audited
//! (`store::audit`).

use axum::extract::State;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Auth, Json, Path};
use super::{ApiResult, AppState, Error};
use crate::manifest::effective::{EffectivePlugin, effective_plugin};
use crate::manifest::{Limits, Manifest, ManifestError, PluginSpec, ReloadFailure, config_schema};
use crate::plugins::loader::LoadStatus;
use crate::store::TenantId;
use crate::store::audit::AuditEntry;
use crate::store::plugin_runs::PluginRunRecord;
use crate::store::plugins::{PluginFailure, PluginState};

/// Largest accepted config override (compact JSON).
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// Failures shown by `GET /v1/plugins/{id}`.
const RECENT_FAILURES: i64 = 20;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plugins))
        .routes(routes!(get_plugin))
        .routes(routes!(enable_plugin))
        .routes(routes!(disable_plugin))
        .routes(routes!(reset_enabled))
        .routes(routes!(set_config, reset_config))
        .routes(routes!(resume_plugin))
        .routes(routes!(list_runs))
        .routes(routes!(get_manifest))
        .routes(routes!(reload_manifest))
}

/// A plugin with its limits and recent failures.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginDetail {
    #[serde(flatten)]
    pub plugin: EffectivePlugin,
    pub limits: Limits,
    /// The JSON Schema of the plugin's config (from the manifest's
    /// `[plugin.config_schema]`), to draw a form from; null when the plugin
    /// declares none. Properties marked `"x-secret": true` or `"format":
    /// "secret"` take a reference, `{"secret": "env:RAPPORT_SECRET_NAME"}` or
    /// `{"secret": "file:NAME"}`.
    #[schema(value_type = Option<Object>)]
    pub config_schema: Option<serde_json::Value>,
    /// Newest first.
    pub recent_failures: Vec<PluginFailure>,
}

/// A plugin's recent runs for the caller's tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginRuns {
    /// Newest first; at most the last 100 are kept per tenant and plugin.
    pub items: Vec<PluginRunRecord>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ManifestSummary {
    /// The manifest file; null when none is configured.
    pub path: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub loaded_at: time::OffsetDateTime,
    pub plugins: Vec<ManifestPlugin>,
    pub tenants: Vec<TenantSummary>,
    /// Why the last reload failed, if it did (the manifest above stayed in force).
    pub last_reload_error: Option<ReloadFailure>,
}

/// A manifest entry with how its load stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ManifestPlugin {
    #[serde(flatten)]
    pub spec: PluginSpec,
    /// `loading` (being compiled), `ready`, or `unavailable` (missing or
    /// changed artifact, or it does not compile or link).
    pub status: LoadStatus,
    /// Why it is unavailable.
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantSummary {
    pub id: String,
    pub plugins: Vec<TenantPluginSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPluginSummary {
    pub id: String,
    /// The manifest's default (admins may override it per tenant).
    pub enabled: bool,
}

/// The plugin as available to `tenant`, or 404. Checked against the
/// manifest snapshot the handler keeps using, so a concurrent reload cannot
/// make it answer about a plugin it did not check.
fn available<'m>(manifest: &'m Manifest, tenant: &TenantId, plugin: &str) -> ApiResult<&'m PluginSpec> {
    manifest
        .tenant_plugin(tenant.as_str(), plugin)
        .map(|(spec, _)| spec)
        .ok_or(Error::NotFound("plugin"))
}

fn effective(s: &AppState, manifest: &Manifest, tenant: &TenantId, state: &PluginState) -> ApiResult<EffectivePlugin> {
    let mut plugin =
        effective_plugin(manifest, tenant.as_str(), &state.plugin_id, Some(state)).ok_or(Error::NotFound("plugin"))?;
    s.plugins.mark_unavailable(std::slice::from_mut(&mut plugin));
    Ok(plugin)
}

/// List the plugins available to the caller's tenant, with their effective state.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", responses((status = 200, body = Vec<EffectivePlugin>)))]
async fn list_plugins(State(s): State<AppState>, auth: Auth) -> ApiResult<Json<Vec<EffectivePlugin>>> {
    let tenant = auth.read()?;
    Ok(Json(s.plugins.effective(&tenant).await?))
}

/// One plugin: effective state, limits and recent failures.
#[utoipa::path(get, path = "/v1/plugins/{id}", tag = "plugins", params(("id" = String, Path)),
    responses((status = 200, body = PluginDetail), (status = 404, body = super::error::ErrorBody)))]
async fn get_plugin(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<Json<PluginDetail>> {
    let tenant = auth.read()?;
    let manifest = s.manifest.current();
    let spec = available(&manifest, &tenant, &id)?;
    let state = s.store.plugin_state(&tenant, &id).await?;
    let mut plugin =
        effective_plugin(&manifest, tenant.as_str(), &id, state.as_ref()).ok_or(Error::NotFound("plugin"))?;
    s.plugins.mark_unavailable(std::slice::from_mut(&mut plugin));
    let recent_failures = s.store.plugin_failures(&tenant, &id, RECENT_FAILURES).await?;
    Ok(Json(PluginDetail {
        plugin,
        limits: spec.limits.clone(),
        config_schema: spec.config_schema.clone(),
        recent_failures,
    }))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RunsQuery {
    /// At most this many (1-100, default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// The caller's tenant's recent calls of a plugin: time, version, duration,
/// fuel, outcome, error and captured log lines. Written in the background
/// after each call, so the newest may take a moment to appear.
#[utoipa::path(get, path = "/v1/plugins/{id}/runs", tag = "plugins", params(("id" = String, Path), RunsQuery),
    responses((status = 200, body = PluginRuns), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
async fn list_runs(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    super::extract::Query(q): super::extract::Query<RunsQuery>,
) -> ApiResult<Json<PluginRuns>> {
    let tenant = auth.read()?;
    let manifest = s.manifest.current();
    available(&manifest, &tenant, &id)?;
    let limit = match q.limit {
        None => 20,
        Some(n @ 1..=100) => i64::from(n),
        Some(_) => return Err(Error::invalid("limit", "must be between 1 and 100")),
    };
    let items = s.store.plugin_runs(&tenant, &id, limit).await?;
    Ok(Json(PluginRuns { items }))
}

async fn set_enabled(s: &AppState, auth: &Auth, id: &str, enabled: Option<bool>) -> ApiResult<Json<EffectivePlugin>> {
    let tenant = auth.admin()?;
    let manifest = s.manifest.current();
    available(&manifest, &tenant, id)?;
    let state = s
        .store
        .set_plugin_enabled(&tenant, id, enabled, Some(auth.0.key_id.as_str()))
        .await?;
    Ok(Json(effective(s, &manifest, &tenant, &state)?))
}

/// Enable a plugin for the caller's tenant (overrides the manifest).
#[utoipa::path(post, path = "/v1/plugins/{id}/enable", tag = "plugins", params(("id" = String, Path)),
    responses((status = 200, body = EffectivePlugin), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
async fn enable_plugin(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<EffectivePlugin>> {
    set_enabled(&s, &auth, &id, Some(true)).await
}

/// Disable a plugin for the caller's tenant (overrides the manifest).
#[utoipa::path(post, path = "/v1/plugins/{id}/disable", tag = "plugins", params(("id" = String, Path)),
    responses((status = 200, body = EffectivePlugin), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
async fn disable_plugin(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<EffectivePlugin>> {
    set_enabled(&s, &auth, &id, Some(false)).await
}

/// Drop the enable/disable override: follow the manifest again.
#[utoipa::path(delete, path = "/v1/plugins/{id}/enabled", tag = "plugins", params(("id" = String, Path)),
    responses((status = 200, body = EffectivePlugin), (status = 404, body = super::error::ErrorBody)))]
async fn reset_enabled(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<EffectivePlugin>> {
    set_enabled(&s, &auth, &id, None).await
}

/// 422 `config_invalid`: `details.field` is the JSON pointer of the first
/// violation; the message lists every one as `pointer: message`.
fn config_invalid(violations: &[config_schema::Violation]) -> Error {
    Error::UnprocessableCode {
        code: "config_invalid",
        field: violations.first().map(|v| v.pointer.clone()).unwrap_or_default(),
        message: format!(
            "the config does not match the plugin's config_schema: {}",
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// Replace the plugin's config for the caller's tenant. The body is the
/// config itself: a JSON object of at most 64 KiB, valid against the
/// plugin's `config_schema` (`GET /v1/plugins/{id}`) once its defaults are
/// filled in, else 422 `config_invalid` with the JSON pointer of the
/// offending value in `details.field`. Secret fields take a reference
/// (`{"secret": "env:RAPPORT_SECRET_NAME"}` or `{"secret": "file:NAME"}`),
/// never the secret.
#[utoipa::path(put, path = "/v1/plugins/{id}/config", tag = "plugins", params(("id" = String, Path)),
    request_body(content = Object, description = "The new config (a JSON object)"),
    responses((status = 200, body = EffectivePlugin), (status = 413, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
async fn set_config(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Json(config): Json<serde_json::Value>,
) -> ApiResult<Json<EffectivePlugin>> {
    let tenant = auth.admin()?;
    let manifest = s.manifest.current();
    let spec = available(&manifest, &tenant, &id)?;
    if !config.is_object() {
        return Err(Error::invalid("body", "config must be a JSON object"));
    }
    if config.to_string().len() > MAX_CONFIG_BYTES {
        return Err(Error::PayloadTooLarge {
            limit: MAX_CONFIG_BYTES,
        });
    }
    // Checked with the schema's defaults filled in, as the plugin will see
    // it; stored as sent, so a later version's new defaults still apply.
    if let Some(schema) = &spec.config_schema
        && let Err(violations) = config_schema::validate(schema, &config_schema::with_defaults(schema, &config))
    {
        return Err(config_invalid(&violations));
    }
    let state = s
        .store
        .set_plugin_config(&tenant, &id, Some(&config), Some(auth.0.key_id.as_str()))
        .await?;
    Ok(Json(effective(&s, &manifest, &tenant, &state)?))
}

/// Drop the config override: the plugin gets the manifest's config again.
#[utoipa::path(delete, path = "/v1/plugins/{id}/config", tag = "plugins", params(("id" = String, Path)),
    responses((status = 200, body = EffectivePlugin), (status = 404, body = super::error::ErrorBody)))]
async fn reset_config(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<EffectivePlugin>> {
    let tenant = auth.admin()?;
    let manifest = s.manifest.current();
    available(&manifest, &tenant, &id)?;
    let state = s
        .store
        .set_plugin_config(&tenant, &id, None, Some(auth.0.key_id.as_str()))
        .await?;
    Ok(Json(effective(&s, &manifest, &tenant, &state)?))
}

/// Lift a suspension and reset the failure counter.
#[utoipa::path(post, path = "/v1/plugins/{id}/resume", tag = "plugins", params(("id" = String, Path)),
    responses((status = 200, body = EffectivePlugin), (status = 404, body = super::error::ErrorBody)))]
async fn resume_plugin(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<EffectivePlugin>> {
    let tenant = auth.admin()?;
    let manifest = s.manifest.current();
    available(&manifest, &tenant, &id)?;
    let state = s
        .store
        .resume_plugin(&tenant, &id, Some(auth.0.key_id.as_str()))
        .await?;
    Ok(Json(effective(&s, &manifest, &tenant, &state)?))
}

/// What the audit log keeps of a manifest: each plugin's version and
/// artifact digest, and each tenant's plugins.
fn digests(manifest: &Manifest) -> serde_json::Value {
    let plugins: serde_json::Map<String, serde_json::Value> = manifest
        .plugins
        .iter()
        .map(|p| (p.id.clone(), json!({ "version": p.version, "sha256": p.sha256 })))
        .collect();
    let tenants: serde_json::Map<String, serde_json::Value> = manifest
        .tenants
        .iter()
        .map(|t| {
            (
                t.tenant.clone(),
                json!(t.plugins.iter().map(|p| p.plugin.clone()).collect::<Vec<_>>()),
            )
        })
        .collect();
    json!({ "plugins": plugins, "tenants": tenants })
}

fn summary(s: &AppState) -> ManifestSummary {
    let manifest = s.manifest.current();
    ManifestSummary {
        path: s.manifest.path().map(|p| p.display().to_string()),
        loaded_at: manifest.loaded_at,
        plugins: manifest
            .plugins
            .iter()
            .map(|spec| {
                let (status, last_error) = s.plugins.load_status(&spec.id);
                ManifestPlugin {
                    spec: spec.clone(),
                    status,
                    last_error,
                }
            })
            .collect(),
        tenants: manifest
            .tenants
            .iter()
            .map(|t| TenantSummary {
                id: t.tenant.clone(),
                plugins: t
                    .plugins
                    .iter()
                    .map(|p| TenantPluginSummary {
                        id: p.plugin.clone(),
                        enabled: p.enabled,
                    })
                    .collect(),
            })
            .collect(),
        last_reload_error: s.manifest.last_error(),
    }
}

/// The manifest in force and the last reload error (platform admin).
#[utoipa::path(get, path = "/v1/admin/manifest", tag = "admin", responses((status = 200, body = ManifestSummary)))]
async fn get_manifest(State(s): State<AppState>, auth: Auth) -> ApiResult<Json<ManifestSummary>> {
    auth.platform()?;
    Ok(Json(summary(&s)))
}

/// Re-read the manifest file (platform admin). On error the previous
/// manifest stays in force and the answer is 409 `manifest_invalid` with
/// every issue (`file:line:column: field: message`) in `details.issues`.
/// A missing or changed artifact is not an error: that plugin is
/// `unavailable` (with the reason) and the others are loaded; plugins load
/// in the background (`status: loading` until then).
#[utoipa::path(post, path = "/v1/admin/manifest/reload", tag = "admin",
    responses((status = 200, body = ManifestSummary), (status = 409, body = super::error::ErrorBody)))]
async fn reload_manifest(State(s): State<AppState>, auth: Auth) -> ApiResult<Json<ManifestSummary>> {
    auth.platform()?;
    let before = digests(&s.manifest.current());
    let handle = s.manifest.clone();
    // Reading and hashing artifacts is blocking file I/O.
    let result = tokio::task::spawn_blocking(move || handle.reload())
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("manifest reload task: {e}")))?;
    match result {
        Ok(manifest) => {
            tracing::info!(path = %manifest.path.display(), plugins = manifest.plugins.len(), "plugin manifest reloaded");
            // New, changed and unavailable plugins are (re)loaded in the
            // background; the answer shows them `loading`.
            s.plugins.load_all(true);
            s.store
                .record_audit(&AuditEntry {
                    tenant: None,
                    actor_key_id: Some(auth.0.key_id.as_str()),
                    action: "manifest.reload",
                    target: format!("manifest:{}", manifest.path.display()),
                    before: Some(before),
                    after: Some(digests(&manifest)),
                })
                .await?;
            Ok(Json(summary(&s)))
        }
        Err(ManifestError::NotConfigured) => Err(Error::Conflict {
            code: "no_manifest",
            message: ManifestError::NotConfigured.to_string(),
            details: json!({}),
        }),
        Err(err) => {
            tracing::warn!(error = %err, "plugin manifest reload failed; keeping the previous one");
            let issues: Vec<String> = err.issues().iter().map(ToString::to_string).collect();
            Err(Error::Conflict {
                code: "manifest_invalid",
                message: format!("the manifest was not reloaded; the previous one stays in force: {err}"),
                details: json!({ "issues": if issues.is_empty() { vec![err.to_string()] } else { issues } }),
            })
        }
    }
}
