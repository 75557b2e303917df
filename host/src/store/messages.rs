//! Store: the durable outbox of outbound messages, its delivery log, and
//! message templates.
//!
//! - [`enqueue_tx`] stores a message (status `pending`) on a connection the
//!   caller owns, so a trigger can enqueue inside the transaction of the
//!   event that caused it (outbox pattern): the message exists iff the event
//!   committed. Templates are rendered here (minijinja), and the address
//!   resolved, so the row holds exactly what will be sent whatever changes
//!   afterwards. Idempotent by key, like interaction ingest: the same
//!   request replays the stored message, a different one is a conflict.
//! - Workers of every node claim due messages with a lease
//!   ([`Store::claim_messages`]): PostgreSQL `FOR UPDATE SKIP LOCKED`, SQLite
//!   one `UPDATE` under `BEGIN IMMEDIATE`. A claim increments `attempts`;
//!   `delivering` rows whose lease expired (their node died) are claimed
//!   again. A result is written only while the worker still holds the lease
//!   (`lease_owner` and `attempts` unchanged, [`Store::record_attempt`]);
//!   otherwise it is logged as `lease_lost` and the newer claim wins.
//! - The delivery policy (backoff, attempt cap, window) is the caller's
//!   (`delivery.rs`); the store only persists its decisions.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::customers::get_customer_tx;
use super::sql::{Arg, Sql, page_limit};
use super::{Page, Store, StoreError, StoreResult, TenantId, cursor, from_millis, json_column, new_id, now_ms};
use crate::db::Backend;

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

/// A named message template (minijinja syntax).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MessageTemplate {
    pub name: String,
    /// The only channel it may be used on (`null`: any).
    pub channel: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A template as written with `PUT /v1/message-templates/{name}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    pub body: String,
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

fn template_from_row(row: &AnyRow) -> StoreResult<MessageTemplate> {
    Ok(MessageTemplate {
        name: row.try_get("name")?,
        channel: row.try_get("channel")?,
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        created_at: from_millis(row.try_get("created_at")?),
        updated_at: from_millis(row.try_get("updated_at")?),
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

/// Template names: 1-64 of `a-z 0-9 _ - .`.
pub fn validate_template_name(name: &str) -> StoreResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "name",
            "template names are 1-64 characters of a-z, 0-9, '_', '-' and '.'",
        ))
    }
}

fn text_limit(field: &str, text: &str, max_chars: usize) -> StoreResult<()> {
    if text.chars().count() > max_chars {
        return Err(StoreError::invalid(field, format!("at most {max_chars} characters")));
    }
    Ok(())
}

/// The template environment: strict about undefined variables (a message
/// saying "Hello ," is worse than a 422), no auto-escaping (the channel
/// decides what the body is), and a fuel budget so a template cannot loop
/// for long.
fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_fuel(Some(100_000));
    env
}

fn template_error(field: &str, err: &minijinja::Error) -> StoreError {
    StoreError::invalid(field, format!("template: {err:#}"))
}

/// Checks a template's syntax (at `PUT` time, not at first use).
fn compile_check(field: &str, source: &str) -> StoreResult<()> {
    let env = environment();
    env.template_from_str(source)
        .map(|_| ())
        .map_err(|e| template_error(field, &e))
}

fn render(field: &str, source: &str, ctx: &Value) -> StoreResult<String> {
    let env = environment();
    let template = env.template_from_str(source).map_err(|e| template_error(field, &e))?;
    template
        .render(minijinja::value::Serde(ctx))
        .map_err(|e| template_error(field, &e))
}

/// Where a channel's messages go when the request names no address.
fn default_address(channel: &str, email: Option<&str>, phone: Option<&str>) -> Result<String, &'static str> {
    let pick = |v: Option<&str>, what| {
        v.map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or(what)
    };
    match channel {
        "email" => pick(email, "email address"),
        "sms" | "chat" | "whatsapp" => pick(phone, "phone number"),
        _ => Ok(String::new()),
    }
}

fn request_hash(new: &NewMessage) -> String {
    // serde_json maps are sorted, so the text is canonical.
    let canonical = json!({
        "customer_id": new.customer_id,
        "channel": new.channel,
        "template": new.template,
        "subject": new.subject,
        "body": new.body,
        "data": new.data,
        "to": new.to,
        "metadata": new.metadata,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

fn validate(new: &NewMessage) -> StoreResult<String> {
    let key = new
        .idempotency_key
        .as_deref()
        .ok_or_else(|| StoreError::invalid("idempotency_key", "required (or the Idempotency-Key header)"))?;
    if key.trim().is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS || key.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            "idempotency_key",
            format!("1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters, not blank, without control characters"),
        ));
    }
    validate_channel("channel", &new.channel)?;
    match (&new.template, &new.body) {
        (Some(_), Some(_)) => return Err(StoreError::invalid("body", "give a template or a body, not both")),
        (Some(_), None) if new.subject.is_some() => {
            return Err(StoreError::invalid("subject", "a template brings its own subject"));
        }
        (None, None) => return Err(StoreError::invalid("body", "give a template or a body")),
        _ => {}
    }
    if let Some(body) = &new.body
        && body.len() > MAX_BODY_BYTES
    {
        return Err(StoreError::invalid("body", format!("at most {MAX_BODY_BYTES} bytes")));
    }
    if let Some(subject) = &new.subject {
        text_limit("subject", subject, MAX_SUBJECT_CHARS)?;
    }
    if let Some(to) = &new.to {
        text_limit("to", to, MAX_ADDRESS_CHARS)?;
    }
    if Value::Object(new.metadata.clone()).to_string().len() > MAX_METADATA_BYTES {
        return Err(StoreError::invalid(
            "metadata",
            format!("at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
    if Value::Object(new.data.clone()).to_string().len() > MAX_DATA_BYTES {
        return Err(StoreError::invalid("data", format!("at most {MAX_DATA_BYTES} bytes")));
    }
    Ok(key.to_string())
}

/// The stored message for `key`, if the same request stored it; a conflict
/// if a different request did.
async fn replay(conn: &mut AnyConnection, tenant: &TenantId, key: &str, hash: &str) -> StoreResult<Option<Message>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS}, request_hash FROM messages WHERE tenant_id = $1 AND idempotency_key = $2"
    ))
    .bind(tenant.as_str())
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let stored: String = row.try_get("request_hash")?;
    if stored != hash {
        return Err(StoreError::conflict(
            "idempotency_conflict",
            format!("idempotency key {key:?} was already used with a different message"),
        ));
    }
    Ok(Some(message_from_row(&row)?))
}

/// The customer's loyalty balance and tier name, for templates.
async fn loyalty_vars(conn: &mut AnyConnection, tenant: &TenantId, customer_id: &str) -> StoreResult<Value> {
    let row = sqlx::query(
        "SELECT a.balance, a.lifetime_earned, lt.name AS tier FROM loyalty_accounts a \
         LEFT JOIN loyalty_tiers lt ON lt.tenant_id = a.tenant_id AND lt.id = a.tier_id \
         WHERE a.tenant_id = $1 AND a.customer_id = $2",
    )
    .bind(tenant.as_str())
    .bind(customer_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        None => json!({ "balance": 0, "lifetime_earned": 0, "tier": null }),
        Some(row) => {
            let balance: i64 = row.try_get("balance")?;
            let lifetime: i64 = row.try_get("lifetime_earned")?;
            let tier: Option<String> = row.try_get("tier")?;
            json!({ "balance": balance, "lifetime_earned": lifetime, "tier": tier })
        }
    })
}

async fn template_tx(conn: &mut AnyConnection, tenant: &TenantId, name: &str) -> StoreResult<Option<MessageTemplate>> {
    let row = sqlx::query(
        "SELECT name, channel, subject, body, created_at, updated_at FROM message_templates \
         WHERE tenant_id = $1 AND name = $2",
    )
    .bind(tenant.as_str())
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(template_from_row).transpose()
}

/// Stores a message for delivery, on the caller's connection (inside the
/// caller's transaction, so a trigger's message commits with its event).
///
/// Returns the message and whether it was created (`false`: the same request
/// was already stored under this idempotency key; a different request with
/// the key is a `409 idempotency_conflict`). Errors: unknown customer 404;
/// erased customer 409 `customer_erased`; unknown template, template not for
/// this channel, template errors (e.g. an undefined variable) 422; no
/// address for the channel 422 `no_address`.
///
/// On SQLite, call it inside a write transaction (`Db::begin_write`) so the
/// idempotency check and the insert are one atomic step.
pub async fn enqueue_tx(conn: &mut AnyConnection, tenant: &TenantId, new: NewMessage) -> StoreResult<(Message, bool)> {
    let key = validate(&new)?;
    let hash = request_hash(&new);
    if let Some(existing) = replay(conn, tenant, &key, &hash).await? {
        return Ok((existing, false));
    }
    let customer = get_customer_tx(conn, tenant, &new.customer_id).await?;
    if customer.erased_at.is_some() {
        return Err(StoreError::conflict(
            "customer_erased",
            "this customer's data has been erased",
        ));
    }
    if super::suppressions::is_suppressed_tx(conn, tenant, &customer.id, &new.channel).await? {
        return Err(StoreError::conflict(
            "customer_unsubscribed",
            format!("this customer unsubscribed from channel {:?}", new.channel),
        ));
    }
    let (subject, body) = match &new.template {
        None => (new.subject.clone(), new.body.clone().unwrap_or_default()),
        Some(name) => {
            let template = template_tx(conn, tenant, name)
                .await?
                .ok_or_else(|| StoreError::invalid("template", format!("no message template named {name:?}")))?;
            if let Some(only) = &template.channel
                && *only != new.channel
            {
                return Err(StoreError::invalid(
                    "template",
                    format!("template {name:?} is for channel {only:?}, not {:?}", new.channel),
                ));
            }
            let ctx = json!({
                "customer": customer,
                "data": new.data,
                "loyalty": loyalty_vars(conn, tenant, &customer.id).await?,
            });
            let subject = template
                .subject
                .as_deref()
                .map(|s| render("template.subject", s, &ctx))
                .transpose()?;
            let body = render("template.body", &template.body, &ctx)?;
            if body.len() > MAX_BODY_BYTES {
                return Err(StoreError::invalid(
                    "template.body",
                    format!("rendered body exceeds {MAX_BODY_BYTES} bytes"),
                ));
            }
            (subject, body)
        }
    };
    let to = match new.to.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(to) => to.to_string(),
        None => {
            default_address(&new.channel, customer.email.as_deref(), customer.phone.as_deref()).map_err(|what| {
                StoreError::Unprocessable {
                    code: "no_address",
                    field: "to".into(),
                    message: format!(
                        "the customer has no {what} for channel {:?} and the request gives no `to`",
                        new.channel
                    ),
                }
            })?
        }
    };
    let id = new_id();
    let now = now_ms();
    let inserted = sqlx::query(
        "INSERT INTO messages (tenant_id, id, customer_id, channel, to_address, subject, body, metadata, template, \
         idempotency_key, request_hash, status, attempts, next_attempt_at, window_started_at, window_base_attempts, \
         created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', 0, $12, $12, 0, $12, $12) \
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(&id)
    .bind(&customer.id)
    .bind(&new.channel)
    .bind(&to)
    .bind(&subject)
    .bind(&body)
    .bind(Value::Object(new.metadata.clone()).to_string())
    .bind(&new.template)
    .bind(&key)
    .bind(&hash)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        // Lost a race on the key: the winner's row is visible now.
        let existing = replay(conn, tenant, &key, &hash)
            .await?
            .ok_or_else(|| StoreError::Corrupt("idempotency key conflicted but no message holds it".into()))?;
        return Ok((existing, false));
    }
    Ok((get_message_tx(conn, tenant, &id).await?, true))
}

pub async fn get_message_tx(conn: &mut AnyConnection, tenant: &TenantId, id: &str) -> StoreResult<Message> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM messages WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.as_str())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound { entity: "message" })?;
    message_from_row(&row)
}

/// GDPR erasure of a customer's messages, inside the erasure's transaction:
/// addresses, subjects, bodies, metadata and error texts (a provider may echo
/// an address) are blanked; messages not yet delivered become `dead` so they
/// are never sent, and a worker delivering one right now loses its lease.
/// Returns how many messages were scrubbed.
pub(crate) async fn erase_customer_messages_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
) -> StoreResult<u64> {
    sqlx::query(
        "UPDATE message_attempts SET error = NULL WHERE tenant_id = $1 AND error IS NOT NULL AND message_id IN \
         (SELECT id FROM messages WHERE tenant_id = $1 AND customer_id = $2)",
    )
    .bind(tenant.as_str())
    .bind(customer_id)
    .execute(&mut *conn)
    .await?;
    let updated = sqlx::query(
        "UPDATE messages SET to_address = '', subject = NULL, body = '', metadata = '{}', \
         last_error = CASE WHEN status IN ('pending', 'delivering') THEN 'customer erased before delivery' \
                      ELSE NULL END, \
         status = CASE WHEN status IN ('pending', 'delivering') THEN 'dead' ELSE status END, \
         lease_owner = NULL, lease_expires_at = NULL, updated_at = $3 \
         WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant.as_str())
    .bind(customer_id)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(updated.rows_affected())
}

fn clip(text: &str) -> String {
    if text.chars().count() <= MAX_ERROR_CHARS {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(MAX_ERROR_CHARS).collect();
        s.push('…');
        s
    }
}

impl Store {
    /// [`enqueue_tx`] in a transaction of its own.
    pub async fn enqueue_message(&self, tenant: &TenantId, new: NewMessage) -> StoreResult<(Message, bool)> {
        let mut tx = self.db().begin_write().await?;
        let result = enqueue_tx(&mut tx, tenant, new).await?;
        tx.commit().await?;
        Ok(result)
    }

    pub async fn get_message(&self, tenant: &TenantId, id: &str) -> StoreResult<Message> {
        let mut conn = self.db().pool().acquire().await?;
        get_message_tx(&mut conn, tenant, id).await
    }

    /// The message's delivery log, oldest attempt first (404 for an unknown
    /// message).
    pub async fn message_attempts(&self, tenant: &TenantId, id: &str) -> StoreResult<Vec<MessageAttempt>> {
        let mut conn = self.db().pool().acquire().await?;
        get_message_tx(&mut conn, tenant, id).await?;
        let rows = sqlx::query(
            "SELECT attempt, node, connector, started_at, latency_ms, outcome, error FROM message_attempts \
             WHERE tenant_id = $1 AND message_id = $2 ORDER BY attempt, started_at",
        )
        .bind(tenant.as_str())
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|row| {
                let outcome: String = row.try_get("outcome")?;
                Ok(MessageAttempt {
                    attempt: row.try_get("attempt")?,
                    node: row.try_get("node")?,
                    connector: row.try_get("connector")?,
                    started_at: from_millis(row.try_get("started_at")?),
                    latency_ms: row.try_get("latency_ms")?,
                    outcome: AttemptOutcome::parse(&outcome)?,
                    error: row.try_get("error")?,
                })
            })
            .collect()
    }

    /// Every message to one customer, oldest first (the GDPR export).
    pub async fn customer_messages(&self, tenant: &TenantId, customer_id: &str) -> StoreResult<Vec<Message>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM messages WHERE tenant_id = $1 AND customer_id = $2 ORDER BY id"
        ))
        .bind(tenant.as_str())
        .bind(customer_id)
        .fetch_all(self.db().pool())
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// The tenant's messages, newest first.
    pub async fn list_messages(&self, tenant: &TenantId, filter: MessageFilter) -> StoreResult<Page<Message>> {
        let limit = page_limit(filter.limit)?;
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM messages WHERE tenant_id = "));
        let p = sql.arg(Arg::Text(tenant.0.clone()));
        sql.push(&p);
        if let Some(c) = &filter.cursor {
            let (before_id,): (String,) = cursor::decode(c)?;
            let p = sql.arg(Arg::Text(before_id));
            sql.push(&format!(" AND id < {p}"));
        }
        if let Some(status) = filter.status {
            let p = sql.arg(Arg::Text(status.as_str().to_string()));
            sql.push(&format!(" AND status = {p}"));
        }
        if let Some(customer) = filter.customer_id {
            let p = sql.arg(Arg::Text(customer));
            sql.push(&format!(" AND customer_id = {p}"));
        }
        if let Some(channel) = filter.channel {
            let p = sql.arg(Arg::Text(channel));
            sql.push(&format!(" AND channel = {p}"));
        }
        let p = sql.arg(Arg::Int(limit + 1));
        sql.push(&format!(" ORDER BY id DESC LIMIT {p}"));
        let rows = sql.query().fetch_all(self.db().pool()).await?;
        let mut items = rows.iter().map(message_from_row).collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|m| cursor::encode(&(m.id.clone(),)))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Claims up to `limit` messages of any tenant that are due now, for
    /// `node`, for `lease_ms`: `pending` ones whose `next_attempt_at` has
    /// come, and `delivering` ones whose lease expired (their worker died or
    /// stalled). Each claim counts as an attempt.
    pub async fn claim_messages(&self, node: &str, lease_ms: i64, limit: i64) -> StoreResult<Vec<Claim>> {
        let now = now_ms();
        let expires = now + lease_ms;
        // PostgreSQL: concurrent claimers skip each other's locked rows
        // instead of queueing on them; the locking select is a CTE so it
        // runs exactly once (a plain `IN (subquery)` may be re-planned as a
        // join that evaluates it again and claims more than `limit`).
        // SQLite: one writer at a time anyway (BEGIN IMMEDIATE below), so
        // the subquery needs no lock clause.
        let due = "SELECT tenant_id, id FROM messages \
                   WHERE (status = 'pending' AND next_attempt_at <= $3) \
                      OR (status = 'delivering' AND lease_expires_at <= $3) \
                   ORDER BY next_attempt_at LIMIT $4";
        let update = "UPDATE messages SET status = 'delivering', attempts = attempts + 1, lease_owner = $1, \
                      lease_expires_at = $2, updated_at = $3";
        let returning =
            format!("RETURNING tenant_id, {COLUMNS}, lease_expires_at, window_started_at, window_base_attempts");
        let sql = match self.db().backend() {
            Backend::Postgres => format!(
                "WITH due AS ({due} FOR UPDATE SKIP LOCKED) \
                 {update} WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM due) {returning}"
            ),
            Backend::Sqlite => format!("{update} WHERE (tenant_id, id) IN ({due}) {returning}"),
        };
        let mut tx = self.db().begin_write().await?;
        let rows = sqlx::query(&sql)
            .bind(node)
            .bind(expires)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let message = message_from_row(row)?;
                let base: i64 = row.try_get("window_base_attempts")?;
                Ok(Claim {
                    tenant: TenantId::from_row(row.try_get("tenant_id")?),
                    node: node.to_string(),
                    attempt: message.attempts,
                    window_attempts: message.attempts - base,
                    lease_expires_at: row.try_get("lease_expires_at")?,
                    window_started_at: row.try_get("window_started_at")?,
                    message,
                })
            })
            .collect()
    }

    /// Records an attempt and applies its outcome, if `claim` still holds the
    /// lease. Returns `false` (and logs the attempt as `lease_lost`) when
    /// another claim took the message over meanwhile.
    pub async fn record_attempt(&self, claim: &Claim, report: &AttemptReport) -> StoreResult<bool> {
        let now = now_ms();
        let t = &claim.tenant;
        let mut tx = self.db().begin_write().await?;
        let error = report.error.as_deref().map(clip);
        let (status, next_at, delivered_at, provider_id) = match &report.next {
            Next::Delivered { provider_id } => (
                "delivered",
                claim.message.next_attempt_at_ms(),
                Some(now),
                provider_id.clone(),
            ),
            Next::RetryAt(at) => ("pending", *at, None, None),
            Next::Dead => ("dead", claim.message.next_attempt_at_ms(), None, None),
        };
        let updated = sqlx::query(
            "UPDATE messages SET status = $1, next_attempt_at = $2, delivered_at = $3, \
             provider_id = COALESCE($4, provider_id), last_error = $5, connector = COALESCE($6, connector), \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $7 \
             WHERE tenant_id = $8 AND id = $9 AND status = 'delivering' AND lease_owner = $10 AND attempts = $11",
        )
        .bind(status)
        .bind(next_at)
        .bind(delivered_at)
        .bind(&provider_id)
        .bind(if status == "delivered" { None } else { error.clone() })
        .bind(&report.connector)
        .bind(now)
        .bind(t.as_str())
        .bind(&claim.message.id)
        .bind(&claim.node)
        .bind(claim.attempt)
        .execute(&mut *tx)
        .await?;
        let held = updated.rows_affected() == 1;
        let (outcome, error) = if held {
            (report.outcome, error)
        } else {
            let lost = format!(
                "lease lost before the result was recorded (the attempt's own outcome: {}{})",
                report.outcome.as_str(),
                error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            );
            (AttemptOutcome::LeaseLost, Some(clip(&lost)))
        };
        sqlx::query(
            "INSERT INTO message_attempts (tenant_id, message_id, attempt, node, connector, started_at, latency_ms, \
             outcome, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (tenant_id, message_id, attempt, node) DO NOTHING",
        )
        .bind(t.as_str())
        .bind(&claim.message.id)
        .bind(claim.attempt)
        .bind(&claim.node)
        .bind(&report.connector)
        .bind(report.started_at)
        .bind(report.latency_ms)
        .bind(outcome.as_str())
        .bind(&error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(held)
    }

    /// Hands a claimed message back without an attempt having been made (no
    /// connector, node shutting down, lease too short to start): `pending`
    /// again, due at `next_at`, its attempt not counted. `error` (if any)
    /// becomes `last_error`. Fenced like [`Store::record_attempt`].
    pub async fn release_claim(&self, claim: &Claim, next_at: i64, error: Option<&str>) -> StoreResult<bool> {
        self.unclaim(claim, MessageStatus::Pending, Some(next_at), error).await
    }

    /// Gives up on a claimed message without an attempt (e.g. no connector
    /// for its channel until its window closed): `dead`, with `error`.
    pub async fn kill_claim(&self, claim: &Claim, error: &str) -> StoreResult<bool> {
        self.unclaim(claim, MessageStatus::Dead, None, Some(error)).await
    }

    /// Ends a claim without counting its attempt, fenced on the lease: the
    /// message becomes `status`, due at `next_at` (kept when `None`), with
    /// `error` (if any) as `last_error`.
    async fn unclaim(
        &self,
        claim: &Claim,
        status: MessageStatus,
        next_at: Option<i64>,
        error: Option<&str>,
    ) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE messages SET status = $1, attempts = attempts - 1, \
             next_attempt_at = COALESCE($2, next_attempt_at), last_error = COALESCE($3, last_error), \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $4 \
             WHERE tenant_id = $5 AND id = $6 AND status = 'delivering' AND lease_owner = $7 AND attempts = $8",
        )
        .bind(status.as_str())
        .bind(next_at)
        .bind(error.map(clip))
        .bind(now_ms())
        .bind(claim.tenant.as_str())
        .bind(&claim.message.id)
        .bind(&claim.node)
        .bind(claim.attempt)
        .execute(self.db().pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Sends a dead message again: `pending`, due now, with a new retry
    /// window. Its attempts so far stay in the delivery log. 409
    /// `message_not_dead` for any other status, `customer_erased` when its
    /// customer's data was erased (the message was blanked).
    pub async fn replay_message(&self, tenant: &TenantId, id: &str) -> StoreResult<Message> {
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        let message = get_message_tx(&mut tx, tenant, id).await?;
        if get_customer_tx(&mut tx, tenant, &message.customer_id)
            .await?
            .erased_at
            .is_some()
        {
            return Err(StoreError::conflict(
                "customer_erased",
                "this customer's data has been erased",
            ));
        }
        let updated = sqlx::query(
            "UPDATE messages SET status = 'pending', next_attempt_at = $1, window_started_at = $1, \
             window_base_attempts = attempts, updated_at = $1 \
             WHERE tenant_id = $2 AND id = $3 AND status = 'dead'",
        )
        .bind(now)
        .bind(tenant.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let message = get_message_tx(&mut tx, tenant, id).await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::conflict(
                "message_not_dead",
                format!(
                    "only dead messages can be replayed; this one is {}",
                    message.status.as_str()
                ),
            ));
        }
        tx.commit().await?;
        Ok(message)
    }

    /// Messages not yet delivered or dead, over every tenant (the outbox
    /// depth gauge).
    pub async fn outbox_depth(&self) -> StoreResult<i64> {
        let row =
            sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM messages WHERE status IN ('pending', 'delivering')")
                .fetch_one(self.db().pool())
                .await?;
        Ok(row.try_get("n")?)
    }

    /// Creates or replaces a template; `true` when it was created. The
    /// template is compiled first, so a syntax error is a 422 now rather
    /// than at the first message.
    pub async fn put_template(
        &self,
        tenant: &TenantId,
        name: &str,
        body: TemplateBody,
    ) -> StoreResult<(MessageTemplate, bool)> {
        validate_template_name(name)?;
        if let Some(channel) = &body.channel {
            validate_channel("channel", channel)?;
        }
        if body.body.len() > MAX_BODY_BYTES {
            return Err(StoreError::invalid("body", format!("at most {MAX_BODY_BYTES} bytes")));
        }
        compile_check("body", &body.body)?;
        if let Some(subject) = &body.subject {
            text_limit("subject", subject, MAX_SUBJECT_CHARS)?;
            compile_check("subject", subject)?;
        }
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        let updated = sqlx::query(
            "UPDATE message_templates SET channel = $1, subject = $2, body = $3, updated_at = $4 \
             WHERE tenant_id = $5 AND name = $6",
        )
        .bind(&body.channel)
        .bind(&body.subject)
        .bind(&body.body)
        .bind(now)
        .bind(tenant.as_str())
        .bind(name)
        .execute(&mut *tx)
        .await?;
        let created = updated.rows_affected() == 0;
        if created {
            sqlx::query(
                "INSERT INTO message_templates (tenant_id, name, channel, subject, body, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(tenant.as_str())
            .bind(name)
            .bind(&body.channel)
            .bind(&body.subject)
            .bind(&body.body)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let template = template_tx(&mut tx, tenant, name)
            .await?
            .ok_or_else(|| StoreError::Corrupt("template vanished inside its transaction".into()))?;
        tx.commit().await?;
        Ok((template, created))
    }

    pub async fn get_template(&self, tenant: &TenantId, name: &str) -> StoreResult<MessageTemplate> {
        let mut conn = self.db().pool().acquire().await?;
        template_tx(&mut conn, tenant, name).await?.ok_or(StoreError::NotFound {
            entity: "message template",
        })
    }

    pub async fn list_templates(&self, tenant: &TenantId) -> StoreResult<Vec<MessageTemplate>> {
        let rows = sqlx::query(
            "SELECT name, channel, subject, body, created_at, updated_at FROM message_templates \
             WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant.as_str())
        .fetch_all(self.db().pool())
        .await?;
        rows.iter().map(template_from_row).collect()
    }

    /// Deletes a template. Messages rendered from it keep their text.
    pub async fn delete_template(&self, tenant: &TenantId, name: &str) -> StoreResult<()> {
        let mut tx = self.db().begin_write().await?;
        // Triggers name templates (composite foreign key): say which rule is
        // in the way rather than fail on the constraint.
        let users: i64 = sqlx::query("SELECT COUNT(*) FROM message_triggers WHERE tenant_id = $1 AND template = $2")
            .bind(tenant.as_str())
            .bind(name)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if users > 0 {
            return Err(StoreError::conflict(
                "template_in_use",
                format!("{users} message trigger(s) use this template; delete them or point them elsewhere first"),
            ));
        }
        let deleted = sqlx::query("DELETE FROM message_templates WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                entity: "message template",
            });
        }
        Ok(())
    }
}

impl Message {
    fn next_attempt_at_ms(&self) -> i64 {
        super::millis(self.next_attempt_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_by_channel() {
        assert_eq!(default_address("email", Some(" a@b.c "), None), Ok("a@b.c".into()));
        assert_eq!(default_address("email", None, Some("+1")), Err("email address"));
        assert_eq!(default_address("sms", None, Some("+15550100")), Ok("+15550100".into()));
        assert_eq!(default_address("whatsapp", None, Some("  ")), Err("phone number"));
        assert_eq!(default_address("webhook", None, None), Ok(String::new()));
    }

    #[test]
    fn templates_are_strict() {
        let ctx = json!({ "customer": { "name": "Ada" }, "data": {}, "loyalty": { "balance": 5 } });
        assert_eq!(
            render("body", "Hi {{ customer.name }}, {{ loyalty.balance }} pts", &ctx).unwrap(),
            "Hi Ada, 5 pts"
        );
        assert!(render("body", "{{ data.missing }}", &ctx).is_err());
        assert!(compile_check("body", "{% if %}").is_err());
        assert_eq!(render("body", "<{{ customer.name }}>", &ctx).unwrap(), "<Ada>");
    }

    #[test]
    fn channel_names() {
        assert!(validate_channel("c", "email").is_ok());
        assert!(validate_channel("c", "Email").is_err());
        assert!(validate_channel("c", "").is_err());
        assert!(validate_channel("c", "1sms").is_err());
    }
}
