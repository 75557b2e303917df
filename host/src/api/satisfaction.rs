//! Satisfaction: a customer's CSAT/NPS answers and the tenant's NPS over
//! time (see `store::satisfaction`). Answers come in as `satisfaction`
//! interactions (`POST /v1/interactions` or a connector's inbound event).
//! Any tenant key reads.

use axum::extract::State;
use serde::Deserialize;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Auth, Json, Path, Query};
use super::{ApiResult, AppState};
use crate::store::satisfaction::{Interval, NpsReport, SatisfactionAnswer};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(nps))
        .routes(routes!(customer_satisfaction))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NpsQuery {
    /// Start (RFC 3339, inclusive).
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    /// End (RFC 3339, exclusive).
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    /// Period length: day, week or month (default month); at most 400 periods.
    pub interval: Option<Interval>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Newest answers to return, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SatisfactionHistory {
    pub customer_id: String,
    /// Newest first.
    pub items: Vec<SatisfactionAnswer>,
}

/// The tenant's NPS per period over `[from, to)`, and overall.
#[utoipa::path(get, path = "/v1/satisfaction/nps", tag = "playbook", params(NpsQuery),
    responses((status = 200, body = NpsReport), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn nps(State(s): State<AppState>, auth: Auth, Query(q): Query<NpsQuery>) -> ApiResult<Json<NpsReport>> {
    let tenant = auth.read()?;
    let interval = q.interval.unwrap_or(Interval::Month);
    Ok(Json(s.store.nps_over_time(&tenant, q.from, q.to, interval).await?))
}

/// A customer's satisfaction answers, newest first.
#[utoipa::path(get, path = "/v1/customers/{id}/satisfaction", tag = "playbook", params(("id" = String, Path), HistoryQuery),
    responses((status = 200, body = SatisfactionHistory), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn customer_satisfaction(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<SatisfactionHistory>> {
    let tenant = auth.read()?;
    let items = s.store.customer_satisfaction(&tenant, &id, q.limit).await?;
    Ok(Json(SatisfactionHistory { customer_id: id, items }))
}
