//! Scoring jobs: create (one live job per tenant), start, progress, the fit
//! summary and per-plugin outcome, finish. Apart from the queue because a job
//! is an operator's batch run, with a status the API reports.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::JOB_STALE_MS;
use crate::store::{Store, StoreError, StoreResult, TenantId, from_millis, json_column, new_id, now_ms};

/// A job's state. `partially_failed`: it ran to the end, but at least one
/// plugin failed (to fit, or was stopped mid-run) while others stored their
/// scores; `plugins` says which. `failed`: nothing was scored to the end
/// (every plugin failed, or the job itself could not run); `error` says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    PartiallyFailed,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::PartiallyFailed => "partially_failed",
            JobStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> StoreResult<JobStatus> {
        match s {
            "queued" => Ok(JobStatus::Queued),
            "running" => Ok(JobStatus::Running),
            "succeeded" => Ok(JobStatus::Succeeded),
            "partially_failed" => Ok(JobStatus::PartiallyFailed),
            "failed" => Ok(JobStatus::Failed),
            other => Err(StoreError::Corrupt(format!("unknown job status {other:?}"))),
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::PartiallyFailed | JobStatus::Failed
        )
    }
}

/// How one plugin fared in a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginOutcomeStatus {
    /// Fitted and scored every customer it was given (a customer the plugin
    /// refused is counted in the job's `failed_customers`, not here).
    Succeeded,
    /// Its fit failed (nothing of it was scored), or it was stopped
    /// mid-run (suspended or disabled): `stage` and `error` say which.
    Failed,
}

/// Why a plugin failed in a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PluginOutcomeError {
    /// `plugin_trap`, `plugin_invalid_input`, ... (as in plugin call results).
    pub code: String,
    pub message: String,
}

/// One plugin's outcome in a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PluginOutcome {
    pub plugin: String,
    pub status: PluginOutcomeStatus,
    /// Where it failed: `fit` or `score`; absent when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<PluginOutcomeError>,
}

/// A batch scoring job and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ScoringJob {
    pub id: String,
    /// The one plugin it runs; `null` = every active scoring plugin.
    pub plugin: Option<String>,
    pub status: JobStatus,
    /// Customers to score (counted when the job starts).
    pub total: i64,
    /// Customers processed so far.
    pub done: i64,
    /// `done / total` in percent (100 for a finished job of an empty tenant).
    pub percent: f64,
    /// Customers at least one plugin could not score.
    pub failed_customers: i64,
    /// Each plugin's fit summary (or `{"error": ...}`), by plugin id.
    #[schema(value_type = Option<Object>)]
    pub fit_summary: Option<Value>,
    /// Each plugin's outcome, once the job has finished.
    pub plugins: Vec<PluginOutcome>,
    /// The date the job scores as of (see `StoredScore::as_of`); `null`: now.
    #[serde(with = "time::serde::rfc3339::option")]
    pub as_of: Option<OffsetDateTime>,
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

const JOB_COLUMNS: &str = "id, plugin_id, status, total, done, failed_customers, fit_summary, error, \
                           created_at, started_at, finished_at, as_of, plugin_outcomes";

fn job_from_row(row: &AnyRow) -> StoreResult<ScoringJob> {
    let status = JobStatus::parse(&row.try_get::<String, _>("status")?)?;
    let total: i64 = row.try_get("total")?;
    let done: i64 = row.try_get("done")?;
    let percent = if total > 0 {
        (done as f64 * 100.0 / total as f64).min(100.0)
    } else if matches!(status, JobStatus::Succeeded | JobStatus::PartiallyFailed) {
        100.0
    } else {
        0.0
    };
    let fit_summary = match row.try_get::<Option<String>, _>("fit_summary")? {
        Some(text) => Some(json_column(&text)?),
        None => None,
    };
    let plugins = match row.try_get::<Option<String>, _>("plugin_outcomes")? {
        Some(text) => {
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("scoring job plugin outcomes: {e}")))?
        }
        None => Vec::new(),
    };
    Ok(ScoringJob {
        id: row.try_get("id")?,
        plugin: row.try_get("plugin_id")?,
        status,
        total,
        done,
        percent,
        failed_customers: row.try_get("failed_customers")?,
        fit_summary,
        plugins,
        as_of: row.try_get::<Option<i64>, _>("as_of")?.map(from_millis),
        error: row.try_get("error")?,
        created_at: from_millis(row.try_get("created_at")?),
        started_at: row.try_get::<Option<i64>, _>("started_at")?.map(from_millis),
        finished_at: row.try_get::<Option<i64>, _>("finished_at")?.map(from_millis),
    })
}

impl Store {
    /// Creates a queued job scoring as of now (see
    /// [`Store::create_scoring_job_as_of`]).
    pub async fn create_scoring_job(&self, tenant: &TenantId, plugin: Option<&str>) -> StoreResult<ScoringJob> {
        self.create_scoring_job_as_of(tenant, plugin, None).await
    }

    /// Creates a queued job, scoring as of `as_of` (epoch ms) when given.
    /// 404 for an unknown tenant; 409 `scoring_job_active` while another
    /// job of the tenant is queued or running (one at a time: a job already
    /// rescores everyone). A job whose heartbeat stopped [`JOB_STALE_MS`]
    /// ago is marked failed instead. An import's job that no worker has
    /// started yet is taken over by a job of every plugin: it becomes this
    /// job (same id, the caller's `as_of`, run by the caller), since it
    /// scores everyone the import touched and more; otherwise an import
    /// followed by `rapport score` would wait on a worker that may not run.
    pub async fn create_scoring_job_as_of(
        &self,
        tenant: &TenantId,
        plugin: Option<&str>,
        as_of: Option<i64>,
    ) -> StoreResult<ScoringJob> {
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        // Serialises job creation per tenant on PostgreSQL (a row lock);
        // SQLite's BEGIN IMMEDIATE already did.
        let locked = sqlx::query("UPDATE tenants SET name = name WHERE id = $1")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Err(StoreError::NotFound { entity: "tenant" });
        }
        let active = sqlx::query(
            "SELECT id, updated_at, status, origin FROM scoring_jobs WHERE tenant_id = $1 AND status IN ('queued', 'running')",
        )
        .bind(tenant.as_str())
        .fetch_all(&mut *tx)
        .await?;
        for row in &active {
            let id: String = row.try_get("id")?;
            let updated_at: i64 = row.try_get("updated_at")?;
            let status: String = row.try_get("status")?;
            let origin: String = row.try_get("origin")?;
            if status == "queued" && origin == "import" && plugin.is_none() {
                // Guarded by its status: a worker that started it meanwhile
                // wins, and this caller gets the usual 409.
                let taken = sqlx::query(
                    "UPDATE scoring_jobs SET origin = 'api', as_of = $1, updated_at = $2 \
                     WHERE tenant_id = $3 AND id = $4 AND status = 'queued'",
                )
                .bind(as_of)
                .bind(now)
                .bind(tenant.as_str())
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                if taken.rows_affected() == 1 {
                    tx.commit().await?;
                    return self.get_scoring_job(tenant, &id).await;
                }
            }
            if now - updated_at < JOB_STALE_MS {
                return Err(StoreError::conflict(
                    "scoring_job_active",
                    format!("scoring job {id} is still running for this tenant"),
                ));
            }
            sqlx::query(
                "UPDATE scoring_jobs SET status = 'failed', error = $1, finished_at = $2, updated_at = $2 \
                 WHERE tenant_id = $3 AND id = $4",
            )
            .bind("abandoned: no progress for 10 minutes (the process running it stopped)")
            .bind(now)
            .bind(tenant.as_str())
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        }
        let id = new_id();
        sqlx::query(
            "INSERT INTO scoring_jobs (tenant_id, id, plugin_id, status, created_at, updated_at, as_of) \
             VALUES ($1, $2, $3, 'queued', $4, $4, $5)",
        )
        .bind(tenant.as_str())
        .bind(&id)
        .bind(plugin)
        .bind(now)
        .bind(as_of)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get_scoring_job(tenant, &id).await
    }

    /// The scoring job an import asks for once it has stored its rows,
    /// instead of queueing every imported customer for the background
    /// worker (which would then compete with live ingest for the queue's
    /// rows). A job of the tenant already waiting to start covers the
    /// import and is returned; otherwise a new one is queued with origin
    /// `import`, even while another runs (that one may have read the
    /// customers before the import stored their rows). The rescore worker
    /// of any node starts it ([`Store::queued_import_jobs`]).
    pub async fn schedule_import_scoring(&self, tenant: &TenantId) -> StoreResult<ScoringJob> {
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        // Serialises scheduling with job creation (see create_scoring_job_as_of).
        let locked = sqlx::query("UPDATE tenants SET name = name WHERE id = $1")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Err(StoreError::NotFound { entity: "tenant" });
        }
        let queued = sqlx::query("SELECT id FROM scoring_jobs WHERE tenant_id = $1 AND status = 'queued' ORDER BY id")
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let id = match queued {
            Some(row) => row.try_get("id")?,
            None => {
                let id = new_id();
                sqlx::query(
                    "INSERT INTO scoring_jobs (tenant_id, id, plugin_id, status, created_at, updated_at, origin) \
                     VALUES ($1, $2, NULL, 'queued', $3, $3, 'import')",
                )
                .bind(tenant.as_str())
                .bind(&id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        tx.commit().await?;
        self.get_scoring_job(tenant, &id).await
    }

    /// Import jobs waiting to start, oldest first, leaving out tenants with
    /// a job running (fresh heartbeat): one job at a time per tenant.
    /// Deliberately cross-tenant: only the rescore worker calls it, and it
    /// then runs each job through tenant-scoped calls.
    pub async fn queued_import_jobs(&self) -> StoreResult<Vec<(TenantId, String)>> {
        let rows = sqlx::query(
            "SELECT q.tenant_id, q.id FROM scoring_jobs q WHERE q.status = 'queued' AND q.origin = 'import' \
             AND NOT EXISTS (SELECT 1 FROM scoring_jobs r WHERE r.tenant_id = q.tenant_id \
             AND r.status = 'running' AND r.updated_at > $1) ORDER BY q.created_at, q.id",
        )
        .bind(now_ms() - JOB_STALE_MS)
        .fetch_all(self.db().pool())
        .await?;
        rows.iter()
            .map(|row| Ok((TenantId::from_row(row.try_get("tenant_id")?), row.try_get("id")?)))
            .collect()
    }

    pub async fn get_scoring_job(&self, tenant: &TenantId, id: &str) -> StoreResult<ScoringJob> {
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM scoring_jobs WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(self.db().pool())
        .await?
        .ok_or(StoreError::NotFound { entity: "scoring job" })?;
        job_from_row(&row)
    }

    /// Queued -> running, with the number of customers to score. 409
    /// `scoring_job_not_queued` if it already started (or finished).
    pub async fn start_scoring_job(&self, tenant: &TenantId, id: &str, total: i64) -> StoreResult<()> {
        let now = now_ms();
        let updated = sqlx::query(
            "UPDATE scoring_jobs SET status = 'running', total = $1, started_at = $2, updated_at = $2 \
             WHERE tenant_id = $3 AND id = $4 AND status = 'queued'",
        )
        .bind(total)
        .bind(now)
        .bind(tenant.as_str())
        .bind(id)
        .execute(self.db().pool())
        .await?;
        if updated.rows_affected() == 0 {
            self.get_scoring_job(tenant, id).await?;
            return Err(StoreError::conflict(
                "scoring_job_not_queued",
                format!("scoring job {id} was already started"),
            ));
        }
        Ok(())
    }

    /// Records progress (and is the job's heartbeat).
    pub async fn scoring_job_progress(&self, tenant: &TenantId, id: &str, done: i64, failed: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE scoring_jobs SET done = $1, failed_customers = $2, updated_at = $3 WHERE tenant_id = $4 AND id = $5",
        )
        .bind(done)
        .bind(failed)
        .bind(now_ms())
        .bind(tenant.as_str())
        .bind(id)
        .execute(self.db().pool())
        .await?;
        Ok(())
    }

    pub async fn scoring_job_fit_summary(&self, tenant: &TenantId, id: &str, summary: &Value) -> StoreResult<()> {
        sqlx::query("UPDATE scoring_jobs SET fit_summary = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4")
            .bind(summary.to_string())
            .bind(now_ms())
            .bind(tenant.as_str())
            .bind(id)
            .execute(self.db().pool())
            .await?;
        Ok(())
    }

    /// Running -> `status` (a finished one), with the reason it did not
    /// succeed and each plugin's outcome.
    pub async fn finish_scoring_job(
        &self,
        tenant: &TenantId,
        id: &str,
        status: JobStatus,
        error: Option<&str>,
        outcomes: &[PluginOutcome],
    ) -> StoreResult<ScoringJob> {
        let now = now_ms();
        let outcomes = serde_json::to_string(outcomes)
            .map_err(|e| StoreError::Corrupt(format!("plugin outcomes as JSON: {e}")))?;
        sqlx::query(
            "UPDATE scoring_jobs SET status = $1, error = $2, finished_at = $3, updated_at = $3, plugin_outcomes = $6 \
             WHERE tenant_id = $4 AND id = $5",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(now)
        .bind(tenant.as_str())
        .bind(id)
        .bind(outcomes)
        .execute(self.db().pool())
        .await?;
        self.get_scoring_job(tenant, id).await
    }

    // -----------------------------------------------------------------
    // Bulk reads of stored scores
}
