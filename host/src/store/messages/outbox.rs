//! The durable outbox: enqueue (idempotent by key, templates rendered and
//! address resolved at enqueue), claims with a lease, attempts and their log,
//! replay, and the reads of messages. Its own file because its leases and
//! idempotency are what an outbox bug is about.
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

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use super::templates::{loyalty_vars, render, template_tx};
use super::{
    AttemptOutcome, AttemptReport, COLUMNS, Claim, MAX_ADDRESS_CHARS, MAX_BODY_BYTES, MAX_DATA_BYTES, MAX_ERROR_CHARS,
    MAX_IDEMPOTENCY_KEY_CHARS, MAX_METADATA_BYTES, MAX_SUBJECT_CHARS, Message, MessageAttempt, MessageFilter,
    MessageStatus, NewMessage, Next, message_from_row, text_limit, validate_channel,
};
use crate::db::Backend;
use crate::store::customers::get_customer_tx;
use crate::store::sql::{Arg, Sql, page_limit};
use crate::store::{Page, Store, StoreError, StoreResult, TenantId, cursor, from_millis, new_id, now_ms};

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
    if crate::store::suppressions::is_suppressed_tx(conn, tenant, &customer.id, &new.channel).await? {
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
pub(in crate::store) async fn erase_customer_messages_tx(
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
}
