//! Which version of a plugin each tenant runs: the active version (unset =
//! the manifest's), the previous one (what a rollback returns to) and an
//! optional staged candidate served to a share of the tenant's customers.
//!
//! The row is read on every plugin call (one primary-key read), so a stage,
//! promote or rollback applies at once on every node sharing the database;
//! each change is one conditional statement, so two admins acting at once
//! cannot interleave into a state neither asked for.

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use super::{Store, StoreError, StoreResult, TenantId, from_millis, now_ms};

/// A tenant's version state for one plugin (all unset: the manifest's
/// version, nothing staged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct VersionState {
    /// `null`: the manifest's version.
    pub active_version: Option<String>,
    /// What `rollback` returns to when nothing is staged.
    pub previous_version: Option<String>,
    pub staged_version: Option<String>,
    /// Share of customers (0-100) served the staged version.
    pub staged_percent: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub updated_at: Option<time::OffsetDateTime>,
}

/// What a rollback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rollback {
    /// The staged candidate was withdrawn; every customer is back on the active version.
    Unstaged,
    /// The previous active version is active again.
    Reverted,
}

const COLUMNS: &str = "active_version, previous_version, staged_version, staged_percent, updated_at";

fn state_from_row(row: &sqlx::any::AnyRow) -> StoreResult<VersionState> {
    Ok(VersionState {
        active_version: row.try_get("active_version")?,
        previous_version: row.try_get("previous_version")?,
        staged_version: row.try_get("staged_version")?,
        staged_percent: row.try_get("staged_percent")?,
        updated_at: Some(from_millis(row.try_get("updated_at")?)),
    })
}

impl Store {
    pub async fn plugin_version_state(&self, tenant: &TenantId, plugin: &str) -> StoreResult<VersionState> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM plugin_versions WHERE tenant_id = $1 AND plugin_id = $2"
        ))
        .bind(tenant.as_str())
        .bind(plugin)
        .fetch_optional(self.db().pool())
        .await?;
        Ok(row.as_ref().map(state_from_row).transpose()?.unwrap_or_default())
    }

    /// Stages `version` on `percent` % of the customers (replacing any
    /// staged candidate). The caller has checked that the version exists
    /// for the tenant and is not the active one.
    pub async fn stage_plugin_version(
        &self,
        tenant: &TenantId,
        plugin: &str,
        version: &str,
        percent: i64,
    ) -> StoreResult<VersionState> {
        if !(1..=100).contains(&percent) {
            return Err(StoreError::invalid("percent", "must be between 1 and 100"));
        }
        sqlx::query(
            "INSERT INTO plugin_versions (tenant_id, plugin_id, staged_version, staged_percent, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, plugin_id) DO UPDATE SET staged_version = $3, staged_percent = $4, updated_at = $5",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(version)
        .bind(percent)
        .bind(now_ms())
        .execute(self.db().pool())
        .await?;
        self.plugin_version_state(tenant, plugin).await
    }

    /// Makes the staged version active for every customer; the active one
    /// becomes `previous_version`. `current_active` is the version active
    /// now as the caller resolved it (the manifest's when none is stored),
    /// so a later rollback can return to it. 409 `nothing_staged` when no
    /// candidate is staged.
    pub async fn promote_plugin_version(
        &self,
        tenant: &TenantId,
        plugin: &str,
        current_active: &str,
    ) -> StoreResult<VersionState> {
        let done = sqlx::query(
            "UPDATE plugin_versions SET previous_version = COALESCE(active_version, $3), \
             active_version = staged_version, staged_version = NULL, staged_percent = 0, updated_at = $4 \
             WHERE tenant_id = $1 AND plugin_id = $2 AND staged_version IS NOT NULL",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(current_active)
        .bind(now_ms())
        .execute(self.db().pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::conflict(
                "nothing_staged",
                "no version is staged for this plugin",
            ));
        }
        self.plugin_version_state(tenant, plugin).await
    }

    /// Withdraws the staged candidate if there is one; otherwise makes the
    /// previous active version active again (once: the version rolled back
    /// from is not kept). 409 `nothing_to_roll_back` when there is neither.
    pub async fn rollback_plugin_version(
        &self,
        tenant: &TenantId,
        plugin: &str,
    ) -> StoreResult<(Rollback, VersionState)> {
        let now = now_ms();
        let unstaged = sqlx::query(
            "UPDATE plugin_versions SET staged_version = NULL, staged_percent = 0, updated_at = $3 \
             WHERE tenant_id = $1 AND plugin_id = $2 AND staged_version IS NOT NULL",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(now)
        .execute(self.db().pool())
        .await?;
        if unstaged.rows_affected() > 0 {
            return Ok((Rollback::Unstaged, self.plugin_version_state(tenant, plugin).await?));
        }
        let reverted = sqlx::query(
            "UPDATE plugin_versions SET active_version = previous_version, previous_version = NULL, updated_at = $3 \
             WHERE tenant_id = $1 AND plugin_id = $2 AND previous_version IS NOT NULL",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(now)
        .execute(self.db().pool())
        .await?;
        if reverted.rows_affected() == 0 {
            return Err(StoreError::conflict(
                "nothing_to_roll_back",
                "no version is staged and there is no previous version to return to",
            ));
        }
        Ok((Rollback::Reverted, self.plugin_version_state(tenant, plugin).await?))
    }
}
