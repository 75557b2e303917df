//! /v1 stored scores: a customer's current scores (and history), batch
//! scoring jobs, segment sizes, the tenant's control of the background
//! rescore worker, and bulk reads of a plugin's scores (paged JSON, and a
//! streamed NDJSON or CSV export).
//!
//! Scores are computed by the tenant's scoring plugins and stored: by a
//! batch job (`POST /v1/scoring/jobs`: fit, then rescore every customer) and
//! by the background worker, which rescores a customer about a second after
//! a new interaction. `POST /v1/customers/{id}/score` (plugin_calls.rs)
//! computes a score on demand without storing it.
//!
//! Roles: reading needs any tenant key; starting a job (heavy: it rescores
//! the whole tenant) and pausing or resuming the worker need a tenant admin
//! key.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Auth, Json, Path, Query};
use super::{ApiResult, AppState, Error};
use crate::manifest::PluginKind;
use crate::store::scores::{CustomerScore, RescoreWorkerState, ScoringJob, SegmentSize, StoredScore};
use crate::store::{Page, StoreResult, TenantId, cursor};

/// Most history entries one request returns.
pub const MAX_HISTORY_LIMIT: u32 = 500;
const DEFAULT_HISTORY_LIMIT: u32 = 50;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(customer_scores))
        .routes(routes!(create_job))
        .routes(routes!(get_job))
        .routes(routes!(segments))
        .routes(routes!(get_worker, set_worker))
        .routes(routes!(plugin_scores))
        .routes(routes!(export_scores))
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
    /// Score as of this time, for historical data: the plugins see it as
    /// "now", and interactions after it are left out (of the fit and of
    /// every history). Stored with the job and with each score it computes.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub as_of: Option<time::OffsetDateTime>,
}

/// Start a batch job: fit the scoring plugins on the tenant's population,
/// then rescore and store every customer. Poll `GET /v1/scoring/jobs/{id}`:
/// it ends `succeeded`, `partially_failed` (a plugin failed to fit or was
/// stopped; see `plugins`) or `failed`. While it runs the background worker
/// leaves the tenant alone, and it clears the queue entries of the customers
/// it scored. 404: unknown plugin; 409 `plugin_not_active`,
/// `no_active_scoring_plugins`, or `scoring_job_active` (one job per tenant
/// at a time).
#[utoipa::path(post, path = "/v1/scoring/jobs", tag = "scores", request_body = NewScoringJob,
    responses((status = 202, body = ScoringJob), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn create_job(
    State(s): State<AppState>,
    auth: Auth,
    Json(body): Json<NewScoringJob>,
) -> ApiResult<(StatusCode, Json<ScoringJob>)> {
    let tenant = auth.admin()?;
    let as_of = body.as_of.map(crate::store::millis);
    let job = s
        .plugins
        .create_scoring_job_as_of(&tenant, body.plugin.as_deref(), as_of)
        .await?;
    let plugins = s.plugins.clone();
    let job_id = job.id.clone();
    tokio::spawn(async move {
        match plugins.run_job(&tenant, &job_id).await {
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

/// The background rescore worker for the caller's tenant: paused or not,
/// customers waiting, and the running job it waits for.
#[utoipa::path(get, path = "/v1/scoring/worker", tag = "scores",
    responses((status = 200, body = RescoreWorkerState), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn get_worker(State(s): State<AppState>, auth: Auth) -> ApiResult<Json<RescoreWorkerState>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.rescore_worker_state(&tenant).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerControl {
    /// `true` pauses the worker for this tenant on every node (queued
    /// customers wait; new interactions keep queueing), `false` resumes it.
    pub paused: bool,
}

/// Pause or resume the background rescore worker for the caller's tenant
/// (tenant admin), e.g. to keep scores a job computed as of a past date
/// while new data is imported. Idempotent.
#[utoipa::path(put, path = "/v1/scoring/worker", tag = "scores", request_body = WorkerControl,
    responses((status = 200, body = RescoreWorkerState), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn set_worker(
    State(s): State<AppState>,
    auth: Auth,
    Json(body): Json<WorkerControl>,
) -> ApiResult<Json<RescoreWorkerState>> {
    let tenant = auth.admin()?;
    Ok(Json(s.store.set_rescore_paused(&tenant, body.paused).await?))
}

/// Most scores one page of `GET /v1/plugins/{id}/scores` returns.
pub const MAX_SCORES_PAGE: u32 = 1_000;
const DEFAULT_SCORES_PAGE: u32 = 500;
/// Scores read per query while streaming an export: memory stays bounded
/// whatever the tenant's size.
const EXPORT_CHUNK: i64 = 1_000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScoresPageQuery {
    /// Page size, 1-1000 (default 500).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// 404 unless the tenant has this scoring plugin (whatever its status:
/// a disabled plugin's stored scores are still readable).
async fn require_scoring_plugin(s: &AppState, tenant: &TenantId, id: &str) -> ApiResult<()> {
    match s.plugins.find(tenant, id).await? {
        Some(p) if p.kind == PluginKind::ScoringRule => Ok(()),
        _ => Err(Error::NotFound("plugin")),
    }
}

/// A scoring plugin's current scores for the caller's tenant, one per
/// customer, in customer id order, with cursor pagination. 404 if the
/// tenant has no such scoring plugin.
#[utoipa::path(get, path = "/v1/plugins/{id}/scores", tag = "scores", params(("id" = String, Path), ScoresPageQuery),
    responses((status = 200, body = Page<CustomerScore>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn plugin_scores(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<ScoresPageQuery>,
) -> ApiResult<Json<Page<CustomerScore>>> {
    let tenant = auth.read()?;
    let limit = q.limit.unwrap_or(DEFAULT_SCORES_PAGE);
    if !(1..=MAX_SCORES_PAGE).contains(&limit) {
        return Err(Error::invalid(
            "limit",
            format!("must be between 1 and {MAX_SCORES_PAGE}"),
        ));
    }
    let after = match &q.cursor {
        Some(c) => Some(cursor::decode::<(String,)>(c)?.0),
        None => None,
    };
    require_scoring_plugin(&s, &tenant, &id).await?;
    let limit = i64::from(limit);
    let mut items = s
        .store
        .plugin_scores_page(&tenant, &id, after.as_deref(), limit + 1)
        .await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|c| cursor::encode(&(c.customer_id.clone(),)))
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One JSON object per line (`application/x-ndjson`), as in the paged read.
    Ndjson,
    /// RFC 4180 CSV with a header row (`text/csv`); components as JSON text.
    Csv,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `ndjson` or `csv`; without it the `Accept` header decides
    /// (`text/csv` for CSV), else NDJSON.
    pub format: Option<ExportFormat>,
}

const CSV_HEADER: [&str; 11] = [
    "customer_id",
    "external_id",
    "plugin",
    "value",
    "label",
    "segment",
    "explanation",
    "components",
    "computed_at",
    "job_id",
    "as_of",
];

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// One chunk of the export in `format`; the CSV header goes with the first.
fn encode_chunk(format: ExportFormat, scores: &[CustomerScore], first: bool) -> anyhow::Result<Bytes> {
    match format {
        ExportFormat::Ndjson => {
            let mut out = Vec::with_capacity(scores.len() * 256);
            for score in scores {
                serde_json::to_writer(&mut out, score)?;
                out.push(b'\n');
            }
            Ok(Bytes::from(out))
        }
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::with_capacity(scores.len() * 200));
            if first {
                w.write_record(CSV_HEADER)?;
            }
            for c in scores {
                let s = &c.score;
                w.write_record([
                    c.customer_id.as_str(),
                    c.external_id.as_str(),
                    s.plugin.as_str(),
                    &s.value.to_string(),
                    s.label.as_deref().unwrap_or(""),
                    s.segment.as_deref().unwrap_or(""),
                    s.explanation.as_str(),
                    &serde_json::Value::Object(s.components.clone()).to_string(),
                    &rfc3339(s.computed_at),
                    s.job_id.as_deref().unwrap_or(""),
                    &s.as_of.map(rfc3339).unwrap_or_default(),
                ])?;
            }
            Ok(Bytes::from(w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?))
        }
    }
}

/// Where the export stream is: the last customer sent, and whether the
/// header (CSV) went out.
struct ExportCursor {
    after: Option<String>,
    first: bool,
    done: bool,
}

async fn next_chunk(
    store: &crate::store::Store,
    tenant: &TenantId,
    plugin: &str,
    format: ExportFormat,
    at: &mut ExportCursor,
) -> StoreResult<Option<anyhow::Result<Bytes>>> {
    if at.done {
        return Ok(None);
    }
    let scores = store
        .plugin_scores_page(tenant, plugin, at.after.as_deref(), EXPORT_CHUNK)
        .await?;
    at.done = (scores.len() as i64) < EXPORT_CHUNK;
    let first = std::mem::replace(&mut at.first, false);
    if scores.is_empty() && !(first && format == ExportFormat::Csv) {
        return Ok(None);
    }
    at.after = scores.last().map(|c| c.customer_id.clone());
    Ok(Some(encode_chunk(format, &scores, first)))
}

/// Stream a scoring plugin's current scores for the caller's tenant, in
/// customer id order: NDJSON (one object per line, as in the paged read) or
/// CSV, chosen by `format` or the `Accept` header. Read in chunks of 1,000,
/// so memory stays flat whatever the tenant's size; scores stored while the
/// export runs may or may not be in it. 404 if the tenant has no such
/// scoring plugin.
#[utoipa::path(get, path = "/v1/plugins/{id}/scores/export", tag = "scores", params(("id" = String, Path), ExportQuery),
    responses((status = 200, content((CustomerScore = "application/x-ndjson"), (String = "text/csv"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn export_scores(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    let tenant = auth.read()?;
    require_scoring_plugin(&s, &tenant, &id).await?;
    let format = q.format.unwrap_or_else(|| {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        if accept.contains("text/csv") {
            ExportFormat::Csv
        } else {
            ExportFormat::Ndjson
        }
    });
    let content_type = match format {
        ExportFormat::Ndjson => "application/x-ndjson",
        ExportFormat::Csv => "text/csv; charset=utf-8",
    };
    let store = s.store.clone();
    let start = ExportCursor {
        after: None,
        first: true,
        done: false,
    };
    let stream = futures_util::stream::unfold(start, move |mut at| {
        let (store, tenant, plugin) = (store.clone(), tenant.clone(), id.clone());
        async move {
            match next_chunk(&store, &tenant, &plugin, format, &mut at).await {
                Ok(Some(Ok(bytes))) => Some((Ok(bytes), at)),
                Ok(None) => None,
                // The status is already sent: end the body early so the
                // client sees a truncated (failed) transfer, not a short file.
                Ok(Some(Err(e))) => {
                    tracing::error!(tenant = %tenant, plugin = %plugin, error = %e, "score export failed");
                    at.done = true;
                    Some((Err(std::io::Error::other("export failed")), at))
                }
                Err(e) => {
                    tracing::error!(tenant = %tenant, plugin = %plugin, error = %e, "score export failed");
                    at.done = true;
                    Some((Err(std::io::Error::other("export failed")), at))
                }
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, content_type)], Body::from_stream(stream)).into_response())
}
