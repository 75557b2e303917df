//! Store: the durable outbox of outbound messages, its delivery log, and
//! message templates. This file holds the types and row mapping the parts
//! share; the parts are `messages/outbox.rs` (enqueue, claims, attempts,
//! replay) and `messages/templates.rs` (templates and rendering).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{StoreError, StoreResult, TenantId, from_millis, json_column};

mod outbox;
mod templates;

pub(in crate::store) use outbox::erase_customer_messages_tx;
pub use outbox::{enqueue_tx, get_message_tx};
pub use templates::{MessageTemplate, TemplateBody, validate_template_name};

const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;
const MAX_BODY_BYTES: usize = 256 * 1024;
const MAX_SUBJECT_CHARS: usize = 1_000;
const MAX_ADDRESS_CHARS: usize = 2_000;
const MAX_METADATA_BYTES: usize = 16 * 1024;
const MAX_DATA_BYTES: usize = 64 * 1024;
/// Longest error text kept per attempt (connectors may echo a whole body).
const MAX_ERROR_CHARS: usize = 2_000;

/// A message to enqueue, as the API (or a trigger) asks for it. Either a
/// `template` (rendered now with `customer`, `data` and `loyalty`) or a
/// literal `body` (and optional `subject`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    pub customer_id: String,
    /// e.g. `email`, `sms`, `webhook`: the tenant's connector for this
    /// channel delivers it.
    pub channel: String,
    /// Name of a message template; excludes `subject` and `body`.
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    /// Variables for the template (`data.*`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// Destination; default: the customer's email (channel `email`) or phone
    /// (`sms`, `chat`, `whatsapp`), else empty (the connector's config decides).
    #[serde(default)]
    pub to: Option<String>,
    /// Passed to the connector as is (a JSON object).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// Required (or the `Idempotency-Key` header): retrying the same request
    /// never sends twice.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Pending,
    Delivering,
    Delivered,
    Dead,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Delivering => "delivering",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<MessageStatus> {
        match s {
            "pending" => Some(MessageStatus::Pending),
            "delivering" => Some(MessageStatus::Delivering),
            "delivered" => Some(MessageStatus::Delivered),
            "dead" => Some(MessageStatus::Dead),
            _ => None,
        }
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Message {
    pub id: String,
    pub customer_id: String,
    pub channel: String,
    /// The connector plugin of the last attempt (absent before the first).
    pub connector: Option<String>,
    /// The resolved destination (may be empty: the connector's config decides).
    pub to: String,
    pub subject: Option<String>,
    pub body: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// The template it was rendered from, if any.
    pub template: Option<String>,
    pub idempotency_key: String,
    pub status: MessageStatus,
    /// Attempts made so far (all windows, see replay).
    pub attempts: i64,
    /// When the next attempt is due (pending messages).
    #[serde(with = "time::serde::rfc3339")]
    pub next_attempt_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    /// The provider's id of the delivery, when the connector reports one.
    pub provider_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Delivered,
    /// Failed; trying again later may succeed.
    Retryable,
    /// Failed for good (the connector said so).
    Failed,
    /// The worker lost its lease before recording (another node took the
    /// message over); its result was not applied.
    LeaseLost,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retryable => "retryable",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::LeaseLost => "lease_lost",
        }
    }

    fn parse(s: &str) -> StoreResult<AttemptOutcome> {
        match s {
            "delivered" => Ok(AttemptOutcome::Delivered),
            "retryable" => Ok(AttemptOutcome::Retryable),
            "failed" => Ok(AttemptOutcome::Failed),
            "lease_lost" => Ok(AttemptOutcome::LeaseLost),
            other => Err(StoreError::Corrupt(format!("unknown attempt outcome {other:?}"))),
        }
    }
}

/// One entry of a message's delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MessageAttempt {
    /// 1-based, over the message's whole life.
    pub attempt: i64,
    /// The node (process) that made it.
    pub node: String,
    pub connector: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub latency_ms: i64,
    pub outcome: AttemptOutcome,
    pub error: Option<String>,
}

/// Filters of the message list (combined with AND).
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub status: Option<MessageStatus>,
    pub customer_id: Option<String>,
    pub channel: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A message claimed by a worker: deliver it, then report with
/// [`Store::record_attempt`] (or hand it back with [`Store::release_claim`]).
#[derive(Debug, Clone)]
pub struct Claim {
    pub tenant: TenantId,
    pub message: Message,
    /// The node that holds the lease.
    pub node: String,
    /// This attempt's number (`message.attempts` after the claim): the fence.
    pub attempt: i64,
    pub lease_expires_at: i64,
    /// Start of the current retry window (creation, or the last replay).
    pub window_started_at: i64,
    /// Attempts in the current window, this one included.
    pub window_attempts: i64,
}

/// What becomes of a claimed message after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Delivered {
        provider_id: Option<String>,
    },
    /// Back to `pending`, due at this time (epoch ms).
    RetryAt(i64),
    Dead,
}

/// One attempt's result, as the worker reports it.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub connector: Option<String>,
    pub started_at: i64,
    pub latency_ms: i64,
    pub outcome: AttemptOutcome,
    pub error: Option<String>,
    pub next: Next,
}

const COLUMNS: &str = "id, customer_id, channel, connector, to_address, subject, body, metadata, template, \
                       idempotency_key, status, attempts, next_attempt_at, created_at, updated_at, delivered_at, \
                       last_error, provider_id";

fn message_from_row(row: &AnyRow) -> StoreResult<Message> {
    let status: String = row.try_get("status")?;
    let metadata: String = row.try_get("metadata")?;
    let delivered: Option<i64> = row.try_get("delivered_at")?;
    Ok(Message {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        channel: row.try_get("channel")?,
        connector: row.try_get("connector")?,
        to: row.try_get("to_address")?,
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        metadata: json_column(&metadata)?,
        template: row.try_get("template")?,
        idempotency_key: row.try_get("idempotency_key")?,
        status: MessageStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown message status {status:?}")))?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: from_millis(row.try_get("next_attempt_at")?),
        created_at: from_millis(row.try_get("created_at")?),
        updated_at: from_millis(row.try_get("updated_at")?),
        delivered_at: delivered.map(from_millis),
        last_error: row.try_get("last_error")?,
        provider_id: row.try_get("provider_id")?,
    })
}

/// Channel names: 1-32 of `a-z 0-9 _ -`, starting with a letter (they are
/// matched against the manifest's `channels`).
pub fn validate_channel(field: &str, channel: &str) -> StoreResult<()> {
    let ok = !channel.is_empty()
        && channel.len() <= 32
        && channel.as_bytes()[0].is_ascii_lowercase()
        && channel
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            field,
            format!(
                "invalid channel {channel:?}: use 1-32 characters of a-z, 0-9, '_' and '-', starting with a letter"
            ),
        ))
    }
}

fn text_limit(field: &str, text: &str, max_chars: usize) -> StoreResult<()> {
    if text.chars().count() > max_chars {
        return Err(StoreError::invalid(field, format!("at most {max_chars} characters")));
    }
    Ok(())
}

impl Message {
    fn next_attempt_at_ms(&self) -> i64 {
        crate::store::millis(self.next_attempt_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        assert!(validate_channel("c", "email").is_ok());
        assert!(validate_channel("c", "Email").is_err());
        assert!(validate_channel("c", "").is_err());
        assert!(validate_channel("c", "1sms").is_err());
    }
}
