//! Tenants and API keys. Platform admins create tenants and their first keys;
//! tenant admins manage their own tenant's keys under `/v1/keys`. Every
//! creation and revocation is audited (`api::audit::record`; never the
//! token, which is shown once).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audit::{NONE, record};
use super::extract::{Auth, Json, Path};
use super::{ApiResult, AppState, Error};
use crate::store::tenants::{ApiKey, CreatedKey, Role, Tenant};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(create_tenant_key, list_tenant_keys))
        .routes(routes!(revoke_tenant_key))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub name: String,
    /// Optional id of your choosing (`a-z 0-9 - _`, max 64); generated otherwise.
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub role: Role,
    #[serde(default)]
    pub name: String,
}

/// Create a tenant (platform admin).
#[utoipa::path(post, path = "/v1/tenants", tag = "admin", request_body = NewTenant,
    responses((status = 201, body = Tenant), (status = 403, body = super::error::ErrorBody)))]
async fn create_tenant(
    State(s): State<AppState>,
    auth: Auth,
    Json(body): Json<NewTenant>,
) -> ApiResult<(StatusCode, Json<Tenant>)> {
    auth.platform()?;
    let tenant = s.store.create_tenant(&body.name, body.id.as_deref()).await?;
    record(
        &s,
        &auth,
        None,
        "tenant.create",
        format!("tenant:{}", tenant.id),
        NONE,
        Some(&tenant),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(tenant)))
}

/// List tenants (platform admin).
#[utoipa::path(get, path = "/v1/tenants", tag = "admin", responses((status = 200, body = Vec<Tenant>)))]
async fn list_tenants(State(s): State<AppState>, auth: Auth) -> ApiResult<Json<Vec<Tenant>>> {
    auth.platform()?;
    Ok(Json(s.store.list_tenants().await?))
}

fn tenant_role(role: Role) -> ApiResult<Role> {
    if role == Role::PlatformAdmin {
        return Err(Error::invalid("role", "tenant keys cannot be platform_admin"));
    }
    Ok(role)
}

/// Create a key for a tenant (platform admin). The token is shown only here.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/keys", tag = "admin", request_body = NewKey,
    params(("tenant_id" = String, Path)), responses((status = 201, body = CreatedKey), (status = 404, body = super::error::ErrorBody)))]
async fn create_tenant_key(
    State(s): State<AppState>,
    auth: Auth,
    Path(tenant_id): Path<String>,
    Json(body): Json<NewKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    auth.platform()?;
    let tenant = s.store.existing_tenant(&tenant_id).await?;
    let key = s
        .store
        .create_key(Some(&tenant), tenant_role(body.role)?, &body.name)
        .await?;
    // The tenant's record: its admins must see who holds keys to it.
    let target = format!("key:{}", key.key.id);
    record(&s, &auth, Some(&tenant), "key.create", target, NONE, Some(&key.key)).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

/// List a tenant's keys (platform admin).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/keys", tag = "admin",
    params(("tenant_id" = String, Path)), responses((status = 200, body = Vec<ApiKey>)))]
async fn list_tenant_keys(
    State(s): State<AppState>,
    auth: Auth,
    Path(tenant_id): Path<String>,
) -> ApiResult<Json<Vec<ApiKey>>> {
    auth.platform()?;
    let tenant = s.store.existing_tenant(&tenant_id).await?;
    Ok(Json(s.store.list_keys(Some(&tenant)).await?))
}

/// Revoke a tenant's key (platform admin).
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/keys/{key_id}", tag = "admin",
    params(("tenant_id" = String, Path), ("key_id" = String, Path)), responses((status = 200, body = ApiKey)))]
async fn revoke_tenant_key(
    State(s): State<AppState>,
    auth: Auth,
    Path((tenant_id, key_id)): Path<(String, String)>,
) -> ApiResult<Json<ApiKey>> {
    auth.platform()?;
    let tenant = s.store.existing_tenant(&tenant_id).await?;
    let key = s.store.revoke_key(Some(&tenant), &key_id).await?;
    record(
        &s,
        &auth,
        Some(&tenant),
        "key.revoke",
        format!("key:{key_id}"),
        NONE,
        Some(&key),
    )
    .await?;
    Ok(Json(key))
}

/// Create a key for the caller's own tenant (tenant admin).
#[utoipa::path(post, path = "/v1/keys", tag = "admin", request_body = NewKey,
    responses((status = 201, body = CreatedKey), (status = 403, body = super::error::ErrorBody)))]
async fn create_key(
    State(s): State<AppState>,
    auth: Auth,
    Json(body): Json<NewKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let tenant = auth.admin()?;
    let key = s
        .store
        .create_key(Some(&tenant), tenant_role(body.role)?, &body.name)
        .await?;
    let target = format!("key:{}", key.key.id);
    record(&s, &auth, Some(&tenant), "key.create", target, NONE, Some(&key.key)).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

/// List the caller's tenant's keys (tenant admin).
#[utoipa::path(get, path = "/v1/keys", tag = "admin", responses((status = 200, body = Vec<ApiKey>)))]
async fn list_keys(State(s): State<AppState>, auth: Auth) -> ApiResult<Json<Vec<ApiKey>>> {
    let tenant = auth.admin()?;
    Ok(Json(s.store.list_keys(Some(&tenant)).await?))
}

/// Revoke one of the caller's tenant's keys (tenant admin).
#[utoipa::path(delete, path = "/v1/keys/{key_id}", tag = "admin",
    params(("key_id" = String, Path)), responses((status = 200, body = ApiKey), (status = 404, body = super::error::ErrorBody)))]
async fn revoke_key(State(s): State<AppState>, auth: Auth, Path(key_id): Path<String>) -> ApiResult<Json<ApiKey>> {
    let tenant = auth.admin()?;
    let key = s.store.revoke_key(Some(&tenant), &key_id).await?;
    record(
        &s,
        &auth,
        Some(&tenant),
        "key.revoke",
        format!("key:{key_id}"),
        NONE,
        Some(&key),
    )
    .await?;
    Ok(Json(key))
}
