//! /v1/campaigns: send a message template to a segment, with a control
//! group, and see whether it worked (see `store/campaigns.rs`).
//!
//! `POST /v1/campaigns` stores the campaign and runs it to the end in a task
//! of its own, in batches, answering once every customer of the audience is
//! handled: a client that gives up waiting does not stop it, and a retry of
//! the same request (same idempotency key) waits for, or resumes, the same
//! campaign and never sends twice. Campaigns interrupted by a crash are
//! also resumed at start-up ([`resume_unfinished`]).
//!
//! Roles: reads need any tenant key; starting a campaign a write key.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Auth, Json, Path, Query};
use super::interactions::created_or_replayed;
use super::messages::idempotency_key_from;
use super::{ApiResult, AppState, Error};
use crate::store::campaigns::{Campaign, CampaignRecipient, CampaignReport, NewCampaign};
use crate::store::{Page, Store, TenantId};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_campaign, list_campaigns))
        .routes(routes!(get_campaign))
        .routes(routes!(list_recipients))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Runs a campaign to the end on a task of its own, so that the request
/// going away does not interrupt it, and waits for it.
async fn run_detached(store: Store, tenant: TenantId, id: String) -> ApiResult<()> {
    tokio::spawn(async move { store.run_campaign(&tenant, &id).await })
        .await
        .map_err(|e| Error::Internal(anyhow::Error::new(e).context("campaign task")))??;
    Ok(())
}

/// Campaigns left `sending` by a stopped node, run to the end (called at
/// start-up; every node may call it, batches take turns on the campaign's
/// row).
pub async fn resume_unfinished(store: Store) {
    let unfinished = match store.unfinished_campaigns().await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list unfinished campaigns");
            return;
        }
    };
    for (tenant, id) in unfinished {
        if let Err(e) = store.run_campaign(&tenant, &id).await {
            tracing::warn!(tenant = %tenant, campaign = %id, error = %e, "resuming a campaign failed");
        }
    }
}

/// Send a template to every customer of a segment, holding a control group
/// out (idempotent; the key is required). Answers when every customer of the
/// audience has been handled: messaged (queued in the outbox), held out,
/// or set aside (unsubscribed from the channel, erased, no address).
#[utoipa::path(post, path = "/v1/campaigns", tag = "campaigns", request_body = NewCampaign,
    params(("Idempotency-Key" = Option<String>, Header, description = "Used when the body has no idempotency_key")),
    responses(
        (status = 201, description = "Sent: every customer of the audience handled", body = CampaignReport),
        (status = 200, description = "Replay of an earlier request with the same idempotency key and body \
            (resumed to the end if it had been interrupted)",
            body = CampaignReport, headers(("idempotent-replayed" = String, description = "`true`"))),
        (status = 409, description = "idempotency_conflict", body = ErrorBody),
        (status = 422, description = "validation_failed (unknown template, template for another channel, ...)",
            body = ErrorBody)))]
async fn create_campaign(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Json(mut body): Json<NewCampaign>,
) -> ApiResult<Response> {
    let tenant = auth.write()?;
    idempotency_key_from(&headers, &mut body.idempotency_key)?;
    let (campaign, created) = s.store.create_campaign(&tenant, body).await?;
    run_detached(s.store.clone(), tenant.clone(), campaign.id.clone()).await?;
    let report = s.store.get_campaign(&tenant, &campaign.id).await?;
    Ok(created_or_replayed(created, StatusCode::CREATED, report))
}

/// The tenant's campaigns with their counts, newest first.
#[utoipa::path(get, path = "/v1/campaigns", tag = "campaigns", params(PageQuery),
    responses((status = 200, body = Page<Campaign>), (status = 422, body = ErrorBody)))]
async fn list_campaigns(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<Campaign>>> {
    let tenant = auth.read()?;
    Ok(Json(
        s.store.list_campaigns(&tenant, q.limit, q.cursor.as_deref()).await?,
    ))
}

/// One campaign: its counts (delivered, failed, opened, ...) and its
/// results: conversion rate and revenue per customer of the recipients
/// against the control group in the conversion window, and the uplift.
#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "campaigns", params(("id" = String, Path)),
    responses((status = 200, body = CampaignReport), (status = 404, body = ErrorBody)))]
async fn get_campaign(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<CampaignReport>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.get_campaign(&tenant, &id).await?))
}

/// Every customer of a campaign's audience, by customer id: their arm
/// (`treatment` or `control`), what became of them, and their message.
#[utoipa::path(get, path = "/v1/campaigns/{id}/recipients", tag = "campaigns", params(("id" = String, Path), PageQuery),
    responses((status = 200, body = Page<CampaignRecipient>), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn list_recipients(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<CampaignRecipient>>> {
    let tenant = auth.read()?;
    Ok(Json(
        s.store
            .campaign_recipients(&tenant, &id, q.limit, q.cursor.as_deref())
            .await?,
    ))
}
