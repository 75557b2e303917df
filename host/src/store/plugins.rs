//! Per-tenant plugin state: admin overrides (enabled, config), failure
//! counting and suspension, the failure log, and the plugins' key-value
//! storage. Every statement is scoped by `(tenant_id, plugin_id)`.
//!
//! Which plugins exist, and each tenant's defaults, come from the manifest,
//! not from here; `manifest::effective` combines the two: the manifest
//! decides availability; an admin's stored `enabled`/`config` (non-NULL
//! here) wins over the manifest's tenant defaults; a suspension
//! (`suspended_at`) stops an enabled plugin until `resume_plugin`. A row here
//! for a plugin the manifest no longer lists is inert, and applies again if
//! the plugin comes back.
//!
//! The admin's changes (enabled, config, resume) are audited in their own
//! transaction (`audit::record_tx`), with the row before and after.

use serde::Serialize;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::audit::{self, AuditEntry};
use super::{Store, StoreError, StoreResult, TenantId, from_millis, json_column, new_id, now_ms};

/// Failures kept per (tenant, plugin) in the log; older ones are pruned.
pub const FAILURE_LOG_KEEP: i64 = 50;
/// Longest stored error message; plugin-produced text is truncated to it.
pub const MAX_ERROR_CHARS: usize = 2000;
/// Longest key-value key, in bytes.
pub const KV_MAX_KEY_BYTES: usize = 512;

/// The stored row for one (tenant, plugin); absent fields follow the manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginState {
    pub plugin_id: String,
    /// Admin override; `None` = the manifest's default.
    pub enabled: Option<bool>,
    /// Admin config override (a JSON object); `None` = the manifest's.
    pub config: Option<serde_json::Value>,
    pub consecutive_failures: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub suspended_at: Option<time::OffsetDateTime>,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_failure_at: Option<time::OffsetDateTime>,
    /// Why the plugin refused this tenant's config on its last call (or a
    /// secret reference did not resolve); cleared by a new config or a
    /// successful call.
    pub config_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: time::OffsetDateTime,
}

/// One entry of the failure log.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PluginFailure {
    pub id: String,
    /// Machine-readable cause chosen by the runtime: `trap`, `timeout`,
    /// `fuel`, `memory`, `output_too_large`, `guest_error`, ...
    pub cause: String,
    pub message: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
}

/// `enabled` is read back as a BIGINT 0/1/NULL: through `sqlx::Any`, SQLite
/// hands a BOOLEAN column over as an integer and PostgreSQL as a bool, and
/// only an integer decodes the same way from both.
const STATE_COLUMNS: &str = "plugin_id, CAST(CASE WHEN enabled THEN 1 WHEN NOT enabled THEN 0 END AS BIGINT) AS enabled, \
                             config, consecutive_failures, suspended_at, last_error, last_failure_at, config_error, updated_at";

fn state_from_row(row: &sqlx::any::AnyRow) -> StoreResult<PluginState> {
    let config: Option<String> = row.try_get("config")?;
    let suspended: Option<i64> = row.try_get("suspended_at")?;
    let last_failure: Option<i64> = row.try_get("last_failure_at")?;
    Ok(PluginState {
        plugin_id: row.try_get("plugin_id")?,
        enabled: row.try_get::<Option<i64>, _>("enabled")?.map(|v| v != 0),
        config: config.as_deref().map(json_column).transpose()?,
        consecutive_failures: row.try_get("consecutive_failures")?,
        suspended_at: suspended.map(from_millis),
        last_error: row.try_get("last_error")?,
        last_failure_at: last_failure.map(from_millis),
        config_error: row.try_get("config_error")?,
        updated_at: from_millis(row.try_get("updated_at")?),
    })
}

/// An admin's change of a (tenant, plugin) row.
enum Change {
    Enabled(Option<bool>),
    /// The config as JSON text; `None` clears the override.
    Config(Option<String>),
    Resume,
}

async fn state_tx(conn: &mut AnyConnection, tenant: &TenantId, plugin: &str) -> StoreResult<Option<PluginState>> {
    let row = sqlx::query(&format!(
        "SELECT {STATE_COLUMNS} FROM plugin_tenant_state WHERE tenant_id = $1 AND plugin_id = $2"
    ))
    .bind(tenant.as_str())
    .bind(plugin)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(state_from_row).transpose()
}

/// What the audit log keeps of a row: the admin's settings and the
/// suspension, not the failure bookkeeping that changes on every call.
fn audit_view(state: &PluginState) -> serde_json::Value {
    serde_json::json!({
        "enabled": state.enabled,
        "config": state.config,
        "suspended": state.suspended_at.is_some(),
        "consecutive_failures": state.consecutive_failures,
    })
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

fn validate_key(key: &str) -> StoreResult<()> {
    if key.is_empty() || key.len() > KV_MAX_KEY_BYTES || key.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            "key",
            format!("keys are 1 to {KV_MAX_KEY_BYTES} bytes of text without control characters"),
        ));
    }
    Ok(())
}

impl Store {
    /// All stored rows of a tenant (one per plugin it ever touched).
    pub async fn plugin_states(&self, tenant: &TenantId) -> StoreResult<Vec<PluginState>> {
        let rows = sqlx::query(&format!(
            "SELECT {STATE_COLUMNS} FROM plugin_tenant_state WHERE tenant_id = $1 ORDER BY plugin_id"
        ))
        .bind(tenant.as_str())
        .fetch_all(self.db().pool())
        .await?;
        rows.iter().map(state_from_row).collect()
    }

    pub async fn plugin_state(&self, tenant: &TenantId, plugin: &str) -> StoreResult<Option<PluginState>> {
        let row = sqlx::query(&format!(
            "SELECT {STATE_COLUMNS} FROM plugin_tenant_state WHERE tenant_id = $1 AND plugin_id = $2"
        ))
        .bind(tenant.as_str())
        .bind(plugin)
        .fetch_optional(self.db().pool())
        .await?;
        row.as_ref().map(state_from_row).transpose()
    }

    /// Sets (`Some`) or clears (`None`, back to the manifest) the admin's
    /// enabled override; audited as `plugin.enable`, `plugin.disable` or
    /// `plugin.enabled_reset` for `actor`.
    pub async fn set_plugin_enabled(
        &self,
        tenant: &TenantId,
        plugin: &str,
        enabled: Option<bool>,
        actor: Option<&str>,
    ) -> StoreResult<PluginState> {
        self.audited_change(tenant, plugin, Change::Enabled(enabled), actor)
            .await
    }

    /// Sets (`Some`, a JSON object) or clears (`None`) the admin's config
    /// override. The override replaces the manifest's config wholesale. A
    /// new config clears the plugin's `config_error` (it gets a new
    /// chance). Audited as `plugin.config` / `plugin.config_reset`. The
    /// caller has validated it against the plugin's schema; secret fields
    /// hold references, never values.
    pub async fn set_plugin_config(
        &self,
        tenant: &TenantId,
        plugin: &str,
        config: Option<&serde_json::Value>,
        actor: Option<&str>,
    ) -> StoreResult<PluginState> {
        if config.is_some_and(|c| !c.is_object()) {
            return Err(StoreError::invalid("config", "must be a JSON object"));
        }
        let change = Change::Config(config.map(|c| c.to_string()));
        self.audited_change(tenant, plugin, change, actor).await
    }

    /// Lifts a suspension and resets the counter (the last error is kept
    /// for reference). Returns the state after resuming. Audited as
    /// `plugin.resume`.
    pub async fn resume_plugin(
        &self,
        tenant: &TenantId,
        plugin: &str,
        actor: Option<&str>,
    ) -> StoreResult<PluginState> {
        self.audited_change(tenant, plugin, Change::Resume, actor).await
    }

    /// One admin change of a (tenant, plugin) row: reads the row, applies
    /// the change, reads it again and records both in the audit log, all
    /// in one write transaction.
    async fn audited_change(
        &self,
        tenant: &TenantId,
        plugin: &str,
        change: Change,
        actor: Option<&str>,
    ) -> StoreResult<PluginState> {
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        let before = state_tx(&mut tx, tenant, plugin).await?;
        let action = match &change {
            Change::Enabled(enabled) => {
                sqlx::query(
                    "INSERT INTO plugin_tenant_state (tenant_id, plugin_id, enabled, consecutive_failures, updated_at) \
                     VALUES ($1, $2, $3, 0, $4) \
                     ON CONFLICT (tenant_id, plugin_id) DO UPDATE SET enabled = $3, updated_at = $4",
                )
                .bind(tenant.as_str())
                .bind(plugin)
                .bind(*enabled)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                match enabled {
                    Some(true) => "plugin.enable",
                    Some(false) => "plugin.disable",
                    None => "plugin.enabled_reset",
                }
            }
            Change::Config(text) => {
                sqlx::query(
                    "INSERT INTO plugin_tenant_state (tenant_id, plugin_id, config, consecutive_failures, updated_at) \
                     VALUES ($1, $2, $3, 0, $4) \
                     ON CONFLICT (tenant_id, plugin_id) DO UPDATE SET config = $3, config_error = NULL, updated_at = $4",
                )
                .bind(tenant.as_str())
                .bind(plugin)
                .bind(text.as_deref())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if text.is_some() {
                    "plugin.config"
                } else {
                    "plugin.config_reset"
                }
            }
            Change::Resume => {
                sqlx::query(
                    "INSERT INTO plugin_tenant_state (tenant_id, plugin_id, consecutive_failures, updated_at) \
                     VALUES ($1, $2, 0, $3) \
                     ON CONFLICT (tenant_id, plugin_id) DO UPDATE SET \
                       consecutive_failures = 0, suspended_at = NULL, updated_at = $3",
                )
                .bind(tenant.as_str())
                .bind(plugin)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                "plugin.resume"
            }
        };
        let after = state_tx(&mut tx, tenant, plugin)
            .await?
            .ok_or_else(|| StoreError::Corrupt("plugin state row vanished after upsert".into()))?;
        audit::record_tx(
            &mut tx,
            &AuditEntry {
                tenant: Some(tenant),
                actor_key_id: actor,
                action,
                target: format!("plugin:{plugin}"),
                before: before.as_ref().map(audit_view),
                after: Some(audit_view(&after)),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// A successful call resets the consecutive-failure counter and clears
    /// a config error (the plugin accepted its config). A no-op (no write)
    /// when there is nothing to reset, since this runs after every call.
    pub async fn record_plugin_success(&self, tenant: &TenantId, plugin: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE plugin_tenant_state SET consecutive_failures = 0, config_error = NULL, updated_at = $3 \
             WHERE tenant_id = $1 AND plugin_id = $2 AND (consecutive_failures <> 0 OR config_error IS NOT NULL)",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(now_ms())
        .execute(self.db().pool())
        .await?;
        Ok(())
    }

    /// Records a failed call: increments the counter atomically (one
    /// upsert, so concurrent failures are all counted), logs the failure,
    /// and suspends the plugin for this tenant once the counter reaches
    /// `threshold` (0 = never). Returns whether the plugin is suspended
    /// after this failure.
    pub async fn record_plugin_failure(
        &self,
        tenant: &TenantId,
        plugin: &str,
        cause: &str,
        message: &str,
        threshold: u32,
    ) -> StoreResult<bool> {
        let now = now_ms();
        let message = truncate_chars(message, MAX_ERROR_CHARS);
        let cause = truncate_chars(cause, 64);
        // i64::MAX never reached: threshold 0 disables suspension.
        let threshold = if threshold == 0 { i64::MAX } else { i64::from(threshold) };
        let mut tx = self.db().begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO plugin_tenant_state \
               (tenant_id, plugin_id, consecutive_failures, suspended_at, last_error, last_failure_at, updated_at) \
             VALUES ($1, $2, 1, CASE WHEN $5 <= 1 THEN $4 ELSE NULL END, $3, $4, $4) \
             ON CONFLICT (tenant_id, plugin_id) DO UPDATE SET \
               consecutive_failures = plugin_tenant_state.consecutive_failures + 1, \
               suspended_at = COALESCE(plugin_tenant_state.suspended_at, \
                 CASE WHEN plugin_tenant_state.consecutive_failures + 1 >= $5 THEN $4 ELSE NULL END), \
               last_error = $3, last_failure_at = $4, updated_at = $4 \
             RETURNING suspended_at",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(&message)
        .bind(now)
        .bind(threshold)
        .fetch_one(&mut *tx)
        .await?;
        let suspended: Option<i64> = row.try_get("suspended_at")?;
        sqlx::query(
            "INSERT INTO plugin_failures (tenant_id, id, plugin_id, cause, message, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant.as_str())
        .bind(new_id())
        .bind(plugin)
        .bind(&cause)
        .bind(&message)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Ids are UUIDv7, so ordering by id is ordering by time.
        sqlx::query(
            "DELETE FROM plugin_failures WHERE tenant_id = $1 AND plugin_id = $2 AND id NOT IN \
             (SELECT id FROM plugin_failures WHERE tenant_id = $1 AND plugin_id = $2 ORDER BY id DESC LIMIT $3)",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(FAILURE_LOG_KEEP)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(suspended.is_some())
    }

    /// The plugin refused this tenant's config (or a secret reference did
    /// not resolve): shown as its status and `last_error` until a new
    /// config or a successful call. Never counted towards suspension. A
    /// no-op when the same error is already recorded.
    pub async fn record_plugin_config_error(&self, tenant: &TenantId, plugin: &str, message: &str) -> StoreResult<()> {
        let message = truncate_chars(message, MAX_ERROR_CHARS);
        let now = now_ms();
        sqlx::query(
            "INSERT INTO plugin_tenant_state \
               (tenant_id, plugin_id, consecutive_failures, config_error, last_error, last_failure_at, updated_at) \
             VALUES ($1, $2, 0, $3, $3, $4, $4) \
             ON CONFLICT (tenant_id, plugin_id) DO UPDATE SET \
               config_error = $3, last_error = $3, last_failure_at = $4, updated_at = $4 \
             WHERE plugin_tenant_state.config_error IS NULL OR plugin_tenant_state.config_error <> $3",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(&message)
        .bind(now)
        .execute(self.db().pool())
        .await?;
        Ok(())
    }

    /// (tenant, plugin) pairs suspended now, over every tenant (the
    /// suspended-plugins gauge).
    pub async fn suspended_plugin_count(&self) -> StoreResult<i64> {
        let row =
            sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM plugin_tenant_state WHERE suspended_at IS NOT NULL")
                .fetch_one(self.db().pool())
                .await?;
        Ok(row.try_get("n")?)
    }

    /// The most recent failures, newest first.
    pub async fn plugin_failures(
        &self,
        tenant: &TenantId,
        plugin: &str,
        limit: i64,
    ) -> StoreResult<Vec<PluginFailure>> {
        let rows = sqlx::query(
            "SELECT id, cause, message, created_at FROM plugin_failures \
             WHERE tenant_id = $1 AND plugin_id = $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(limit.clamp(0, FAILURE_LOG_KEEP))
        .fetch_all(self.db().pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PluginFailure {
                    id: row.try_get("id")?,
                    cause: row.try_get("cause")?,
                    message: row.try_get("message")?,
                    at: from_millis(row.try_get("created_at")?),
                })
            })
            .collect()
    }

    pub async fn kv_get(&self, tenant: &TenantId, plugin: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT value FROM plugin_kv WHERE tenant_id = $1 AND plugin_id = $2 AND key = $3")
            .bind(tenant.as_str())
            .bind(plugin)
            .bind(key)
            .fetch_optional(self.db().pool())
            .await?;
        Ok(row.map(|r| r.try_get::<Vec<u8>, _>("value")).transpose()?)
    }

    /// Stores `value` under `key`, refusing with `Conflict
    /// "kv_quota_exceeded"` when the plugin's total for this tenant (key
    /// length + value bytes over all keys) would exceed `max_total_bytes`.
    ///
    /// The quota check and the write are atomic: the (tenant, plugin) state
    /// row is locked first (a no-op UPDATE; on SQLite the IMMEDIATE
    /// transaction already serialises writers), so two concurrent writers
    /// cannot both squeeze under the cap.
    pub async fn kv_set(
        &self,
        tenant: &TenantId,
        plugin: &str,
        key: &str,
        value: &[u8],
        max_total_bytes: u64,
    ) -> StoreResult<()> {
        validate_key(key)?;
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        sqlx::query(
            "INSERT INTO plugin_tenant_state (tenant_id, plugin_id, consecutive_failures, updated_at) \
             VALUES ($1, $2, 0, $3) ON CONFLICT (tenant_id, plugin_id) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE plugin_tenant_state SET consecutive_failures = consecutive_failures \
             WHERE tenant_id = $1 AND plugin_id = $2",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .execute(&mut *tx)
        .await?;
        let others: i64 = sqlx::query(
            "SELECT CAST(COALESCE(SUM(LENGTH(key) + LENGTH(value)), 0) AS BIGINT) AS total FROM plugin_kv \
             WHERE tenant_id = $1 AND plugin_id = $2 AND key <> $3",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(key)
        .fetch_one(&mut *tx)
        .await?
        .try_get("total")?;
        let this = (key.chars().count() + value.len()) as u64;
        let total = u64::try_from(others).unwrap_or(0).saturating_add(this);
        if total > max_total_bytes {
            return Err(StoreError::conflict(
                "kv_quota_exceeded",
                format!("key-value storage would grow to {total} bytes; this plugin's quota is {max_total_bytes}"),
            ));
        }
        sqlx::query(
            "INSERT INTO plugin_kv (tenant_id, plugin_id, key, value, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, plugin_id, key) DO UPDATE SET value = $4, updated_at = $5",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(key)
        .bind(value.to_vec())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a key; returns whether it existed.
    pub async fn kv_delete(&self, tenant: &TenantId, plugin: &str, key: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM plugin_kv WHERE tenant_id = $1 AND plugin_id = $2 AND key = $3")
            .bind(tenant.as_str())
            .bind(plugin)
            .bind(key)
            .execute(self.db().pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Keys starting with `prefix`, in order, at most `limit`, after `after`
    /// (the last key of the previous page) when given.
    ///
    /// `substr` rather than `LIKE`: SQLite's LIKE ignores ASCII case and
    /// would need escaping of `%` and `_`.
    pub async fn kv_list(
        &self,
        tenant: &TenantId,
        plugin: &str,
        prefix: &str,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT key FROM plugin_kv WHERE tenant_id = $1 AND plugin_id = $2 \
             AND substr(key, 1, CAST($3 AS INTEGER)) = $4 AND ($5 IS NULL OR key > $5) \
             ORDER BY key LIMIT $6",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(prefix.chars().count() as i64)
        .bind(prefix)
        .bind(after)
        .bind(limit.clamp(0, 10_000))
        .fetch_all(self.db().pool())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("key")?)).collect()
    }

    /// Total bytes (key length + value) stored by a plugin for a tenant.
    pub async fn kv_usage(&self, tenant: &TenantId, plugin: &str) -> StoreResult<u64> {
        let total: i64 = sqlx::query(
            "SELECT CAST(COALESCE(SUM(LENGTH(key) + LENGTH(value)), 0) AS BIGINT) AS total FROM plugin_kv \
             WHERE tenant_id = $1 AND plugin_id = $2",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .fetch_one(self.db().pool())
        .await?
        .try_get("total")?;
        Ok(u64::try_from(total).unwrap_or(0))
    }
}
