//! `POST /v1/channels/{connector}/inbound`: where a channel provider reports
//! events (delivered, opened, clicked, replied, unsubscribed, bounced, ...)
//! to a tenant's connector plugin, which verifies the sender's signature and
//! turns the request into interactions (see `plugins::inbound`).
//!
//! Which tenant. Providers differ in what they can send: some let the
//! integrator add an `Authorization` header, many only let them choose a
//! URL. So the tenant is either the one of a tenant write key in
//! `Authorization: Bearer`, or, without that header, the `tenant` query
//! parameter; in the second case the connector's signature check is the
//! only proof of the sender, which is why connectors must verify (the
//! first-party ones always do, with a per-tenant secret from their config).
//! An unknown tenant and a connector the tenant has not enabled get the same
//! 404, so the endpoint does not reveal which tenants exist.
//!
//! The plugin sees the method, path, headers and raw body, minus
//! `Authorization` and `Cookie`: a tenant's API key is never shown to a
//! plugin.
//!
//! Answers: 200 with one result per event (`created`, `replayed` or
//! `failed` with the error: a failed event, e.g. an unknown kind, will not
//! succeed on a retry, so the provider should not retry); 401 when the
//! signature is refused; 400 when the connector cannot parse the request;
//! 404 as above; 502 when the connector itself failed (trap, timeout), so
//! that the provider retries later.

use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Json, Path, Query, RawBody};
use super::{ApiResult, AppState, Error};
use crate::plugins::inbound::{InboundFailure, RawInbound, accepted};
use crate::store::TenantId;
use crate::store::interactions::IngestOutcome;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(inbound))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct InboundQuery {
    /// The tenant, for senders that cannot send an `Authorization` header.
    /// Ignored when a key is sent (the key's tenant wins).
    pub tenant: Option<String>,
}

/// What became of one event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventResult {
    /// The event's position in the connector's answer.
    pub index: usize,
    /// `created`, `replayed` or `failed`.
    pub status: &'static str,
    pub kind: String,
    pub customer_external_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub error: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InboundResponse {
    pub connector: String,
    pub events: Vec<EventResult>,
}

/// Headers the plugin must never see.
fn visible_to_plugin(name: &str) -> bool {
    !name.eq_ignore_ascii_case("authorization") && !name.eq_ignore_ascii_case("cookie")
}

/// The tenant of the key in `Authorization` (write access needed), or of
/// the `tenant` query parameter when no key is sent.
async fn tenant_of(state: &AppState, headers: &HeaderMap, query: &InboundQuery) -> ApiResult<TenantId> {
    if let Some(header) = headers.get(axum::http::header::AUTHORIZATION) {
        return super::extract::Auth::from_header(state, header).await?.write();
    }
    let id = query.tenant.as_deref().ok_or(Error::Unauthorized)?;
    // An unknown tenant looks like a missing connector. The id names a
    // tenant that exists, not one the caller may act for: the connector's
    // signature check, run next, is what authenticates the sender.
    match state.store.existing_tenant(id).await {
        Ok(tenant) => Ok(tenant),
        Err(crate::store::StoreError::NotFound { .. }) => Err(Error::NotFound("connector")),
        Err(e) => Err(e.into()),
    }
}

/// Receive a channel provider's event(s) through the tenant's connector.
#[utoipa::path(post, path = "/v1/channels/{connector}/inbound", tag = "channels",
    params(("connector" = String, Path, description = "The connector plugin's id"), InboundQuery),
    request_body(content = Vec<u8>, description = "Whatever the provider sends; the connector parses it",
        content_type = "application/octet-stream"),
    responses((status = 200, body = InboundResponse),
        (status = 400, description = "the connector could not parse the request", body = ErrorBody),
        (status = 401, description = "signature refused, or a bad API key", body = ErrorBody),
        (status = 404, description = "no such connector for this tenant", body = ErrorBody),
        (status = 502, description = "the connector failed; retry later", body = ErrorBody)))]
async fn inbound(
    State(s): State<AppState>,
    Path(connector): Path<String>,
    Query(query): Query<InboundQuery>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Json<InboundResponse>> {
    let tenant = tenant_of(&s, &headers, &query).await?;
    let request = RawInbound {
        method: method.as_str().to_owned(),
        path: uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default(),
        headers: headers
            .iter()
            .filter(|(name, _)| visible_to_plugin(name.as_str()))
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let (_run, events) =
        s.plugins
            .receive_inbound(&tenant, &connector, request)
            .await
            .map_err(|failure| match failure {
                InboundFailure::NoConnector(_) => Error::NotFound("connector"),
                InboundFailure::Unauthenticated(message) => Error::SignatureRejected(message),
                InboundFailure::Malformed(message) => Error::bad_request("inbound_malformed", message),
                InboundFailure::Connector(fail) => Error::PluginFailed(fail),
                InboundFailure::Store(e) => e.into(),
            })?;
    tracing::info!(tenant = %tenant, connector = %connector, events = events.len(), accepted = accepted(&events),
        "inbound channel events");
    let events = events
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            let (status, interaction_id, error) = match e.result {
                Ok((interaction, IngestOutcome::Created, _)) => ("created", Some(interaction.id), None),
                Ok((interaction, IngestOutcome::Replayed, _)) => ("replayed", Some(interaction.id), None),
                Err(err) => ("failed", None, Some(Error::from(err).body())),
            };
            EventResult {
                index,
                status,
                kind: e.event.kind,
                customer_external_id: e.event.customer_external_id,
                interaction_id,
                error,
            }
        })
        .collect();
    Ok(Json(InboundResponse { connector, events }))
}
