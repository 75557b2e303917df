//! Simulation jobs (`POST /v1/plugins/{id}/simulate`): a simulation runs a
//! plugin version against the tenant's recorded history and writes nothing
//! but its own row here (progress, then the report), so that a long one can
//! be followed from any node (`GET /v1/simulations/{id}`).

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use super::{Store, StoreError, StoreResult, TenantId, from_millis, json_column, new_id, now_ms};

/// A simulation and, once finished, its report.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Simulation {
    pub id: String,
    pub plugin_id: String,
    /// The version simulated.
    pub version: String,
    /// The version it is compared with (the tenant's active one when it started).
    pub baseline: String,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    /// Customers to run, and run so far.
    pub total: i64,
    pub done: i64,
    /// The request as given (sample, as_of).
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
    /// The report (see the API's documentation); `null` while running.
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<time::OffsetDateTime>,
}

const COLUMNS: &str =
    "id, plugin_id, version, baseline, status, total, done, request, report, error, created_at, finished_at";

fn simulation_from_row(row: &sqlx::any::AnyRow) -> StoreResult<Simulation> {
    let report: Option<String> = row.try_get("report")?;
    Ok(Simulation {
        id: row.try_get("id")?,
        plugin_id: row.try_get("plugin_id")?,
        version: row.try_get("version")?,
        baseline: row.try_get("baseline")?,
        status: row.try_get("status")?,
        total: row.try_get("total")?,
        done: row.try_get("done")?,
        request: json_column(&row.try_get::<String, _>("request")?)?,
        report: report.as_deref().map(json_column).transpose()?,
        error: row.try_get("error")?,
        created_at: from_millis(row.try_get("created_at")?),
        finished_at: row.try_get::<Option<i64>, _>("finished_at")?.map(from_millis),
    })
}

impl Store {
    pub async fn create_simulation(
        &self,
        tenant: &TenantId,
        plugin: &str,
        version: &str,
        baseline: &str,
        request: &serde_json::Value,
    ) -> StoreResult<Simulation> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO plugin_simulations (tenant_id, id, plugin_id, version, baseline, status, request, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'running', $6, $7)",
        )
        .bind(tenant.as_str())
        .bind(&id)
        .bind(plugin)
        .bind(version)
        .bind(baseline)
        .bind(request.to_string())
        .bind(now_ms())
        .execute(self.db().pool())
        .await?;
        self.simulation(tenant, &id).await
    }

    pub async fn simulation(&self, tenant: &TenantId, id: &str) -> StoreResult<Simulation> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM plugin_simulations WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(self.db().pool())
        .await?
        .ok_or(StoreError::NotFound { entity: "simulation" })?;
        simulation_from_row(&row)
    }

    pub async fn simulation_progress(&self, tenant: &TenantId, id: &str, done: i64, total: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE plugin_simulations SET done = $3, total = $4 WHERE tenant_id = $1 AND id = $2 AND status = 'running'",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(done)
        .bind(total)
        .execute(self.db().pool())
        .await?;
        Ok(())
    }

    /// Ends a simulation with its report (`Ok`) or error text (`Err`).
    pub async fn finish_simulation(
        &self,
        tenant: &TenantId,
        id: &str,
        outcome: Result<&serde_json::Value, &str>,
    ) -> StoreResult<()> {
        let (status, report, error) = match outcome {
            Ok(report) => ("succeeded", Some(report.to_string()), None),
            Err(error) => ("failed", None, Some(error.to_string())),
        };
        sqlx::query(
            "UPDATE plugin_simulations SET status = $3, report = $4, error = $5, finished_at = $6 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(status)
        .bind(report)
        .bind(error)
        .bind(now_ms())
        .execute(self.db().pool())
        .await?;
        Ok(())
    }
}
