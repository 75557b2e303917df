//! Plugin run history: the recent calls of each (tenant, plugin) with their
//! version, duration, fuel, outcome, error and captured log lines, for `GET
//! /v1/plugins/{id}/runs`.
//!
//! A bounded ring in the database: each batch written also deletes the rows
//! beyond the newest [`RUNS_KEEP`] of every (tenant, plugin) it touched, in
//! the same transaction, so the table never grows past that per pair. The
//! writer is `plugins::runs` (a background task fed through a channel), so
//! a call never waits for this table.

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use super::{Store, StoreResult, TenantId, from_millis, json_column, new_id};

/// Runs kept per (tenant, plugin); older ones are pruned on insert.
pub const RUNS_KEEP: i64 = 100;

/// One captured log line of a run.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, ToSchema)]
pub struct RunLogLine {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    pub message: String,
    /// Structured fields as `[name, value]` pairs.
    #[schema(value_type = Vec<Vec<String>>)]
    pub fields: Vec<(String, String)>,
}

/// A run to record (built by the plugin service after each call).
#[derive(Debug, Clone)]
pub struct NewRun {
    pub tenant: TenantId,
    pub plugin_id: String,
    pub version: String,
    pub started_at_ms: i64,
    pub duration_us: i64,
    pub fuel_used: Option<i64>,
    /// `ok` or `error`.
    pub outcome: &'static str,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub logs: Vec<RunLogLine>,
    pub logs_dropped: i64,
}

/// One run as `GET /v1/plugins/{id}/runs` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PluginRunRecord {
    pub id: String,
    pub version: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: time::OffsetDateTime,
    pub duration_us: i64,
    /// Null when the plugin has no fuel limit (fuel is then not metered).
    pub fuel_used: Option<i64>,
    /// `ok` or `error`.
    pub outcome: String,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub logs: Vec<RunLogLine>,
    /// Log lines dropped over the plugin's `max_log_bytes`.
    pub logs_dropped: i64,
}

impl Store {
    /// Writes a batch of runs in one transaction and prunes each touched
    /// (tenant, plugin) back to [`RUNS_KEEP`].
    pub async fn record_plugin_runs(&self, runs: &[NewRun]) -> StoreResult<()> {
        if runs.is_empty() {
            return Ok(());
        }
        let mut tx = self.db().begin_write().await?;
        let mut touched = std::collections::BTreeSet::new();
        for run in runs {
            let logs = serde_json::to_string(&run.logs).unwrap_or_else(|_| "[]".into());
            sqlx::query(
                "INSERT INTO plugin_runs (tenant_id, id, plugin_id, version, started_at, duration_us, \
                 fuel_used, outcome, error_code, error, logs, logs_dropped) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(run.tenant.as_str())
            .bind(new_id())
            .bind(&run.plugin_id)
            .bind(&run.version)
            .bind(run.started_at_ms)
            .bind(run.duration_us)
            .bind(run.fuel_used)
            .bind(run.outcome)
            .bind(run.error_code.as_deref())
            .bind(run.error.as_deref())
            .bind(logs)
            .bind(run.logs_dropped)
            .execute(&mut *tx)
            .await?;
            touched.insert((run.tenant.as_str(), run.plugin_id.as_str()));
        }
        for (tenant, plugin) in touched {
            sqlx::query(
                "DELETE FROM plugin_runs WHERE tenant_id = $1 AND plugin_id = $2 AND id NOT IN \
                 (SELECT id FROM plugin_runs WHERE tenant_id = $1 AND plugin_id = $2 ORDER BY id DESC LIMIT $3)",
            )
            .bind(tenant)
            .bind(plugin)
            .bind(RUNS_KEEP)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The tenant's most recent runs of `plugin`, newest first.
    pub async fn plugin_runs(&self, tenant: &TenantId, plugin: &str, limit: i64) -> StoreResult<Vec<PluginRunRecord>> {
        let rows = sqlx::query(
            "SELECT id, version, started_at, duration_us, fuel_used, outcome, error_code, error, logs, \
             logs_dropped FROM plugin_runs WHERE tenant_id = $1 AND plugin_id = $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(limit.clamp(0, RUNS_KEEP))
        .fetch_all(self.db().pool())
        .await?;
        rows.iter()
            .map(|row| {
                let logs: String = row.try_get("logs")?;
                let logs = serde_json::from_value(json_column(&logs)?)
                    .map_err(|e| super::StoreError::Corrupt(format!("plugin run logs: {e}")))?;
                Ok(PluginRunRecord {
                    id: row.try_get("id")?,
                    version: row.try_get("version")?,
                    started_at: from_millis(row.try_get("started_at")?),
                    duration_us: row.try_get("duration_us")?,
                    fuel_used: row.try_get("fuel_used")?,
                    outcome: row.try_get("outcome")?,
                    error_code: row.try_get("error_code")?,
                    error: row.try_get("error")?,
                    logs,
                    logs_dropped: row.try_get("logs_dropped")?,
                })
            })
            .collect()
    }
}
