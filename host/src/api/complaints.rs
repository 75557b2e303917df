//! /v1/complaints: complaint cases (see `store::complaints` for the
//! lifecycle, the due time and escalation, and the goodwill credit).
//! `POST /v1/complaints` stores a `complaint` interaction, which opens the
//! case; a `complaint` sent to `POST /v1/interactions` or by a connector
//! opens one just the same.
//!
//! Roles: any tenant key reads; opening, moving and escalating cases needs
//! a write key.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Auth, Json, Path, Query};
use super::{ApiResult, AppState};
use crate::store::Page;
use crate::store::complaints::{Complaint, ComplaintFilter, ComplaintStatus, ComplaintUpdate, NewComplaint};
use crate::store::interactions::IngestOutcome;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(open_complaint, list_complaints))
        .routes(routes!(get_complaint, update_complaint))
        .routes(routes!(escalate))
        .routes(routes!(customer_complaints))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ComplaintsQuery {
    /// Only cases in this status.
    pub status: Option<ComplaintStatus>,
    /// Only escalated (true) or never escalated (false) cases.
    pub escalated: Option<bool>,
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl ComplaintsQuery {
    fn filter(self, customer_id: Option<String>) -> ComplaintFilter {
        ComplaintFilter {
            status: self.status,
            escalated: self.escalated,
            customer_id,
            limit: self.limit,
            cursor: self.cursor,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Escalated {
    /// The cases escalated by this check (each case escalates once).
    pub items: Vec<Complaint>,
}

/// Open a complaint case (stored as a `complaint` interaction).
#[utoipa::path(post, path = "/v1/complaints", tag = "playbook", request_body = NewComplaint,
    responses((status = 201, description = "Opened", body = Complaint),
        (status = 200, description = "Replay of an earlier request with the same idempotency key", body = Complaint),
        (status = 404, description = "customer_id does not exist", body = ErrorBody),
        (status = 409, description = "idempotency_conflict or customer_erased", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn open_complaint(
    State(s): State<AppState>,
    auth: Auth,
    Json(body): Json<NewComplaint>,
) -> ApiResult<(StatusCode, Json<Complaint>)> {
    let tenant = auth.write()?;
    let (interaction, outcome, _) = s.plugins.ingest_with_rewards(&tenant, body.into_interaction()?).await?;
    let case = s.store.complaint_of_interaction(&tenant, &interaction.id).await?;
    let status = match outcome {
        IngestOutcome::Created => StatusCode::CREATED,
        IngestOutcome::Replayed => StatusCode::OK,
    };
    Ok((status, Json(case)))
}

/// The tenant's complaint cases, newest first.
#[utoipa::path(get, path = "/v1/complaints", tag = "playbook", params(ComplaintsQuery),
    responses((status = 200, body = Page<Complaint>), (status = 422, body = ErrorBody)))]
async fn list_complaints(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<ComplaintsQuery>,
) -> ApiResult<Json<Page<Complaint>>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.list_complaints(&tenant, q.filter(None)).await?))
}

/// A customer's complaint cases, newest first.
#[utoipa::path(get, path = "/v1/customers/{id}/complaints", tag = "playbook", params(("id" = String, Path), ComplaintsQuery),
    responses((status = 200, body = Page<Complaint>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn customer_complaints(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<ComplaintsQuery>,
) -> ApiResult<Json<Page<Complaint>>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.list_complaints(&tenant, q.filter(Some(id))).await?))
}

#[utoipa::path(get, path = "/v1/complaints/{id}", tag = "playbook", params(("id" = String, Path)),
    responses((status = 200, body = Complaint), (status = 404, body = ErrorBody)))]
async fn get_complaint(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<Json<Complaint>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.get_complaint(&tenant, &id).await?))
}

/// Move a case to `answered` or `resolved` (resolving credits the goodwill points once).
#[utoipa::path(patch, path = "/v1/complaints/{id}", tag = "playbook", params(("id" = String, Path)),
    request_body = ComplaintUpdate,
    responses((status = 200, body = Complaint), (status = 404, body = ErrorBody),
        (status = 409, description = "invalid_transition: the case is already past that status", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn update_complaint(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Json(body): Json<ComplaintUpdate>,
) -> ApiResult<Json<Complaint>> {
    let tenant = auth.write()?;
    Ok(Json(s.store.update_complaint(&tenant, &id, body).await?))
}

/// Escalate the tenant's overdue cases now (the server also checks every minute).
#[utoipa::path(post, path = "/v1/complaints/escalate", tag = "playbook", responses((status = 200, body = Escalated)))]
async fn escalate(State(s): State<AppState>, auth: Auth) -> ApiResult<Json<Escalated>> {
    let tenant = auth.write()?;
    Ok(Json(Escalated {
        items: s.store.escalate_complaints(&tenant).await?,
    }))
}
