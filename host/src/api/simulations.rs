//! Simulations (`POST /v1/plugins/{id}/simulate`, `GET
//! /v1/simulations/{id}`): a plugin version run against the tenant's
//! recorded history next to the active version, writing nothing (see
//! `plugins::simulate`). A simulation runs as a background job: the POST
//! answers 202 at once, the GET shows progress and, at the end, the report.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Auth, Json, Path};
use super::{ApiResult, AppState, Error};
use crate::plugins::simulate::SimulationSpec;
use crate::store::millis;
use crate::store::simulations::Simulation;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(simulate))
        .routes(routes!(get_simulation))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateRequest {
    /// The version to simulate (one of `GET /v1/plugins/{id}/versions`).
    pub version: String,
    /// Run at most this many customers (in id order); all when absent.
    pub sample: Option<i64>,
    /// Replay the history as of this time: the plugins see it as "now" and
    /// no later interaction.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub as_of: Option<time::OffsetDateTime>,
}

/// Simulate a plugin version against the tenant's history, next to the active version (writes nothing).
///
/// Answers 202 with the job; follow it with `GET /v1/simulations/{id}`.
/// Scoring plugins report each version's score distribution and segments
/// and how many customers would change segment; cross-sell plugins the
/// overlap of the two versions' recommendations. 422
/// `simulation_not_supported` for reward schemes and channel connectors,
/// `unknown_version` for a version the tenant does not have.
#[utoipa::path(post, path = "/v1/plugins/{id}/simulate", tag = "plugins", params(("id" = String, Path)),
    request_body = SimulateRequest,
    responses((status = 202, body = Simulation), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody)))]
async fn simulate(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Json(req): Json<SimulateRequest>,
) -> ApiResult<(StatusCode, Json<Simulation>)> {
    let tenant = auth.admin()?;
    if req.sample.is_some_and(|n| n < 1) {
        return Err(Error::invalid("sample", "must be at least 1"));
    }
    s.manifest
        .current()
        .tenant_plugin(tenant.as_str(), &id)
        .ok_or(Error::NotFound("plugin"))?;
    let spec = SimulationSpec {
        plugin: id,
        version: req.version,
        sample: req.sample,
        as_of: req.as_of.map(millis),
    };
    let sim = s.plugins.start_simulation(&tenant, spec).await?;
    Ok((StatusCode::ACCEPTED, Json(sim)))
}

/// One simulation: progress while it runs, then its report.
#[utoipa::path(get, path = "/v1/simulations/{id}", tag = "plugins", params(("id" = String, Path)),
    responses((status = 200, body = Simulation), (status = 404, body = super::error::ErrorBody)))]
async fn get_simulation(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<Json<Simulation>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.simulation(&tenant, &id).await?))
}
