//! /v1 stored scores: a customer's current scores (and history), batch
//! scoring jobs, and segment sizes.
//!
//! Scores are computed by the tenant's scoring plugins and stored: by a
//! batch job (`POST /v1/scoring/jobs`: fit, then rescore every customer) and
//! by the background worker, which rescores a customer about a second after
//! a new interaction. `POST /v1/customers/{id}/score` (plugin_calls.rs)
//! computes a score on demand without storing it.
//!
//! Roles: reading needs any tenant key; starting a job (heavy: it rescores
//! the whole tenant) needs a tenant admin key.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Auth, Json, Path, Query};
use super::{ApiResult, AppState, Error};
use crate::store::scores::{ScoringJob, SegmentSize, StoredScore};

/// Most history entries one request returns.
pub const MAX_HISTORY_LIMIT: u32 = 500;
const DEFAULT_HISTORY_LIMIT: u32 = 50;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(customer_scores))
        .routes(routes!(create_job))
        .routes(routes!(get_job))
        .routes(routes!(segments))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScoresQuery {
    /// Only this plugin's score (and history).
    pub plugin: Option<String>,
    /// Also return the score history, newest first.
    #[serde(default)]
    pub history: bool,
    /// History entries, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerScores {
    pub customer_id: String,
    /// The current score of each plugin that scored this customer.
    pub scores: Vec<StoredScore>,
    /// Present with `history=true`: every stored score, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<StoredScore>>,
}

/// A customer's stored scores, one per scoring plugin, with explanations.
#[utoipa::path(get, path = "/v1/customers/{id}/scores", tag = "scores", params(("id" = String, Path), ScoresQuery),
    responses((status = 200, body = CustomerScores), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn customer_scores(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<ScoresQuery>,
) -> ApiResult<Json<CustomerScores>> {
    let tenant = auth.read()?;
    let limit = q.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
        return Err(Error::invalid(
            "limit",
            format!("must be between 1 and {MAX_HISTORY_LIMIT}"),
        ));
    }
    let scores = s.store.customer_scores(&tenant, &id, q.plugin.as_deref()).await?;
    let history = if q.history {
        Some(
            s.store
                .customer_score_history(&tenant, &id, q.plugin.as_deref(), i64::from(limit))
                .await?,
        )
    } else {
        None
    };
    Ok(Json(CustomerScores {
        customer_id: id,
        scores,
        history,
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewScoringJob {
    /// Run only this scoring plugin; absent = every active scoring plugin.
    #[serde(default)]
    pub plugin: Option<String>,
    /// Score as of this time (the "now" plugins see), for historical data.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub as_of: Option<time::OffsetDateTime>,
}

/// Start a batch job: fit the scoring plugins on the tenant's population,
/// then rescore and store every customer. Poll `GET /v1/scoring/jobs/{id}`.
/// 404: unknown plugin; 409 `plugin_not_active`, `no_active_scoring_plugins`,
/// or `scoring_job_active` (one job per tenant at a time).
#[utoipa::path(post, path = "/v1/scoring/jobs", tag = "scores", request_body = NewScoringJob,
    responses((status = 202, body = ScoringJob), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn create_job(
    State(s): State<AppState>,
    auth: Auth,
    Json(body): Json<NewScoringJob>,
) -> ApiResult<(StatusCode, Json<ScoringJob>)> {
    let tenant = auth.admin()?;
    let job = s.plugins.create_scoring_job(&tenant, body.plugin.as_deref()).await?;
    let plugins = s.plugins.clone();
    let job_id = job.id.clone();
    let as_of = body.as_of.map(crate::store::millis);
    tokio::spawn(async move {
        match plugins.run_job_with_progress(&tenant, &job_id, as_of, &|_, _| {}).await {
            Ok(job) => {
                tracing::info!(tenant = %tenant, job = %job.id, status = job.status.as_str(), done = job.done,
                failed = job.failed_customers, "scoring job finished")
            }
            Err(e) => {
                tracing::error!(tenant = %tenant, job = %job_id, error = %e, "scoring job could not run")
            }
        }
    });
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// A batch job's status and progress.
#[utoipa::path(get, path = "/v1/scoring/jobs/{id}", tag = "scores", params(("id" = String, Path)),
    responses((status = 200, body = ScoringJob), (status = 404, body = ErrorBody)))]
async fn get_job(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<Json<ScoringJob>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.get_scoring_job(&tenant, &id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SegmentsQuery {
    /// Only this plugin's segments.
    pub plugin: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Segments {
    /// By plugin, then largest segment first.
    pub segments: Vec<SegmentSize>,
}

/// How many customers are in each segment of the stored scores.
#[utoipa::path(get, path = "/v1/segments", tag = "scores", params(SegmentsQuery),
    responses((status = 200, body = Segments), (status = 400, body = ErrorBody)))]
async fn segments(State(s): State<AppState>, auth: Auth, Query(q): Query<SegmentsQuery>) -> ApiResult<Json<Segments>> {
    let tenant = auth.read()?;
    Ok(Json(Segments {
        segments: s.store.segment_sizes(&tenant, q.plugin.as_deref()).await?,
    }))
}
