//! /v1/message-triggers: the tenant's "when X happens to a customer, send
//! template T on channel C" rules (see `store::triggers` for the events and
//! when exactly each fires).
//!
//! Roles: any tenant key reads; creating, switching and deleting triggers is
//! tenant configuration and needs an admin key.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Auth, Json, Path};
use super::{ApiResult, AppState};
use crate::store::triggers::{NewTrigger, Trigger};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_trigger, list_triggers))
        .routes(routes!(get_trigger, delete_trigger))
        .routes(routes!(enable_trigger))
        .routes(routes!(disable_trigger))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerList {
    pub items: Vec<Trigger>,
}

/// Create a trigger.
#[utoipa::path(post, path = "/v1/message-triggers", tag = "messages", request_body = NewTrigger,
    responses((status = 201, body = Trigger),
        (status = 409, description = "trigger_exists or too_many_triggers", body = ErrorBody),
        (status = 422, description = "unknown template, bad name or conditions", body = ErrorBody)))]
async fn create_trigger(
    State(s): State<AppState>,
    auth: Auth,
    Json(body): Json<NewTrigger>,
) -> ApiResult<(StatusCode, Json<Trigger>)> {
    let tenant = auth.admin()?;
    Ok((StatusCode::CREATED, Json(s.store.create_trigger(&tenant, body).await?)))
}

/// The tenant's triggers, by name.
#[utoipa::path(get, path = "/v1/message-triggers", tag = "messages", responses((status = 200, body = TriggerList)))]
async fn list_triggers(State(s): State<AppState>, auth: Auth) -> ApiResult<Json<TriggerList>> {
    let tenant = auth.read()?;
    Ok(Json(TriggerList {
        items: s.store.list_triggers(&tenant).await?,
    }))
}

#[utoipa::path(get, path = "/v1/message-triggers/{id}", tag = "messages", params(("id" = String, Path)),
    responses((status = 200, body = Trigger), (status = 404, body = ErrorBody)))]
async fn get_trigger(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<Json<Trigger>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.get_trigger(&tenant, &id).await?))
}

#[utoipa::path(delete, path = "/v1/message-triggers/{id}", tag = "messages", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_trigger(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let tenant = auth.admin()?;
    s.store.delete_trigger(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/message-triggers/{id}/enable", tag = "messages", params(("id" = String, Path)),
    responses((status = 200, body = Trigger), (status = 404, body = ErrorBody)))]
async fn enable_trigger(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<Json<Trigger>> {
    let tenant = auth.admin()?;
    Ok(Json(s.store.set_trigger_enabled(&tenant, &id, true).await?))
}

#[utoipa::path(post, path = "/v1/message-triggers/{id}/disable", tag = "messages", params(("id" = String, Path)),
    responses((status = 200, body = Trigger), (status = 404, body = ErrorBody)))]
async fn disable_trigger(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<Json<Trigger>> {
    let tenant = auth.admin()?;
    Ok(Json(s.store.set_trigger_enabled(&tenant, &id, false).await?))
}
