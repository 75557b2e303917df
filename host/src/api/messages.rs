//! /v1 messages and message templates: the outbound outbox.
//!
//! `POST /v1/messages` stores the message (rendered from its template, with
//! its address resolved) and answers 202 once it is committed: delivery
//! happens later, on any node, through the tenant's connector for the
//! channel (see `delivery.rs`). The idempotency key is required (in the
//! body or the `Idempotency-Key` header); a repeat of the same request
//! answers 200 with the stored message and `idempotent-replayed: true`, a
//! different request with the same key 409 `idempotency_conflict`.
//!
//! Roles: reads need any tenant key; sending and replaying a write key;
//! templates are the tenant's configuration, written with an admin key.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Auth, Json, Path, Query};
use super::interactions::created_or_replayed;
use super::{ApiResult, AppState, Error};
use crate::store::Page;
use crate::store::messages::{
    Message, MessageAttempt, MessageFilter, MessageStatus, MessageTemplate, NewMessage, TemplateBody,
};
use crate::store::suppressions::{NewSuppression, Suppression};

/// Request header carrying the idempotency key (when the body has none).
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Takes an `Idempotency-Key` header into a create's body (messages,
/// campaigns): the header fills an absent `idempotency_key`, and a body
/// that names another key is refused (422) rather than silently preferred.
pub fn idempotency_key_from(headers: &HeaderMap, in_body: &mut Option<String>) -> ApiResult<()> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(());
    };
    let key = value
        .to_str()
        .map_err(|_| Error::bad_request("invalid_header", "Idempotency-Key must be visible ASCII"))?;
    match in_body {
        None => *in_body = Some(key.to_string()),
        Some(given) if given != key => {
            return Err(Error::invalid(
                "idempotency_key",
                "the body's idempotency_key and the Idempotency-Key header differ",
            ));
        }
        Some(_) => {}
    }
    Ok(())
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send_message, list_messages))
        .routes(routes!(get_message))
        .routes(routes!(replay_message))
        .routes(routes!(list_templates))
        .routes(routes!(put_template, get_template, delete_template))
        .routes(routes!(list_suppressions, add_suppression))
        .routes(routes!(lift_suppression))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListMessagesQuery {
    /// pending, delivering, delivered or dead.
    pub status: Option<String>,
    pub customer_id: Option<String>,
    pub channel: Option<String>,
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A message with its delivery log.
#[derive(Serialize, ToSchema)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: Message,
    /// Every attempt, oldest first.
    pub attempts_log: Vec<MessageAttempt>,
}

/// Queue a message to a customer (idempotent; the key is required).
#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = NewMessage,
    params(("Idempotency-Key" = Option<String>, Header, description = "Used when the body has no idempotency_key")),
    responses(
        (status = 202, description = "Stored; it will be delivered by the tenant's connector for the channel", body = Message),
        (status = 200, description = "Replay of an earlier request with the same idempotency key and body",
            body = Message, headers(("idempotent-replayed" = String, description = "`true`"))),
        (status = 404, description = "customer_id does not exist", body = ErrorBody),
        (status = 409, description = "idempotency_conflict or customer_erased", body = ErrorBody),
        (status = 422, description = "validation_failed (unknown template, template error, ...) or no_address", body = ErrorBody)))]
async fn send_message(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Json(mut body): Json<NewMessage>,
) -> ApiResult<Response> {
    let tenant = auth.write()?;
    idempotency_key_from(&headers, &mut body.idempotency_key)?;
    let (message, created) = s.store.enqueue_message(&tenant, body).await?;
    Ok(created_or_replayed(created, StatusCode::ACCEPTED, message))
}

/// The tenant's messages, newest first.
#[utoipa::path(get, path = "/v1/messages", tag = "messages", params(ListMessagesQuery),
    responses((status = 200, body = Page<Message>), (status = 422, body = ErrorBody)))]
async fn list_messages(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<ListMessagesQuery>,
) -> ApiResult<Json<Page<Message>>> {
    let tenant = auth.read()?;
    let status = match q.status.as_deref() {
        None => None,
        Some(text) => Some(
            MessageStatus::parse(text)
                .ok_or_else(|| Error::invalid("status", "expected pending, delivering, delivered or dead"))?,
        ),
    };
    let filter = MessageFilter {
        status,
        customer_id: q.customer_id,
        channel: q.channel,
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(Json(s.store.list_messages(&tenant, filter).await?))
}

/// One message with its delivery log.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages", params(("id" = String, Path)),
    responses((status = 200, body = MessageDetail), (status = 404, body = ErrorBody)))]
async fn get_message(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<Json<MessageDetail>> {
    let tenant = auth.read()?;
    let message = s.store.get_message(&tenant, &id).await?;
    let attempts_log = s.store.message_attempts(&tenant, &id).await?;
    Ok(Json(MessageDetail { message, attempts_log }))
}

/// Send a dead message again (new retry window; its log is kept).
#[utoipa::path(post, path = "/v1/messages/{id}/replay", tag = "messages", params(("id" = String, Path)),
    responses((status = 202, body = Message), (status = 404, body = ErrorBody),
        (status = 409, description = "message_not_dead", body = ErrorBody)))]
async fn replay_message(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    let tenant = auth.write()?;
    let message = s.store.replay_message(&tenant, &id).await?;
    let after =
        serde_json::json!({ "status": message.status, "channel": message.channel, "attempts": message.attempts });
    super::audit::record(
        &s,
        &auth,
        Some(&tenant),
        "message.replay",
        format!("message:{id}"),
        Some(&serde_json::json!({ "status": "dead" })),
        Some(&after),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(message)))
}

/// The tenant's message templates, by name.
#[utoipa::path(get, path = "/v1/message-templates", tag = "messages",
    responses((status = 200, body = Vec<MessageTemplate>)))]
async fn list_templates(State(s): State<AppState>, auth: Auth) -> ApiResult<Json<Vec<MessageTemplate>>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.list_templates(&tenant).await?))
}

/// Create or replace a template (admin). minijinja syntax; variables
/// `customer` (id, external_id, name, email, phone, attributes, ...),
/// `data` (the request's object) and `loyalty` (balance, lifetime_earned,
/// tier). An undefined variable is an error when a message is rendered.
#[utoipa::path(put, path = "/v1/message-templates/{name}", tag = "messages", params(("name" = String, Path)),
    request_body = TemplateBody,
    responses((status = 201, body = MessageTemplate), (status = 200, body = MessageTemplate),
        (status = 422, description = "bad name, channel or template syntax", body = ErrorBody)))]
async fn put_template(
    State(s): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    Json(body): Json<TemplateBody>,
) -> ApiResult<(StatusCode, Json<MessageTemplate>)> {
    let tenant = auth.admin()?;
    let (template, created) = s.store.put_template(&tenant, &name, body).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(template)))
}

#[utoipa::path(get, path = "/v1/message-templates/{name}", tag = "messages", params(("name" = String, Path)),
    responses((status = 200, body = MessageTemplate), (status = 404, body = ErrorBody)))]
async fn get_template(
    State(s): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<MessageTemplate>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.get_template(&tenant, &name).await?))
}

/// Delete a template (admin). Messages rendered from it keep their text.
#[utoipa::path(delete, path = "/v1/message-templates/{name}", tag = "messages", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 409, description = "template_in_use: a message trigger uses it", body = ErrorBody)))]
async fn delete_template(State(s): State<AppState>, auth: Auth, Path(name): Path<String>) -> ApiResult<StatusCode> {
    let tenant = auth.admin()?;
    s.store.delete_template(&tenant, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The channels a customer will not be messaged on (unsubscribes).
#[utoipa::path(get, path = "/v1/customers/{customer_id}/suppressions", tag = "messages",
    params(("customer_id" = String, Path)),
    responses((status = 200, body = Vec<Suppression>), (status = 404, body = ErrorBody)))]
async fn list_suppressions(
    State(s): State<AppState>,
    auth: Auth,
    Path(customer_id): Path<String>,
) -> ApiResult<Json<Vec<Suppression>>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.list_suppressions(&tenant, &customer_id).await?))
}

/// Record that a customer opted out of a channel (e.g. told a shop
/// assistant); the outbox refuses their messages on it from now on.
#[utoipa::path(post, path = "/v1/customers/{customer_id}/suppressions", tag = "messages",
    params(("customer_id" = String, Path)), request_body = NewSuppression,
    responses((status = 201, body = Suppression), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn add_suppression(
    State(s): State<AppState>,
    auth: Auth,
    Path(customer_id): Path<String>,
    Json(body): Json<NewSuppression>,
) -> ApiResult<(StatusCode, Json<Suppression>)> {
    let tenant = auth.write()?;
    let reason = body.reason.as_deref().unwrap_or("recorded through the API");
    let suppression = s
        .store
        .suppress(&tenant, &customer_id, &body.channel, "api", reason)
        .await?;
    Ok((StatusCode::CREATED, Json(suppression)))
}

/// Let the customer be messaged on the channel again (they re-subscribed).
#[utoipa::path(delete, path = "/v1/customers/{customer_id}/suppressions/{channel}", tag = "messages",
    params(("customer_id" = String, Path), ("channel" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn lift_suppression(
    State(s): State<AppState>,
    auth: Auth,
    Path((customer_id, channel)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let tenant = auth.admin()?;
    s.store.lift_suppression(&tenant, &customer_id, &channel).await?;
    Ok(StatusCode::NO_CONTENT)
}
