//! A tenant's plugin versions (`/v1/plugins/{id}/versions`, `stage`,
//! `promote`, `rollback`): which versions of a plugin the tenant may run
//! (the manifest's and the uploads a platform admin allowed it), which is
//! active, and a staged candidate served to a share of the customers.
//!
//! Each change is one database write that every node reads on its next
//! call (see `plugins::versions`), so it applies at once everywhere. Admin
//! actions here (stage, promote, rollback) are the ones the audit log must
//! record.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Auth, Json, Path};
use super::{ApiResult, AppState, Error};
use crate::manifest::PluginSpec;
use crate::plugins::versions::AvailableVersion;
use crate::store::TenantId;
use crate::store::plugin_versions::{Rollback, VersionState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_versions))
        .routes(routes!(stage_version))
        .routes(routes!(promote_version))
        .routes(routes!(rollback_version))
}

/// A plugin's versions for the caller's tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginVersions {
    pub plugin_id: String,
    /// The version every customer outside the staged share is served.
    pub active_version: String,
    /// What `rollback` returns to when nothing is staged.
    pub previous_version: Option<String>,
    pub staged_version: Option<String>,
    /// Share of customers (0-100) served `staged_version`, chosen by a
    /// stable hash of the customer id.
    pub staged_percent: i64,
    /// The manifest's version (active unless a promote chose another).
    pub manifest_version: String,
    /// Every version the tenant may stage: the manifest's, then uploads.
    pub available: Vec<AvailableVersion>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageRequest {
    /// One of the plugin's available versions, other than the active one.
    pub version: String,
    /// Share of customers, 1-100.
    pub percent: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RollbackResponse {
    /// `unstaged` (the staged candidate was withdrawn) or `reverted` (the
    /// previous version is active again).
    pub action: Rollback,
    #[serde(flatten)]
    pub versions: PluginVersions,
}

/// The manifest entry of a plugin the tenant has, or 404.
fn spec(s: &AppState, tenant: &TenantId, id: &str) -> ApiResult<PluginSpec> {
    s.manifest
        .current()
        .tenant_plugin(tenant.as_str(), id)
        .map(|(spec, _)| spec.clone())
        .ok_or(Error::NotFound("plugin"))
}

async fn view(s: &AppState, tenant: &TenantId, spec: &PluginSpec, state: VersionState) -> ApiResult<PluginVersions> {
    Ok(PluginVersions {
        plugin_id: spec.id.clone(),
        active_version: state.active_version.unwrap_or_else(|| spec.version.clone()),
        previous_version: state.previous_version,
        staged_version: state.staged_version,
        staged_percent: state.staged_percent,
        manifest_version: spec.version.clone(),
        available: s.plugins.available_versions(tenant, &spec.id).await?,
    })
}

/// The versions of a plugin available to the caller's tenant, and which is active or staged.
#[utoipa::path(get, path = "/v1/plugins/{id}/versions", tag = "plugins", params(("id" = String, Path)),
    responses((status = 200, body = PluginVersions), (status = 404, body = super::error::ErrorBody)))]
async fn list_versions(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<PluginVersions>> {
    let tenant = auth.read()?;
    let spec = spec(&s, &tenant, &id)?;
    let state = s.store.plugin_version_state(&tenant, &id).await?;
    Ok(Json(view(&s, &tenant, &spec, state).await?))
}

/// Stage a version on a share of the tenant's customers (replaces any staged one).
///
/// The version must be available to the tenant and load (422
/// `unknown_version`, `version_unavailable` with the reason); staging the
/// active version is 409 `version_active`. Takes effect on the next call on
/// every node.
#[utoipa::path(post, path = "/v1/plugins/{id}/stage", tag = "plugins", params(("id" = String, Path)),
    request_body = StageRequest,
    responses((status = 200, body = PluginVersions), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody)))]
async fn stage_version(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Json(req): Json<StageRequest>,
) -> ApiResult<Json<PluginVersions>> {
    let tenant = auth.admin()?;
    let spec = spec(&s, &tenant, &id)?;
    if !(1..=100).contains(&req.percent) {
        return Err(Error::invalid("percent", "must be between 1 and 100"));
    }
    let available = s.plugins.available_versions(&tenant, &id).await?;
    if !available.iter().any(|v| v.version == req.version) {
        return Err(Error::UnprocessableCode {
            code: "unknown_version",
            field: "version".into(),
            message: format!("`{id}` has no version {:?} available to this tenant", req.version),
        });
    }
    let state = s.store.plugin_version_state(&tenant, &id).await?;
    let active = state.active_version.clone().unwrap_or_else(|| spec.version.clone());
    if active == req.version {
        return Err(Error::Conflict {
            code: "version_active",
            message: format!("version {} is already active", req.version),
            details: serde_json::json!({}),
        });
    }
    // Compiled now, so a version that does not load is refused here and
    // not discovered by the customers it would have served.
    if let Err(fail) = s.plugins.load_version(&tenant, &id, &req.version).await {
        return Err(Error::UnprocessableCode {
            code: "version_unavailable",
            field: "version".into(),
            message: fail.message,
        });
    }
    let before = s.store.plugin_version_state(&tenant, &id).await?;
    let state = s
        .store
        .stage_plugin_version(&tenant, &id, &req.version, req.percent)
        .await?;
    audit(&s, &auth, &tenant, "plugin.stage", &id, &before, &state).await?;
    Ok(Json(view(&s, &tenant, &spec, state).await?))
}

/// Make the staged version active for every customer (the active one becomes `previous_version`).
///
/// 409 `nothing_staged` when no version is staged.
#[utoipa::path(post, path = "/v1/plugins/{id}/promote", tag = "plugins", params(("id" = String, Path)),
    responses((status = 200, body = PluginVersions), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody)))]
async fn promote_version(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<PluginVersions>> {
    let tenant = auth.admin()?;
    let spec = spec(&s, &tenant, &id)?;
    let before = s.store.plugin_version_state(&tenant, &id).await?;
    let active = before.active_version.clone().unwrap_or_else(|| spec.version.clone());
    let state = s.store.promote_plugin_version(&tenant, &id, &active).await?;
    audit(&s, &auth, &tenant, "plugin.promote", &id, &before, &state).await?;
    Ok(Json(view(&s, &tenant, &spec, state).await?))
}

/// Roll back: withdraw the staged version if one is staged, else return to the previous active version.
///
/// 409 `nothing_to_roll_back` when neither exists.
#[utoipa::path(post, path = "/v1/plugins/{id}/rollback", tag = "plugins", params(("id" = String, Path)),
    responses((status = 200, body = RollbackResponse), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody)))]
async fn rollback_version(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<RollbackResponse>> {
    let tenant = auth.admin()?;
    let spec = spec(&s, &tenant, &id)?;
    let before = s.store.plugin_version_state(&tenant, &id).await?;
    let (action, state) = s.store.rollback_plugin_version(&tenant, &id).await?;
    audit(&s, &auth, &tenant, "plugin.rollback", &id, &before, &state).await?;
    Ok(Json(RollbackResponse {
        action,
        versions: view(&s, &tenant, &spec, state).await?,
    }))
}

/// Records a version change in the audit log: the tenant's version state
/// before and after (versions and the staged share, nothing secret).
async fn audit(
    s: &AppState,
    auth: &Auth,
    tenant: &TenantId,
    action: &str,
    plugin: &str,
    before: &VersionState,
    after: &VersionState,
) -> ApiResult<()> {
    super::audit::record(
        s,
        auth,
        Some(tenant),
        action,
        format!("plugin:{plugin}"),
        Some(before),
        Some(after),
    )
    .await
}
