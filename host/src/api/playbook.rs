//! /v1/playbook/settings: the tenant's settings of the CRM playbook's host
//! flows: how long a complaint may wait for an answer before it escalates,
//! the goodwill points of a resolved complaint, the points a referrer earns
//! (see `store::playbook`). Any tenant key reads; an admin key changes them.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Auth, Json};
use super::{ApiResult, AppState};
use crate::store::playbook::PlaybookSettings;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_settings, put_settings))
}

/// The tenant's playbook settings (defaults until set).
#[utoipa::path(get, path = "/v1/playbook/settings", tag = "playbook", responses((status = 200, body = PlaybookSettings)))]
async fn get_settings(State(s): State<AppState>, auth: Auth) -> ApiResult<Json<PlaybookSettings>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.playbook_settings(&tenant).await?))
}

/// Replace the tenant's playbook settings.
#[utoipa::path(put, path = "/v1/playbook/settings", tag = "playbook", request_body = PlaybookSettings,
    responses((status = 200, body = PlaybookSettings), (status = 422, body = ErrorBody)))]
async fn put_settings(
    State(s): State<AppState>,
    auth: Auth,
    Json(body): Json<PlaybookSettings>,
) -> ApiResult<Json<PlaybookSettings>> {
    let tenant = auth.admin()?;
    Ok(Json(s.store.set_playbook_settings(&tenant, body).await?))
}
