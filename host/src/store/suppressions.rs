//! Store: message suppressions. A customer who unsubscribed from a channel
//! gets no more messages on it: `store::messages::enqueue_tx` refuses to
//! queue them (409 `customer_unsubscribed`; a trigger skips the customer).
//!
//! Suppressions come from a connector's inbound `message_unsubscribed`
//! event (for every channel that connector serves; `plugins::inbound`) or
//! from the API (an admin recording an opt-out received elsewhere), and are
//! lifted only through the API. Recording one twice keeps the first.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::messages::validate_channel;
use super::{Store, StoreError, StoreResult, TenantId, from_millis, now_ms};

pub const MAX_REASON_CHARS: usize = 500;

/// One channel a customer will not be messaged on.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Suppression {
    pub channel: String,
    /// `inbound:<connector>` or `api`.
    pub source: String,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A suppression recorded through the API.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSuppression {
    pub channel: String,
    #[serde(default)]
    pub reason: Option<String>,
}

fn suppression_from_row(row: &AnyRow) -> StoreResult<Suppression> {
    Ok(Suppression {
        channel: row.try_get("channel")?,
        source: row.try_get("source")?,
        reason: row.try_get("reason")?,
        created_at: from_millis(row.try_get("created_at")?),
    })
}

/// Whether `customer_id` unsubscribed from `channel`.
pub async fn is_suppressed_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
    channel: &str,
) -> StoreResult<bool> {
    Ok(sqlx::query(
        "SELECT channel FROM message_suppressions WHERE tenant_id = $1 AND customer_id = $2 AND channel = $3",
    )
    .bind(tenant.as_str())
    .bind(customer_id)
    .bind(channel)
    .fetch_optional(&mut *conn)
    .await?
    .is_some())
}

/// Removes a customer's suppressions (the customer is being deleted).
pub async fn delete_customer_suppressions_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM message_suppressions WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant.as_str())
        .bind(customer_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl Store {
    /// Records that `customer_id` will not be messaged on `channel`. Keeps
    /// an existing suppression as it is. 404 for an unknown customer.
    pub async fn suppress(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        channel: &str,
        source: &str,
        reason: &str,
    ) -> StoreResult<Suppression> {
        validate_channel("channel", channel)?;
        let reason = reason.trim();
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(StoreError::invalid(
                "reason",
                format!("at most {MAX_REASON_CHARS} characters"),
            ));
        }
        let mut tx = self.db().begin_write().await?;
        super::customers::get_customer_tx(&mut tx, tenant, customer_id).await?;
        sqlx::query(
            "INSERT INTO message_suppressions (tenant_id, customer_id, channel, source, reason, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, customer_id, channel) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(customer_id)
        .bind(channel)
        .bind(source)
        .bind(reason)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT channel, source, reason, created_at FROM message_suppressions \
             WHERE tenant_id = $1 AND customer_id = $2 AND channel = $3",
        )
        .bind(tenant.as_str())
        .bind(customer_id)
        .bind(channel)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        suppression_from_row(&row)
    }

    /// The customer's suppressions, by channel. 404 for an unknown customer.
    pub async fn list_suppressions(&self, tenant: &TenantId, customer_id: &str) -> StoreResult<Vec<Suppression>> {
        let mut conn = self.db().pool().acquire().await?;
        super::customers::get_customer_tx(&mut conn, tenant, customer_id).await?;
        let rows = sqlx::query(
            "SELECT channel, source, reason, created_at FROM message_suppressions \
             WHERE tenant_id = $1 AND customer_id = $2 ORDER BY channel",
        )
        .bind(tenant.as_str())
        .bind(customer_id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(suppression_from_row).collect()
    }

    /// Lets the customer be messaged on `channel` again. 404 when there is
    /// no such suppression (or customer).
    pub async fn lift_suppression(&self, tenant: &TenantId, customer_id: &str, channel: &str) -> StoreResult<()> {
        let done =
            sqlx::query("DELETE FROM message_suppressions WHERE tenant_id = $1 AND customer_id = $2 AND channel = $3")
                .bind(tenant.as_str())
                .bind(customer_id)
                .bind(channel)
                .execute(self.db().pool())
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { entity: "suppression" });
        }
        Ok(())
    }
}
