//! Store: GDPR — the export of everything held on one customer (right of
//! access / portability) and erasure of their personal data (right to be
//! forgotten).
//!
//! The export reads straight from the tables, in one read transaction with a
//! single snapshot, so it is consistent and independent of how the other
//! store modules shape their API types: it is a document with its own
//! `format_version`.
//!
//! Erasure removes what identifies the person (name, email, phone, free-form
//! attributes, external id, interaction payloads) and keeps what does not
//! (amounts, kinds, times, channels, line items, the loyalty ledger, which
//! messages were sent when — their addresses and texts are blanked), so
//! tenant totals and the ledger's `balance == SUM(points)` invariant survive.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::loyalty::{
    Allocation, LEDGER_COLUMNS, LedgerEntry, TIER_CHANGE_COLUMNS, TierChange, begin_read, entry_from_row,
    require_customer, tier_change_from_row,
};
use super::{Store, StoreError, StoreResult, TenantId, from_millis, json_column, now_ms};

/// Bumped whenever the export document changes shape.
pub const EXPORT_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CustomerExport {
    pub format_version: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    pub tenant_id: String,
    pub customer: ExportedCustomer,
    /// Oldest first.
    pub interactions: Vec<ExportedInteraction>,
    pub loyalty: ExportedLoyalty,
    /// Current score per plugin, and every score ever stored (newest first).
    pub scores: Vec<crate::store::scores::StoredScore>,
    pub score_history: Vec<crate::store::scores::StoredScore>,
    /// Outbound messages to the customer, oldest first.
    pub messages: Vec<crate::store::messages::Message>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportedCustomer {
    pub id: String,
    pub external_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub erased_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportedInteraction {
    pub id: String,
    pub kind: String,
    pub channel: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub idempotency_key: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub items: Vec<ExportedItem>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportedItem {
    pub line_no: i64,
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportedLoyalty {
    /// `null` when the customer never had a ledger entry.
    pub account: Option<ExportedAccount>,
    /// Oldest first (by `seq`).
    pub ledger: Vec<LedgerEntry>,
    /// Which credit lots each debit consumed, in ledger order.
    pub allocations: Vec<Allocation>,
    /// Oldest first.
    pub tier_changes: Vec<TierChange>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportedAccount {
    pub tier_id: Option<String>,
    /// The stored balance (`SUM(points)` of the ledger).
    pub balance: i64,
    pub lifetime_earned: i64,
    pub last_seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The result of an erasure (identical on repeated calls).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Erasure {
    pub customer_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub erased_at: OffsetDateTime,
    /// Interactions whose payload was cleared (all of the customer's).
    pub interactions_scrubbed: i64,
}

/// The external id an erased customer is given: unique, and free of personal data.
pub fn erased_external_id(customer_id: &str) -> String {
    format!("erased:{customer_id}")
}

impl Store {
    /// Everything held on one customer, read from one snapshot.
    pub async fn export_customer(&self, tenant: &TenantId, customer_id: &str) -> StoreResult<CustomerExport> {
        let mut tx = begin_read(self).await?;
        let row = sqlx::query(
            "SELECT id, external_id, name, email, phone, attributes, created_at, updated_at, erased_at FROM customers \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(customer_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound { entity: "customer" })?;
        let attributes: String = row.try_get("attributes")?;
        let erased: Option<i64> = row.try_get("erased_at")?;
        let customer = ExportedCustomer {
            id: row.try_get("id")?,
            external_id: row.try_get("external_id")?,
            name: row.try_get("name")?,
            email: row.try_get("email")?,
            phone: row.try_get("phone")?,
            attributes: json_column(&attributes)?,
            created_at: from_millis(row.try_get("created_at")?),
            updated_at: from_millis(row.try_get("updated_at")?),
            erased_at: erased.map(from_millis),
        };

        let item_rows = sqlx::query(
            "SELECT i.interaction_id, i.line_no, i.sku, i.quantity, i.unit_price_minor FROM interaction_items i \
             JOIN interactions x ON x.tenant_id = i.tenant_id AND x.id = i.interaction_id \
             WHERE i.tenant_id = $1 AND x.customer_id = $2 ORDER BY i.interaction_id, i.line_no",
        )
        .bind(tenant.as_str())
        .bind(customer_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut items: HashMap<String, Vec<ExportedItem>> = HashMap::new();
        for r in item_rows {
            items
                .entry(r.try_get("interaction_id")?)
                .or_default()
                .push(ExportedItem {
                    line_no: r.try_get("line_no")?,
                    sku: r.try_get("sku")?,
                    quantity: r.try_get("quantity")?,
                    unit_price_minor: r.try_get("unit_price_minor")?,
                });
        }
        let interaction_rows = sqlx::query(
            "SELECT id, kind, channel, occurred_at, amount_minor, currency, payload, idempotency_key, created_at \
             FROM interactions WHERE tenant_id = $1 AND customer_id = $2 ORDER BY occurred_at, id",
        )
        .bind(tenant.as_str())
        .bind(customer_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut interactions = Vec::with_capacity(interaction_rows.len());
        for r in interaction_rows {
            let id: String = r.try_get("id")?;
            let payload: String = r.try_get("payload")?;
            interactions.push(ExportedInteraction {
                items: items.remove(&id).unwrap_or_default(),
                id,
                kind: r.try_get("kind")?,
                channel: r.try_get("channel")?,
                occurred_at: from_millis(r.try_get("occurred_at")?),
                amount_minor: r.try_get("amount_minor")?,
                currency: r.try_get("currency")?,
                payload: json_column(&payload)?,
                idempotency_key: r.try_get("idempotency_key")?,
                created_at: from_millis(r.try_get("created_at")?),
            });
        }

        let account = sqlx::query(
            "SELECT tier_id, balance, lifetime_earned, last_seq, created_at, updated_at FROM loyalty_accounts \
             WHERE tenant_id = $1 AND customer_id = $2",
        )
        .bind(tenant.as_str())
        .bind(customer_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| -> StoreResult<ExportedAccount> {
            Ok(ExportedAccount {
                tier_id: r.try_get("tier_id")?,
                balance: r.try_get("balance")?,
                lifetime_earned: r.try_get("lifetime_earned")?,
                last_seq: r.try_get("last_seq")?,
                created_at: from_millis(r.try_get("created_at")?),
                updated_at: from_millis(r.try_get("updated_at")?),
            })
        })
        .transpose()?;
        let ledger = sqlx::query(&format!(
            "SELECT {LEDGER_COLUMNS} FROM loyalty_ledger WHERE tenant_id = $1 AND customer_id = $2 ORDER BY seq"
        ))
        .bind(tenant.as_str())
        .bind(customer_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(entry_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        let allocations = sqlx::query(
            "SELECT a.debit_id, a.credit_id, a.points FROM loyalty_allocations a \
             JOIN loyalty_ledger d ON d.tenant_id = a.tenant_id AND d.id = a.debit_id \
             JOIN loyalty_ledger c ON c.tenant_id = a.tenant_id AND c.id = a.credit_id \
             WHERE a.tenant_id = $1 AND d.customer_id = $2 ORDER BY d.seq, c.seq",
        )
        .bind(tenant.as_str())
        .bind(customer_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| -> StoreResult<Allocation> {
            Ok(Allocation {
                debit_id: r.try_get("debit_id")?,
                credit_id: r.try_get("credit_id")?,
                points: r.try_get("points")?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
        let tier_changes = sqlx::query(&format!(
            "SELECT {TIER_CHANGE_COLUMNS} FROM loyalty_tier_changes WHERE tenant_id = $1 AND customer_id = $2 \
             ORDER BY created_at, id"
        ))
        .bind(tenant.as_str())
        .bind(customer_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(tier_change_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        tx.commit().await?;
        // Scores are derived data the plugins keep about the customer; they
        // are exported too (read after the snapshot above: a score computed
        // in between is newer, never inconsistent).
        let scores = self.customer_scores(tenant, customer_id, None).await?;
        let score_history = self.customer_score_history(tenant, customer_id, None, i64::MAX).await?;

        Ok(CustomerExport {
            scores,
            score_history,
            messages: self.customer_messages(tenant, customer_id).await?,
            format_version: EXPORT_FORMAT_VERSION,
            generated_at: from_millis(now_ms()),
            tenant_id: tenant.to_string(),
            customer,
            interactions,
            loyalty: ExportedLoyalty {
                account,
                ledger,
                allocations,
                tier_changes,
            },
        })
    }

    /// Erases the customer's personal data in one write transaction.
    /// Idempotent: a repeated call changes nothing and reports the same result.
    pub async fn erase_customer(&self, tenant: &TenantId, customer_id: &str) -> StoreResult<Erasure> {
        let mut tx = self.db().begin_write().await?;
        require_customer(&mut tx, tenant, customer_id).await?;
        let now = now_ms();
        // updated_at moves only on the first erasure, so a repeat is a no-op.
        sqlx::query(
            "UPDATE customers SET name = NULL, email = NULL, phone = NULL, attributes = '{}', external_id = $3, \
                 updated_at = CASE WHEN erased_at IS NULL THEN $4 ELSE updated_at END, \
                 erased_at = COALESCE(erased_at, $4) \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(customer_id)
        .bind(erased_external_id(customer_id))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE interactions SET payload = '{}' WHERE tenant_id = $1 AND customer_id = $2 AND payload <> '{}'",
        )
        .bind(tenant.as_str())
        .bind(customer_id)
        .execute(&mut *tx)
        .await?;
        super::messages::erase_customer_messages_tx(&mut tx, tenant, customer_id).await?;
        let row = sqlx::query(
            "SELECT c.erased_at, (SELECT CAST(COUNT(*) AS BIGINT) FROM interactions i \
                 WHERE i.tenant_id = c.tenant_id AND i.customer_id = c.id) AS n \
             FROM customers c WHERE c.tenant_id = $1 AND c.id = $2",
        )
        .bind(tenant.as_str())
        .bind(customer_id)
        .fetch_one(&mut *tx)
        .await?;
        let erased_at: Option<i64> = row.try_get("erased_at")?;
        let erasure = Erasure {
            customer_id: customer_id.to_string(),
            erased_at: from_millis(erased_at.ok_or_else(|| StoreError::Corrupt("erased_at not set".into()))?),
            interactions_scrubbed: row.try_get("n")?,
        };
        tx.commit().await?;
        Ok(erasure)
    }
}
