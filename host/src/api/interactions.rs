//! /v1 interactions endpoints: idempotent ingest (single and batch), read,
//! a customer's timeline, and the tenant's interaction kinds.
//!
//! Single ingest answers 201 on create and 200 with the first result plus
//! `idempotent-replayed: true` when the idempotency key was already used with
//! the same body (409 `idempotency_conflict` with a different one).
//!
//! A batch answers 200 with one result per item, in order: items are
//! independent (one savepoint each), so a bad item never sinks the others.
//! More than [`MAX_BATCH`] items is refused whole with 422 `batch_too_large`:
//! the body itself is well-formed and within the byte limit (413 is for
//! that), it breaks a rule about its content, which is what 422 means.
//!
//! Ingest runs the tenant's active reward-scheme plugins on every created
//! interaction in the same transaction (see `plugins::rewards`): the
//! response (and each batch item) carries `rewards`, one entry per plugin
//! with the ledger entries and tier change it produced, or its error (absent
//! when there is none, e.g. for a tenant without reward plugins). A failing
//! plugin never fails the ingest.
//!
//! Roles: reads need any tenant key, ingest a write key, defining a kind an
//! admin key (kinds are part of the tenant's configuration).

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Auth, Json, Path, Query};
use super::{ApiResult, AppState, Error};
use crate::plugins::rewards::RewardRun;
use crate::store::Page;
pub use crate::store::interactions::MAX_BATCH;
use crate::store::interactions::{IngestOutcome, Interaction, InteractionKind, NewInteraction, TimelineFilter};

/// Response header set on a replayed ingest.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The answer of an idempotent create (an ingest, a message, a campaign):
/// `created_status` with the body for a new object, 200 with
/// `Idempotent-Replayed: true` for a request its key already stored.
pub fn created_or_replayed<T: serde::Serialize>(created: bool, created_status: StatusCode, body: T) -> Response {
    if created {
        (created_status, Json(body)).into_response()
    } else {
        (
            StatusCode::OK,
            [(
                HeaderName::from_static(REPLAYED_HEADER),
                HeaderValue::from_static("true"),
            )],
            Json(body),
        )
            .into_response()
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ingest))
        .routes(routes!(ingest_batch))
        .routes(routes!(get_interaction))
        .routes(routes!(retry_rewards))
        .routes(routes!(timeline))
        .routes(routes!(create_kind, list_kinds))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Up to 1000 interactions. Each is checked on its own: a malformed item
    /// is reported in its result slot instead of failing the batch.
    #[schema(value_type = Vec<NewInteraction>)]
    pub items: Vec<Value>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    Created,
    Replayed,
    Error,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResult {
    /// Position of the item in the request.
    pub index: usize,
    pub status: BatchStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interaction: Option<Interaction>,
    /// The reward plugins' effects, as in a single ingest (absent when
    /// empty, and for a failed item).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rewards: Vec<RewardRun>,
    /// `{code, message, details}`, as in error responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<super::error::ErrorDetail>,
}

/// A stored (or replayed) interaction with what the reward plugins did.
#[derive(Serialize, ToSchema)]
pub struct IngestResponse {
    #[serde(flatten)]
    pub interaction: Interaction,
    /// One entry per active reward-scheme plugin (status `applied` or
    /// `failed`); on a replay, the entries the first ingest wrote (status
    /// `replayed`). Absent when empty (the tenant runs no reward plugin, or
    /// a replay whose first ingest wrote no reward entry), so a stored
    /// interaction reads back exactly as it was returned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rewards: Vec<RewardRun>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResponse {
    pub results: Vec<BatchResult>,
    pub created: usize,
    pub replayed: usize,
    pub failed: usize,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TimelineQuery {
    /// Only this kind.
    pub kind: Option<String>,
    /// Occurred strictly after this RFC 3339 time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub after: Option<OffsetDateTime>,
    /// Occurred strictly before this RFC 3339 time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub before: Option<OffsetDateTime>,
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKind {
    /// `[a-z][a-z0-9_.-]{0,63}`, not a built-in kind.
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// An error as the `{code, message, details}` object of a batch result.
fn error_detail(err: Error) -> super::error::ErrorDetail {
    let body = err.body();
    let text = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    super::error::ErrorDetail {
        code: text("code"),
        message: text("message"),
        details: body["details"].clone(),
    }
}

/// Ingest one interaction (idempotent with `idempotency_key`).
#[utoipa::path(post, path = "/v1/interactions", tag = "interactions", request_body = NewInteraction,
    responses(
        (status = 201, description = "Stored", body = IngestResponse),
        (status = 200, description = "Replay of an earlier request with the same idempotency key and body",
            body = IngestResponse, headers(("idempotent-replayed" = String, description = "`true`"))),
        (status = 404, description = "customer_id does not exist", body = ErrorBody),
        (status = 409, description = "idempotency_conflict", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn ingest(State(s): State<AppState>, auth: Auth, Json(body): Json<NewInteraction>) -> ApiResult<Response> {
    let tenant = auth.write()?;
    let (interaction, outcome, rewards) = s.plugins.ingest_with_rewards(&tenant, body).await?;
    let response = IngestResponse { interaction, rewards };
    Ok(created_or_replayed(
        outcome == IngestOutcome::Created,
        StatusCode::CREATED,
        response,
    ))
}

/// Ingest up to 1000 interactions in one transaction, with a result per item.
#[utoipa::path(post, path = "/v1/interactions/batch", tag = "interactions", request_body = BatchRequest,
    responses((status = 200, body = BatchResponse), (status = 422, description = "batch_too_large or a malformed body",
        body = ErrorBody)))]
async fn ingest_batch(State(s): State<AppState>, auth: Auth, Json(body): Json<BatchRequest>) -> ApiResult<Response> {
    let tenant = auth.write()?;
    if body.items.len() > MAX_BATCH {
        let error = json!({ "error": {
            "code": "batch_too_large",
            "message": format!("a batch holds at most {MAX_BATCH} items; this one has {}", body.items.len()),
            "details": { "field": "items", "max_items": MAX_BATCH, "items": body.items.len() },
        }});
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, axum::Json(error)).into_response());
    }
    // Parse each item on its own so one malformed item is one failed result.
    let mut results: Vec<Option<BatchResult>> = Vec::with_capacity(body.items.len());
    let mut parsed = Vec::with_capacity(body.items.len());
    let mut parsed_index = Vec::with_capacity(body.items.len());
    for (index, item) in body.items.into_iter().enumerate() {
        match serde_json::from_value::<NewInteraction>(item) {
            Ok(new) => {
                parsed_index.push(index);
                parsed.push(new);
                results.push(None);
            }
            Err(e) => results.push(Some(BatchResult {
                index,
                status: BatchStatus::Error,
                interaction: None,
                rewards: Vec::new(),
                error: Some(error_detail(Error::invalid(format!("items[{index}]"), e.to_string()))),
            })),
        }
    }
    let outcomes = s.plugins.ingest_batch_with_rewards(&tenant, parsed).await?;
    for (index, outcome) in parsed_index.into_iter().zip(outcomes) {
        results[index] = Some(match outcome {
            Ok((interaction, outcome, rewards)) => BatchResult {
                index,
                status: match outcome {
                    IngestOutcome::Created => BatchStatus::Created,
                    IngestOutcome::Replayed => BatchStatus::Replayed,
                },
                interaction: Some(interaction),
                rewards,
                error: None,
            },
            Err(e) => BatchResult {
                index,
                status: BatchStatus::Error,
                interaction: None,
                rewards: Vec::new(),
                error: Some(error_detail(e.into())),
            },
        });
    }
    let results: Vec<BatchResult> = results.into_iter().flatten().collect();
    let count = |want: fn(&BatchStatus) -> bool| results.iter().filter(|r| want(&r.status)).count();
    let response = BatchResponse {
        created: count(|s| matches!(s, BatchStatus::Created)),
        replayed: count(|s| matches!(s, BatchStatus::Replayed)),
        failed: count(|s| matches!(s, BatchStatus::Error)),
        results,
    };
    Ok(Json(response).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRewards {
    /// The reward-scheme plugin to run again.
    pub plugin: String,
}

/// Run one reward plugin again on a stored interaction (admin), e.g. after
/// it failed and was fixed or resumed. Applies at most once: 409
/// `rewards_already_applied` when the plugin already wrote ledger entries
/// for the interaction. A plugin that fails again answers 200 with status
/// `failed`, as in an ingest.
#[utoipa::path(post, path = "/v1/interactions/{id}/rewards/retry", tag = "interactions",
    params(("id" = String, Path)), request_body = RetryRewards,
    responses((status = 200, body = RewardRun),
        (status = 404, description = "No such interaction or reward plugin", body = ErrorBody),
        (status = 409, description = "rewards_already_applied or plugin_not_active", body = ErrorBody)))]
async fn retry_rewards(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Json(body): Json<RetryRewards>,
) -> ApiResult<Json<RewardRun>> {
    let tenant = auth.admin()?;
    Ok(Json(s.plugins.retry_rewards(&tenant, &id, &body.plugin).await?))
}

/// One interaction with its line items.
#[utoipa::path(get, path = "/v1/interactions/{id}", tag = "interactions", params(("id" = String, Path)),
    responses((status = 200, body = Interaction), (status = 404, body = ErrorBody)))]
async fn get_interaction(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Interaction>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.get_interaction(&tenant, &id).await?))
}

/// A customer's interactions, newest first.
#[utoipa::path(get, path = "/v1/customers/{id}/interactions", tag = "interactions",
    params(("id" = String, Path), TimelineQuery),
    responses((status = 200, body = Page<Interaction>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn timeline(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<TimelineQuery>,
) -> ApiResult<Json<Page<Interaction>>> {
    let tenant = auth.read()?;
    let filter = TimelineFilter {
        kind: q.kind,
        after: q.after,
        before: q.before,
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(Json(s.store.customer_timeline(&tenant, &id, filter).await?))
}

/// Define a tenant interaction kind (admin).
#[utoipa::path(post, path = "/v1/interaction-kinds", tag = "interactions", request_body = NewKind,
    responses((status = 201, body = InteractionKind), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_kind(
    State(s): State<AppState>,
    auth: Auth,
    Json(body): Json<NewKind>,
) -> ApiResult<(StatusCode, Json<InteractionKind>)> {
    let tenant = auth.admin()?;
    Ok((
        StatusCode::CREATED,
        Json(
            s.store
                .create_interaction_kind(&tenant, &body.name, &body.description)
                .await?,
        ),
    ))
}

/// Built-in and tenant-defined interaction kinds.
#[utoipa::path(get, path = "/v1/interaction-kinds", tag = "interactions",
    responses((status = 200, body = Vec<InteractionKind>)))]
async fn list_kinds(State(s): State<AppState>, auth: Auth) -> ApiResult<Json<Vec<InteractionKind>>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.list_interaction_kinds(&tenant).await?))
}
