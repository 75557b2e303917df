//! Store: the CRM playbook's per-tenant settings (complaint response time,
//! goodwill points, referral points) and the one place where an ingested
//! interaction of a playbook kind (`satisfaction`, `complaint`, `referral`,
//! and `purchase` for referral credits) does its extra work, inside the
//! ingest's transaction: an invalid answer or referral fails the
//! interaction (422), and a case, answer or credit commits with it or not
//! at all. The flows themselves are `satisfaction`, `complaints` and
//! `referrals`.

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::interactions::Interaction;
use super::loyalty::{LedgerOp, apply_ledger_ops_tx};
use super::{Store, StoreError, StoreResult, TenantId, now_ms};

/// Default time to answer a complaint before it escalates.
pub const DEFAULT_RESPONSE_HOURS: i64 = 48;
/// Largest response time (a year).
pub const MAX_RESPONSE_HOURS: i64 = 8760;
/// Largest goodwill or referral credit.
pub const MAX_PLAYBOOK_POINTS: i64 = 1_000_000;

/// A tenant's playbook settings (`GET`/`PUT /v1/playbook/settings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaybookSettings {
    /// Hours a complaint may stay `open` (unanswered) before it escalates,
    /// 1 to 8760 (default 48).
    pub complaint_response_hours: i64,
    /// Service-recovery points credited once when a complaint case is
    /// resolved (0, the default: none).
    pub goodwill_points: i64,
    /// Points credited to a referrer once the referred customer makes a
    /// first purchase (0, the default: none).
    pub referral_points: i64,
}

impl Default for PlaybookSettings {
    fn default() -> Self {
        PlaybookSettings {
            complaint_response_hours: DEFAULT_RESPONSE_HOURS,
            goodwill_points: 0,
            referral_points: 0,
        }
    }
}

fn validate(s: &PlaybookSettings) -> StoreResult<()> {
    if !(1..=MAX_RESPONSE_HOURS).contains(&s.complaint_response_hours) {
        return Err(StoreError::invalid(
            "complaint_response_hours",
            format!("must be 1 to {MAX_RESPONSE_HOURS}"),
        ));
    }
    for (field, v) in [
        ("goodwill_points", s.goodwill_points),
        ("referral_points", s.referral_points),
    ] {
        if !(0..=MAX_PLAYBOOK_POINTS).contains(&v) {
            return Err(StoreError::invalid(
                field,
                format!("must be 0 to {MAX_PLAYBOOK_POINTS}"),
            ));
        }
    }
    Ok(())
}

/// The tenant's settings, read on the caller's connection.
pub async fn settings_tx(conn: &mut AnyConnection, tenant: &TenantId) -> StoreResult<PlaybookSettings> {
    let row = sqlx::query(
        "SELECT complaint_response_hours, goodwill_points, referral_points FROM playbook_settings WHERE tenant_id = $1",
    )
    .bind(tenant.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        Some(row) => PlaybookSettings {
            complaint_response_hours: row.try_get("complaint_response_hours")?,
            goodwill_points: row.try_get("goodwill_points")?,
            referral_points: row.try_get("referral_points")?,
        },
        None => PlaybookSettings::default(),
    })
}

impl Store {
    pub async fn playbook_settings(&self, tenant: &TenantId) -> StoreResult<PlaybookSettings> {
        let mut conn = self.db().pool().acquire().await?;
        settings_tx(&mut conn, tenant).await
    }

    /// Replaces the tenant's settings. Cases already open keep their due
    /// time; the new response time applies to complaints made from now on.
    pub async fn set_playbook_settings(
        &self,
        tenant: &TenantId,
        settings: PlaybookSettings,
    ) -> StoreResult<PlaybookSettings> {
        validate(&settings)?;
        sqlx::query(
            "INSERT INTO playbook_settings (tenant_id, complaint_response_hours, goodwill_points, referral_points, \
             updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id) DO UPDATE SET \
             complaint_response_hours = excluded.complaint_response_hours, \
             goodwill_points = excluded.goodwill_points, referral_points = excluded.referral_points, \
             updated_at = excluded.updated_at",
        )
        .bind(tenant.as_str())
        .bind(settings.complaint_response_hours)
        .bind(settings.goodwill_points)
        .bind(settings.referral_points)
        .bind(now_ms())
        .execute(self.db().pool())
        .await?;
        Ok(settings)
    }
}

/// The playbook's work for a newly stored interaction, on the ingest's
/// connection (called by `interactions::ingest_prepared`, never on a replay).
pub(super) async fn on_interaction_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    interaction: &Interaction,
) -> StoreResult<()> {
    match interaction.kind.as_str() {
        "satisfaction" => super::satisfaction::record_answer_tx(conn, tenant, interaction).await,
        "complaint" => super::complaints::open_case_tx(conn, tenant, interaction)
            .await
            .map(|_| ()),
        "referral" => super::referrals::record_referral_tx(conn, tenant, interaction).await,
        "purchase" => super::referrals::credit_first_purchase_tx(conn, tenant, interaction).await,
        _ => Ok(()),
    }
}

/// Credits `points` to a customer as a playbook reward (goodwill, a
/// referral), once per `key` (the ledger's idempotency key). Returns the
/// entry's id, or `None` when nothing was credited: no points configured,
/// or the account cannot take them (its ceiling), which is logged and
/// never fails the event that earned them.
pub(super) async fn credit_points_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
    points: i64,
    reason: &str,
    key: String,
) -> StoreResult<Option<String>> {
    if points <= 0 {
        return Ok(None);
    }
    let op = LedgerOp::Earn {
        points,
        reason: reason.to_owned(),
        expires_at: None,
        idempotency_key: Some(key),
    };
    match apply_ledger_ops_tx(conn, tenant, customer_id, None, std::slice::from_ref(&op)).await {
        Ok(entries) => Ok(entries.into_iter().next().map(|e| e.id)),
        Err(e @ (StoreError::Database(_) | StoreError::Corrupt(_))) => Err(e),
        Err(skipped) => {
            tracing::warn!(tenant = %tenant, customer = customer_id, reason = %skipped,
                "playbook points not credited");
            Ok(None)
        }
    }
}
