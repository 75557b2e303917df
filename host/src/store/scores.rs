//! Store: what scoring plugins computed, and the bulk reads that feed them.
//!
//! - `customer_scores` holds each customer's current score per plugin and
//!   `customer_score_history` every score ever computed; both are written
//!   together, one transaction per chunk ([`Store::save_scores`]).
//! - `rescore_queue` lists customers whose scores are stale. Ingest enqueues
//!   inside its own transaction ([`enqueue_rescore_tx`]); the background
//!   worker of each node claims a batch with a lease ([`Store::claim_rescores`],
//!   like the outbox: PostgreSQL `FOR UPDATE SKIP LOCKED`, SQLite one
//!   `UPDATE` under `BEGIN IMMEDIATE`), so two nodes never rescore the same
//!   customer at once, rescores it, and acknowledges only the entries whose
//!   `generation` did not move meanwhile and whose lease it still holds, so
//!   an interaction arriving mid-rescore is rescored again rather than lost.
//! - `scoring_jobs` tracks batch jobs (fit, then rescore a whole tenant).
//! - The bulk reads ([`Store::population`], [`Store::scoring_histories_page`],
//!   [`Store::scoring_histories`]) are what makes rescoring a million
//!   customers feasible: one streamed query for the population, and two
//!   queries per chunk of customers (customers; interactions joined with
//!   their items), decoded by column index into lean rows whose JSON stays
//!   text, since plugins receive JSON as text anyway.
//!
//! Scores carry `computed_at` = when their *input* was read. The upsert keeps
//! the newer one, so a slow batch job that read a customer before a new
//! interaction never overwrites the worker's fresher score.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::db::Backend;

use super::{Store, StoreError, StoreResult, TenantId, from_millis, is_transient, json_column, new_id, now_ms};

/// Rows per multi-row INSERT (10-11 bind values each): few statements (a
/// round trip each), far below either backend's parameter limit (SQLite
/// 32766, PostgreSQL 65535). See [`row_placeholders`] for SQLite.
const INSERT_ROWS_PER_STATEMENT: usize = 100;
/// Most customers one [`Store::scoring_histories`] call accepts (one `IN`
/// list).
pub const MAX_HISTORY_CHUNK: usize = 2_000;
/// A queued or running job whose heartbeat is older than this was abandoned
/// (its process died) and no longer blocks a new job.
pub const JOB_STALE_MS: i64 = 10 * 60 * 1000;
/// How often a transaction that hit a deadlock or busy database is retried.
const WRITE_ATTEMPTS: u32 = 5;

/// A score to store, as a plugin computed it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewScore {
    pub customer_id: String,
    pub plugin_id: String,
    pub value: f64,
    pub label: Option<String>,
    pub segment: Option<String>,
    pub explanation: String,
    /// Later entries win on duplicate names.
    pub components: Vec<(String, f64)>,
    /// When the input this score was computed from was read (epoch ms).
    pub computed_at: i64,
    pub job_id: Option<String>,
    /// The date the plugin scored the customer as of (its "now", and the
    /// cut-off of the history it saw), when a job set one (epoch ms).
    pub as_of: Option<i64>,
}

/// A stored score (current or historical).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StoredScore {
    pub plugin: String,
    pub value: f64,
    pub label: Option<String>,
    pub segment: Option<String>,
    pub explanation: String,
    /// Named sub-scores, e.g. `{"r": 5, "f": 4, "m": 3}`.
    #[schema(value_type = Object)]
    pub components: Map<String, Value>,
    /// When the data this score was computed from was read.
    #[serde(with = "time::serde::rfc3339")]
    pub computed_at: OffsetDateTime,
    /// The batch job that computed it; absent when it was recomputed after
    /// new interactions.
    pub job_id: Option<String>,
    /// Set when the job scored as of a past date: the plugin saw this time
    /// as "now" and no interaction after it. `null`: scored as of
    /// `computed_at`.
    #[serde(with = "time::serde::rfc3339::option")]
    pub as_of: Option<OffsetDateTime>,
}

/// A plugin's current score of one customer, as the bulk read and export
/// of a plugin's scores return it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CustomerScore {
    pub customer_id: String,
    pub external_id: String,
    #[serde(flatten)]
    pub score: StoredScore,
}

/// How many customers a plugin put in one segment.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SegmentSize {
    pub plugin: String,
    /// `null` counts the customers whose score has no segment.
    pub segment: Option<String>,
    pub customers: i64,
}

/// A customer as a scoring plugin receives it (attributes kept as text).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringCustomer {
    pub id: String,
    pub external_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub attributes: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScoringItem {
    pub sku: String,
    pub quantity: i64,
    /// In the interaction's currency.
    pub unit_price_minor: i64,
}

/// An interaction as a scoring plugin receives it (payload kept as text).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringInteraction {
    pub id: String,
    pub kind: String,
    pub channel: Option<String>,
    pub occurred_at: i64,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub payload: String,
    pub items: Vec<ScoringItem>,
}

/// A customer and their interactions, oldest first, capped at the most
/// recent `max_interactions` (`truncated` says so).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringHistory {
    pub customer: ScoringCustomer,
    pub interactions: Vec<ScoringInteraction>,
    pub truncated: bool,
}

/// One purchase of a population member.
#[derive(Debug, Clone, PartialEq)]
pub struct PopulationPurchase {
    pub at: i64,
    /// 0 for a purchase recorded without an amount.
    pub amount_minor: i64,
    /// `XXX` (ISO 4217 "no currency") for a purchase without an amount.
    pub currency: String,
}

/// A customer's purchases, oldest first, for population-level fits.
#[derive(Debug, Clone, PartialEq)]
pub struct PopulationMember {
    pub customer_id: String,
    pub created_at: i64,
    pub purchases: Vec<PopulationPurchase>,
}

/// An entry of the rescore queue as claimed; acknowledging it removes it
/// only if nobody enqueued the customer again since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRescore {
    pub customer_id: String,
    pub generation: i64,
}

/// Queue entries leased to one node until `lease_expires_at` (epoch ms) by
/// [`Store::claim_rescores`]; entries sorted by customer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RescoreClaim {
    pub node: String,
    pub lease_expires_at: i64,
    pub entries: Vec<QueuedRescore>,
}

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

const SCORE_COLUMNS: &str = "plugin_id, value, label, segment, explanation, components, computed_at, job_id, as_of";

fn score_from_row(row: &AnyRow) -> StoreResult<StoredScore> {
    let components = match json_column(&row.try_get::<String, _>("components")?)? {
        Value::Object(map) => map,
        _ => {
            return Err(StoreError::Corrupt("score components are not a JSON object".into()));
        }
    };
    Ok(StoredScore {
        plugin: row.try_get("plugin_id")?,
        value: row.try_get("value")?,
        label: row.try_get("label")?,
        segment: row.try_get("segment")?,
        explanation: row.try_get("explanation")?,
        components,
        computed_at: from_millis(row.try_get("computed_at")?),
        job_id: row.try_get("job_id")?,
        as_of: row.try_get::<Option<i64>, _>("as_of")?.map(from_millis),
    })
}

/// Components as the JSON object stored (and served): later duplicates win,
/// non-finite numbers (which a validated plugin output never has) become null.
fn components_json(components: &[(String, f64)]) -> String {
    let map: Map<String, Value> = components
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!(v)))
        .collect();
    Value::Object(map).to_string()
}

/// `$a, $b, ...` placeholders for one row of `width` values starting at `first`.
/// Placeholders of one row of a multi-row INSERT: `($a, $b, ...)`, or
/// `(?, ?, ...)` on SQLite. The one place the SQL text differs by backend:
/// SQLite finds a `$N` parameter's number by scanning a list
/// (`sqlite3_bind_parameter_name`), so binding a statement with many `$N`
/// parameters is quadratic (half a job's CPU at 2,000 parameters), while
/// anonymous `?` parameters are bound by position for free. The values are
/// bound in the same order either way.
fn row_placeholders(backend: Backend, first: usize, width: usize) -> String {
    let cells: Vec<String> = match backend {
        Backend::Sqlite => vec!["?".to_string(); width],
        Backend::Postgres => (first..first + width).map(|n| format!("${n}")).collect(),
    };
    format!("({})", cells.join(", "))
}

/// `$from, ..., $(from + count - 1)`.
fn list_placeholders(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Marks a customer's scores stale so the background worker rescores it
/// (about a second later). Idempotent: enqueuing a queued customer only
/// bumps its generation. Call it in the same transaction as the write that
/// made the scores stale, so the two commit or roll back together.
pub async fn enqueue_rescore_tx(conn: &mut AnyConnection, tenant: &TenantId, customer_id: &str) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO rescore_queue (tenant_id, customer_id, enqueued_at, generation) VALUES ($1, $2, $3, 1) \
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET generation = rescore_queue.generation + 1",
    )
    .bind(tenant.as_str())
    .bind(customer_id)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// [`enqueue_rescore_tx`] for many customers at once (a batch ingest): one
/// statement per 500 customers, in customer id order, so that concurrent
/// batches over the same customers take the queue's row locks in one order
/// (and cannot deadlock on them), late in their transaction, and hold them
/// briefly.
pub async fn enqueue_rescore_many_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_ids: &[String],
) -> StoreResult<()> {
    let mut ids: Vec<&str> = customer_ids.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    for chunk in ids.chunks(500) {
        let rows: Vec<String> = (0..chunk.len()).map(|i| format!("($1, ${}, $2, 1)", i + 3)).collect();
        let sql = format!(
            "INSERT INTO rescore_queue (tenant_id, customer_id, enqueued_at, generation) VALUES {} \
             ON CONFLICT (tenant_id, customer_id) DO UPDATE SET generation = rescore_queue.generation + 1",
            rows.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(tenant.as_str()).bind(now_ms());
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Removes everything scoring keeps about a customer (current scores,
/// history, queue entry), for deleting the customer in the same transaction.
pub async fn delete_customer_scores_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
) -> StoreResult<()> {
    for table in ["customer_scores", "customer_score_history", "rescore_queue"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE tenant_id = $1 AND customer_id = $2"
        ))
        .bind(tenant.as_str())
        .bind(customer_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// SQL condition: the background worker may rescore `tenant` (a column or
/// placeholder) now. Not while the tenant paused it (`rescore_pauses`), and
/// not while a scoring job of the tenant runs (heartbeat after `stale`, a
/// placeholder): the job rescores everyone and clears the queue entries it
/// covered, so a worker rescoring beside it would only race it, and could
/// replace a score the job computed as of a past date with one as of today.
/// Entries enqueued during the job are rescored once it ends.
fn worker_may_run(tenant: &str, stale: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM rescore_pauses p WHERE p.tenant_id = {tenant}) \
         AND NOT EXISTS (SELECT 1 FROM scoring_jobs j WHERE j.tenant_id = {tenant} \
         AND j.status = 'running' AND j.updated_at > {stale})"
    )
}

/// The background rescore worker as one tenant sees it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RescoreWorkerState {
    /// Paused by the tenant (`PUT /v1/scoring/worker`, `rapport rescoring
    /// pause`): queued customers wait until it is resumed.
    pub paused: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub paused_at: Option<OffsetDateTime>,
    /// Customers waiting in the rescore queue.
    pub queued: i64,
    /// A running scoring job; the worker leaves the tenant alone meanwhile.
    pub running_job: Option<String>,
}

fn is_foreign_key_violation(err: &StoreError) -> bool {
    matches!(err, StoreError::Database(sqlx::Error::Database(db)) if db.is_foreign_key_violation())
}

fn retryable(err: &StoreError) -> bool {
    matches!(err, StoreError::Database(e) if is_transient(e))
}

/// Where a chunk's interactions come from: an explicit list of customers, or
/// the contiguous id range of a page of customers (an index range scan).
enum HistoryScope<'a> {
    Ids(&'a [String]),
    Range { first: &'a str, last: &'a str },
}

fn customer_from_row(row: &AnyRow) -> StoreResult<ScoringCustomer> {
    Ok(ScoringCustomer {
        id: row.try_get(0)?,
        external_id: row.try_get(1)?,
        name: row.try_get(2)?,
        email: row.try_get(3)?,
        phone: row.try_get(4)?,
        attributes: row.try_get(5)?,
        created_at: row.try_get(6)?,
    })
}

const SCORING_CUSTOMER_COLUMNS: &str = "id, external_id, name, email, phone, attributes, created_at";

impl Store {
    /// Stores scores: upserts each (customer, plugin)'s current score unless
    /// a newer one is stored, and appends every score to the history, all in
    /// one transaction. Scores of customers deleted meanwhile are dropped.
    /// Returns how many scores were stored.
    pub async fn save_scores(&self, tenant: &TenantId, scores: &[NewScore]) -> StoreResult<u64> {
        if scores.is_empty() {
            return Ok(0);
        }
        // One row per (customer, plugin), the newest, in key order: a
        // multi-row upsert may not touch a row twice (PostgreSQL), and a
        // fixed lock order keeps concurrent writers from deadlocking.
        let mut rows: Vec<&NewScore> = scores.iter().collect();
        rows.sort_by(|a, b| {
            (a.customer_id.as_str(), a.plugin_id.as_str(), a.computed_at).cmp(&(
                b.customer_id.as_str(),
                b.plugin_id.as_str(),
                b.computed_at,
            ))
        });
        let mut current: Vec<&NewScore> = Vec::with_capacity(rows.len());
        for row in &rows {
            match current.last_mut() {
                Some(last) if last.customer_id == row.customer_id && last.plugin_id == row.plugin_id => *last = row,
                _ => current.push(row),
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.save_scores_once(tenant, &current, &rows).await {
                Ok(n) => return Ok(n),
                Err(e) if is_foreign_key_violation(&e) => {
                    // A customer was deleted after its history was read:
                    // keep the others' scores.
                    let existing = self.existing_customers(tenant, &current).await?;
                    let current: Vec<&NewScore> = current
                        .iter()
                        .copied()
                        .filter(|s| existing.contains_key(s.customer_id.as_str()))
                        .collect();
                    let rows: Vec<&NewScore> = rows
                        .iter()
                        .copied()
                        .filter(|s| existing.contains_key(s.customer_id.as_str()))
                        .collect();
                    return self.save_scores_once(tenant, &current, &rows).await;
                }
                Err(e) if retryable(&e) && attempt < WRITE_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn existing_customers(&self, tenant: &TenantId, scores: &[&NewScore]) -> StoreResult<HashMap<String, ()>> {
        let mut ids: Vec<String> = scores.iter().map(|s| s.customer_id.clone()).collect();
        ids.dedup();
        let mut existing = HashMap::new();
        for chunk in ids.chunks(MAX_HISTORY_CHUNK) {
            let sql = format!(
                "SELECT id FROM customers WHERE tenant_id = $1 AND id IN ({})",
                list_placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(tenant.as_str());
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for row in q.fetch_all(self.db().pool()).await? {
                existing.insert(row.try_get::<String, _>(0)?, ());
            }
        }
        Ok(existing)
    }

    async fn save_scores_once(&self, tenant: &TenantId, current: &[&NewScore], all: &[&NewScore]) -> StoreResult<u64> {
        // Bind values per row of the current-score and the history INSERTs.
        const WIDTH: usize = 11;
        const HISTORY_WIDTH: usize = 12;
        let backend = self.db().backend();
        let mut tx = self.db().begin_write().await?;
        // Triggers on score crossings need the values being replaced; read
        // them only when the tenant has such a trigger.
        let triggers = super::triggers::enabled_triggers_tx(&mut tx, tenant, "score_crossed").await?;
        let mut stored = 0;
        for chunk in current.chunks(INSERT_ROWS_PER_STATEMENT) {
            let previous = if triggers.is_empty() {
                HashMap::new()
            } else {
                previous_scores(&mut tx, tenant, chunk).await?
            };
            let values: Vec<String> = (0..chunk.len())
                .map(|i| row_placeholders(backend, 1 + i * WIDTH, WIDTH))
                .collect();
            let sql = format!(
                "INSERT INTO customer_scores (tenant_id, customer_id, plugin_id, value, label, segment, explanation, \
                 components, computed_at, job_id, as_of) VALUES {} \
                 ON CONFLICT (tenant_id, customer_id, plugin_id) DO UPDATE SET value = excluded.value, \
                 label = excluded.label, segment = excluded.segment, explanation = excluded.explanation, \
                 components = excluded.components, computed_at = excluded.computed_at, job_id = excluded.job_id, \
                 as_of = excluded.as_of WHERE customer_scores.computed_at <= excluded.computed_at",
                values.join(", ")
            );
            let components: Vec<String> = chunk.iter().map(|s| components_json(&s.components)).collect();
            let mut q = sqlx::query(&sql);
            for (s, components) in chunk.iter().zip(&components) {
                q = q
                    .bind(tenant.as_str())
                    .bind(s.customer_id.as_str())
                    .bind(s.plugin_id.as_str())
                    .bind(s.value)
                    .bind(s.label.as_deref())
                    .bind(s.segment.as_deref())
                    .bind(s.explanation.as_str())
                    .bind(components.as_str())
                    .bind(s.computed_at)
                    .bind(s.job_id.as_deref())
                    .bind(s.as_of);
            }
            stored += q.execute(&mut *tx).await?.rows_affected();
            if !triggers.is_empty() {
                let changes: Vec<super::triggers::ScoreChange> = chunk
                    .iter()
                    .filter_map(|s| {
                        let before = previous.get(&(s.customer_id.clone(), s.plugin_id.clone()));
                        // An older score than the stored one was not written.
                        match before {
                            Some((_, at)) if *at > s.computed_at => None,
                            _ => Some(super::triggers::ScoreChange {
                                customer_id: &s.customer_id,
                                plugin_id: &s.plugin_id,
                                computed_at: s.computed_at,
                                previous: before.map(|(value, _)| *value),
                                value: s.value,
                            }),
                        }
                    })
                    .collect();
                super::triggers::on_scores_tx(&mut tx, tenant, &triggers, &changes).await?;
            }
        }
        for chunk in all.chunks(INSERT_ROWS_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| row_placeholders(backend, 1 + i * HISTORY_WIDTH, HISTORY_WIDTH))
                .collect();
            let sql = format!(
                "INSERT INTO customer_score_history (tenant_id, customer_id, plugin_id, computed_at, id, value, label, \
                 segment, explanation, components, job_id, as_of) VALUES {}",
                values.join(", ")
            );
            let rows: Vec<(String, String)> = chunk
                .iter()
                .map(|s| (new_id(), components_json(&s.components)))
                .collect();
            let mut q = sqlx::query(&sql);
            for (s, (id, components)) in chunk.iter().zip(&rows) {
                q = q
                    .bind(tenant.as_str())
                    .bind(s.customer_id.as_str())
                    .bind(s.plugin_id.as_str())
                    .bind(s.computed_at)
                    .bind(id.as_str())
                    .bind(s.value)
                    .bind(s.label.as_deref())
                    .bind(s.segment.as_deref())
                    .bind(s.explanation.as_str())
                    .bind(components.as_str())
                    .bind(s.job_id.as_deref())
                    .bind(s.as_of);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    async fn require_customer(&self, tenant: &TenantId, customer_id: &str) -> StoreResult<()> {
        sqlx::query("SELECT id FROM customers WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(customer_id)
            .fetch_optional(self.db().pool())
            .await?
            .ok_or(StoreError::NotFound { entity: "customer" })?;
        Ok(())
    }

    /// A customer's current scores, one per plugin (or just `plugin`'s), by
    /// plugin id. 404 for a customer the tenant does not have.
    pub async fn customer_scores(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        plugin: Option<&str>,
    ) -> StoreResult<Vec<StoredScore>> {
        self.require_customer(tenant, customer_id).await?;
        let filter = if plugin.is_some() { " AND plugin_id = $3" } else { "" };
        let sql = format!(
            "SELECT {SCORE_COLUMNS} FROM customer_scores WHERE tenant_id = $1 AND customer_id = $2{filter} \
             ORDER BY plugin_id"
        );
        let mut q = sqlx::query(&sql).bind(tenant.as_str()).bind(customer_id);
        if let Some(p) = plugin {
            q = q.bind(p);
        }
        q.fetch_all(self.db().pool())
            .await?
            .iter()
            .map(score_from_row)
            .collect()
    }

    /// A customer's score history, newest first, at most `limit` entries.
    pub async fn customer_score_history(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        plugin: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<StoredScore>> {
        self.require_customer(tenant, customer_id).await?;
        let (filter, limit_at) = if plugin.is_some() {
            (" AND plugin_id = $3", "$4")
        } else {
            ("", "$3")
        };
        let sql = format!(
            "SELECT {SCORE_COLUMNS} FROM customer_score_history WHERE tenant_id = $1 AND customer_id = $2{filter} \
             ORDER BY computed_at DESC, id DESC LIMIT {limit_at}"
        );
        let mut q = sqlx::query(&sql).bind(tenant.as_str()).bind(customer_id);
        if let Some(p) = plugin {
            q = q.bind(p);
        }
        q.bind(limit)
            .fetch_all(self.db().pool())
            .await?
            .iter()
            .map(score_from_row)
            .collect()
    }

    /// How many customers each plugin (or just `plugin`) put in each
    /// segment, largest first.
    pub async fn segment_sizes(&self, tenant: &TenantId, plugin: Option<&str>) -> StoreResult<Vec<SegmentSize>> {
        let filter = if plugin.is_some() { " AND plugin_id = $2" } else { "" };
        let sql = format!(
            "SELECT plugin_id, segment, CAST(COUNT(*) AS BIGINT) AS customers FROM customer_scores \
             WHERE tenant_id = $1{filter} GROUP BY plugin_id, segment ORDER BY plugin_id, customers DESC, segment"
        );
        let mut q = sqlx::query(&sql).bind(tenant.as_str());
        if let Some(p) = plugin {
            q = q.bind(p);
        }
        q.fetch_all(self.db().pool())
            .await?
            .iter()
            .map(|row| {
                Ok(SegmentSize {
                    plugin: row.try_get("plugin_id")?,
                    segment: row.try_get("segment")?,
                    customers: row.try_get("customers")?,
                })
            })
            .collect()
    }

    pub async fn count_customers(&self, tenant: &TenantId) -> StoreResult<i64> {
        Ok(
            sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM customers WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_one(self.db().pool())
                .await?
                .try_get("n")?,
        )
    }

    /// Every customer of the tenant with their purchases, oldest first, in
    /// customer id order. Two streamed scans and no join: customers, then
    /// the tenant's purchases in (customer, time) order, matched up in one
    /// walk. A join looked the same but, on PostgreSQL without fresh
    /// statistics (right after a bulk import), was planned as a nested loop
    /// over every purchase per customer: 112 s instead of 0.2 s for 15,000
    /// customers. `kind || ''` keeps the purchases on the per-customer
    /// timeline index, which already yields the order (SQLite would
    /// otherwise pick the kind index and sort).
    pub async fn population(&self, tenant: &TenantId) -> StoreResult<Vec<PopulationMember>> {
        let mut members: Vec<PopulationMember> = Vec::new();
        let mut rows = sqlx::query("SELECT id, created_at FROM customers WHERE tenant_id = $1 ORDER BY id")
            .bind(tenant.as_str())
            .fetch(self.db().pool());
        while let Some(row) = rows.try_next().await? {
            members.push(PopulationMember {
                customer_id: row.try_get(0)?,
                created_at: row.try_get(1)?,
                purchases: Vec::new(),
            });
        }
        drop(rows);
        let mut rows = sqlx::query(
            "SELECT customer_id, occurred_at, amount_minor, currency FROM interactions \
             WHERE tenant_id = $1 AND kind || '' = 'purchase' ORDER BY customer_id, occurred_at, id",
        )
        .bind(tenant.as_str())
        .fetch(self.db().pool());
        // Both scans are in the database's id order, so the purchases'
        // customers appear in the same order as `members`: advance until
        // equal (no comparison in Rust, whose order may differ from the
        // database collation).
        let mut slot = 0;
        while let Some(row) = rows.try_next().await? {
            let customer_id: String = row.try_get(0)?;
            while members.get(slot).is_some_and(|m| m.customer_id != customer_id) {
                slot += 1;
            }
            let Some(member) = members.get_mut(slot) else {
                // A customer created after the first scan: not in this population.
                break;
            };
            let amount_minor: Option<i64> = row.try_get(2)?;
            let currency: Option<String> = row.try_get(3)?;
            member.purchases.push(PopulationPurchase {
                at: row.try_get(1)?,
                amount_minor: amount_minor.unwrap_or(0),
                currency: currency.unwrap_or_else(|| "XXX".to_string()),
            });
        }
        Ok(members)
    }

    /// The next page of customers in id order (after `after`, at most
    /// `limit`), each with their history: two queries, both index range scans.
    pub async fn scoring_histories_page(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: usize,
        max_interactions: usize,
    ) -> StoreResult<Vec<ScoringHistory>> {
        let (histories, _) = self
            .histories_page(tenant, after, limit, max_interactions, false)
            .await?;
        Ok(histories)
    }

    /// [`Store::scoring_histories_page`], plus the rescore-queue entries of
    /// the page's customers as they were *before* their histories were read:
    /// a job that stores scores from this read may clear exactly those
    /// entries ([`Store::clear_rescores`]), while a customer enqueued after
    /// the read (a newer generation) stays queued.
    pub async fn scoring_histories_page_with_queue(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: usize,
        max_interactions: usize,
    ) -> StoreResult<(Vec<ScoringHistory>, Vec<QueuedRescore>)> {
        self.histories_page(tenant, after, limit, max_interactions, true).await
    }

    async fn histories_page(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: usize,
        max_interactions: usize,
        with_queue: bool,
    ) -> StoreResult<(Vec<ScoringHistory>, Vec<QueuedRescore>)> {
        let limit = i64::try_from(limit.clamp(1, MAX_HISTORY_CHUNK)).unwrap_or(1);
        let mut conn = self.db().pool().acquire().await?;
        let rows = match after {
            Some(after) => {
                sqlx::query(&format!(
                    "SELECT {SCORING_CUSTOMER_COLUMNS} FROM customers WHERE tenant_id = $1 AND id > $2 \
                     ORDER BY id LIMIT $3"
                ))
                .bind(tenant.as_str())
                .bind(after)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {SCORING_CUSTOMER_COLUMNS} FROM customers WHERE tenant_id = $1 ORDER BY id LIMIT $2"
                ))
                .bind(tenant.as_str())
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
            }
        };
        let customers = rows.iter().map(customer_from_row).collect::<StoreResult<Vec<_>>>()?;
        let (Some(first), Some(last)) = (customers.first(), customers.last()) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let (first, last) = (first.id.clone(), last.id.clone());
        let queued = if with_queue {
            sqlx::query(
                "SELECT customer_id, generation FROM rescore_queue \
                 WHERE tenant_id = $1 AND customer_id >= $2 AND customer_id <= $3",
            )
            .bind(tenant.as_str())
            .bind(first.as_str())
            .bind(last.as_str())
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| {
                Ok(QueuedRescore {
                    customer_id: row.try_get(0)?,
                    generation: row.try_get(1)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let scope = HistoryScope::Range {
            first: &first,
            last: &last,
        };
        let histories = attach_histories(&mut conn, tenant, customers, scope, max_interactions).await?;
        Ok((histories, queued))
    }

    /// The given customers (those the tenant has; others are skipped) with
    /// their histories, in id order: two queries.
    pub async fn scoring_histories(
        &self,
        tenant: &TenantId,
        customer_ids: &[String],
        max_interactions: usize,
    ) -> StoreResult<Vec<ScoringHistory>> {
        let mut ids: Vec<String> = customer_ids.to_vec();
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        if ids.len() > MAX_HISTORY_CHUNK {
            return Err(StoreError::invalid(
                "customer_ids",
                format!("at most {MAX_HISTORY_CHUNK} customers per chunk"),
            ));
        }
        let mut conn = self.db().pool().acquire().await?;
        let sql = format!(
            "SELECT {SCORING_CUSTOMER_COLUMNS} FROM customers WHERE tenant_id = $1 AND id IN ({}) ORDER BY id",
            list_placeholders(2, ids.len())
        );
        let mut q = sqlx::query(&sql).bind(tenant.as_str());
        for id in &ids {
            q = q.bind(id.as_str());
        }
        let customers = q
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(customer_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let found: Vec<String> = customers.iter().map(|c| c.id.clone()).collect();
        if found.is_empty() {
            return Ok(Vec::new());
        }
        attach_histories(
            &mut conn,
            tenant,
            customers,
            HistoryScope::Ids(&found),
            max_interactions,
        )
        .await
    }

    // -----------------------------------------------------------------
    // Rescore queue

    /// Enqueues one customer outside any other transaction.
    pub async fn enqueue_rescore(&self, tenant: &TenantId, customer_id: &str) -> StoreResult<()> {
        let mut conn = self.db().pool().acquire().await?;
        enqueue_rescore_tx(&mut conn, tenant, customer_id).await
    }

    /// Tenants with customers waiting to be rescored and not leased by a
    /// worker (or leased, but the lease expired), leaving out the tenants
    /// the worker must not touch now (see `worker_may_run`). Deliberately
    /// cross-tenant: only the background worker calls it, and it then
    /// handles each tenant through tenant-scoped calls.
    pub async fn tenants_with_queued_rescores(&self) -> StoreResult<Vec<TenantId>> {
        let now = now_ms();
        sqlx::query(&format!(
            "SELECT DISTINCT tenant_id FROM rescore_queue q \
             WHERE (lease_expires_at IS NULL OR lease_expires_at <= $1) AND {} ORDER BY tenant_id",
            worker_may_run("q.tenant_id", "$2")
        ))
        .bind(now)
        .bind(now - JOB_STALE_MS)
        .fetch_all(self.db().pool())
        .await?
        .iter()
        .map(|row| Ok(TenantId::from_row(row.try_get(0)?)))
        .collect()
    }

    /// Leases up to `limit` of a tenant's oldest queued customers to `node`
    /// for `lease_ms`: entries leased by another claim are skipped until
    /// their lease expires, so concurrent workers (of this node or others)
    /// never get the same customer. Acknowledge with [`Store::ack_rescores`]
    /// or hand back with [`Store::release_rescores`].
    pub async fn claim_rescores(
        &self,
        tenant: &TenantId,
        node: &str,
        lease_ms: i64,
        limit: usize,
    ) -> StoreResult<RescoreClaim> {
        let limit = i64::try_from(limit.clamp(1, MAX_HISTORY_CHUNK)).unwrap_or(1);
        let now = now_ms();
        let expires = now.saturating_add(lease_ms.max(1));
        // Same shape as `claim_messages`: on PostgreSQL the locking select
        // is a CTE (evaluated once) with SKIP LOCKED, so concurrent claimers
        // pass over each other's rows instead of waiting for them; a row
        // another claim leased and committed meanwhile fails the re-checked
        // WHERE. On SQLite `begin_write` makes the claim the only writer.
        let due = format!(
            "SELECT customer_id FROM rescore_queue WHERE tenant_id = $1 \
             AND (lease_expires_at IS NULL OR lease_expires_at <= $3) AND {} \
             ORDER BY enqueued_at, customer_id LIMIT $4",
            worker_may_run("$1", "$6")
        );
        let update = "UPDATE rescore_queue SET lease_owner = $2, lease_expires_at = $5 WHERE tenant_id = $1";
        let returning = "RETURNING customer_id, generation";
        let sql = match self.db().backend() {
            Backend::Postgres => format!(
                "WITH due AS ({due} FOR UPDATE SKIP LOCKED) \
                 {update} AND customer_id IN (SELECT customer_id FROM due) {returning}"
            ),
            Backend::Sqlite => format!("{update} AND customer_id IN ({due}) {returning}"),
        };
        let mut tx = self.db().begin_write().await?;
        let rows = sqlx::query(&sql)
            .bind(tenant.as_str())
            .bind(node)
            .bind(now)
            .bind(limit)
            .bind(expires)
            .bind(now - JOB_STALE_MS)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut entries = rows
            .iter()
            .map(|row| {
                Ok(QueuedRescore {
                    customer_id: row.try_get(0)?,
                    generation: row.try_get(1)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        entries.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
        Ok(RescoreClaim {
            node: node.to_string(),
            lease_expires_at: expires,
            entries,
        })
    }

    /// Removes the claimed entries that were rescored, if the claim still
    /// holds their lease and nobody enqueued them again since. An entry
    /// re-enqueued meanwhile (bumped generation) stays queued and loses the
    /// lease, so the next pass rescores it at once; an entry whose lease was
    /// taken over is left to the claim that took it. Returns how many were
    /// removed.
    pub async fn ack_rescores(&self, tenant: &TenantId, claim: &RescoreClaim) -> StoreResult<u64> {
        self.settle_rescores(tenant, claim, true).await
    }

    /// Hands the claimed entries back unrescored (the worker failed), so the
    /// next pass of any node may take them without waiting for the lease.
    pub async fn release_rescores(&self, tenant: &TenantId, claim: &RescoreClaim) -> StoreResult<()> {
        self.settle_rescores(tenant, claim, false).await.map(|_| ())
    }

    async fn settle_rescores(&self, tenant: &TenantId, claim: &RescoreClaim, done: bool) -> StoreResult<u64> {
        // Fenced on (owner, expiry): the expiry is unique to one claim in
        // practice, so even a later claim of the same node is not ours.
        let ours = "tenant_id = $1 AND customer_id = $2 AND lease_owner = $3 AND lease_expires_at = $4";
        let delete = format!("DELETE FROM rescore_queue WHERE {ours} AND generation = $5");
        let unlease = format!("UPDATE rescore_queue SET lease_owner = NULL, lease_expires_at = NULL WHERE {ours}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result: StoreResult<u64> = async {
                let mut tx = self.db().begin_write().await?;
                let mut removed = 0;
                for e in &claim.entries {
                    if done {
                        let deleted = sqlx::query(&delete)
                            .bind(tenant.as_str())
                            .bind(e.customer_id.as_str())
                            .bind(claim.node.as_str())
                            .bind(claim.lease_expires_at)
                            .bind(e.generation)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        removed += deleted;
                        if deleted > 0 {
                            continue;
                        }
                    }
                    sqlx::query(&unlease)
                        .bind(tenant.as_str())
                        .bind(e.customer_id.as_str())
                        .bind(claim.node.as_str())
                        .bind(claim.lease_expires_at)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(removed)
            }
            .await;
            match result {
                Err(e) if retryable(&e) && attempt < WRITE_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
    }

    /// Removes the given queue entries if their generation is unchanged,
    /// whoever holds their lease: a job that stored scores computed from a
    /// read made after these generations were seen covers them (see
    /// [`Store::scoring_histories_page_with_queue`]). A worker holding one
    /// then acknowledges nothing. Returns how many were removed.
    pub async fn clear_rescores(&self, tenant: &TenantId, entries: &[QueuedRescore]) -> StoreResult<u64> {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result: StoreResult<u64> = async {
                let mut tx = self.db().begin_write().await?;
                let mut removed = 0;
                // Many entries per statement (a job clears up to a chunk's
                // worth at a time): one round trip each, primary-key lookups.
                for chunk in entries.chunks(INSERT_ROWS_PER_STATEMENT) {
                    let terms: Vec<String> = (0..chunk.len())
                        .map(|i| format!("(customer_id = ${} AND generation = ${})", 2 + 2 * i, 3 + 2 * i))
                        .collect();
                    let sql = format!(
                        "DELETE FROM rescore_queue WHERE tenant_id = $1 AND ({})",
                        terms.join(" OR ")
                    );
                    let mut q = sqlx::query(&sql).bind(tenant.as_str());
                    for e in chunk {
                        q = q.bind(e.customer_id.as_str()).bind(e.generation);
                    }
                    removed += q.execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                Ok(removed)
            }
            .await;
            match result {
                Err(e) if retryable(&e) && attempt < WRITE_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
    }

    /// Pauses (or resumes) the background rescore worker for the tenant, on
    /// every node. Idempotent; returns the new state.
    pub async fn set_rescore_paused(&self, tenant: &TenantId, paused: bool) -> StoreResult<RescoreWorkerState> {
        if paused {
            sqlx::query(
                "INSERT INTO rescore_pauses (tenant_id, paused_at) VALUES ($1, $2) \
                 ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(tenant.as_str())
            .bind(now_ms())
            .execute(self.db().pool())
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound { entity: "tenant" },
                other => other.into(),
            })?;
        } else {
            sqlx::query("DELETE FROM rescore_pauses WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .execute(self.db().pool())
                .await?;
        }
        self.rescore_worker_state(tenant).await
    }

    /// Whether the tenant paused the worker, how many customers wait, and
    /// the running job the worker waits for, if any.
    pub async fn rescore_worker_state(&self, tenant: &TenantId) -> StoreResult<RescoreWorkerState> {
        let paused_at: Option<i64> = sqlx::query("SELECT paused_at FROM rescore_pauses WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(self.db().pool())
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        let queued: i64 = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM rescore_queue WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_one(self.db().pool())
            .await?
            .try_get(0)?;
        let running_job: Option<String> = sqlx::query(
            "SELECT id FROM scoring_jobs WHERE tenant_id = $1 AND status = 'running' AND updated_at > $2 \
             ORDER BY id LIMIT 1",
        )
        .bind(tenant.as_str())
        .bind(now_ms() - JOB_STALE_MS)
        .fetch_optional(self.db().pool())
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
        Ok(RescoreWorkerState {
            paused: paused_at.is_some(),
            paused_at: paused_at.map(from_millis),
            queued,
            running_job,
        })
    }

    // -----------------------------------------------------------------
    // Jobs

    /// Creates a queued job scoring as of now (see
    /// [`Store::create_scoring_job_as_of`]).
    pub async fn create_scoring_job(&self, tenant: &TenantId, plugin: Option<&str>) -> StoreResult<ScoringJob> {
        self.create_scoring_job_as_of(tenant, plugin, None).await
    }

    /// Creates a queued job, scoring as of `as_of` (epoch ms) when given.
    /// 404 for an unknown tenant; 409 `scoring_job_active` while another
    /// job of the tenant is queued or running (one at a time: a job already
    /// rescores everyone). A job whose heartbeat stopped [`JOB_STALE_MS`]
    /// ago is marked failed instead.
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
            "SELECT id, updated_at FROM scoring_jobs WHERE tenant_id = $1 AND status IN ('queued', 'running')",
        )
        .bind(tenant.as_str())
        .fetch_all(&mut *tx)
        .await?;
        for row in &active {
            let id: String = row.try_get("id")?;
            let updated_at: i64 = row.try_get("updated_at")?;
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

    /// A page of `plugin`'s current scores, in customer id order, after
    /// customer `after`, at most `limit`: one index range scan joined with
    /// the customers (for their external ids).
    pub async fn plugin_scores_page(
        &self,
        tenant: &TenantId,
        plugin: &str,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<CustomerScore>> {
        let rows = sqlx::query(
            "SELECT s.customer_id, c.external_id, s.plugin_id, s.value, s.label, s.segment, s.explanation, \
             s.components, s.computed_at, s.job_id, s.as_of \
             FROM customer_scores s JOIN customers c ON c.tenant_id = s.tenant_id AND c.id = s.customer_id \
             WHERE s.tenant_id = $1 AND s.plugin_id = $2 AND s.customer_id > $3 ORDER BY s.customer_id LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(plugin)
        .bind(after.unwrap_or(""))
        .bind(limit.max(1))
        .fetch_all(self.db().pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(CustomerScore {
                    customer_id: row.try_get("customer_id")?,
                    external_id: row.try_get("external_id")?,
                    score: score_from_row(row)?,
                })
            })
            .collect()
    }

    /// `plugin`'s current score of each of `customer_ids` that has one, by
    /// customer id (at most [`MAX_HISTORY_CHUNK`] ids).
    pub async fn plugin_scores_of(
        &self,
        tenant: &TenantId,
        plugin: &str,
        customer_ids: &[String],
    ) -> StoreResult<HashMap<String, StoredScore>> {
        if customer_ids.is_empty() {
            return Ok(HashMap::new());
        }
        if customer_ids.len() > MAX_HISTORY_CHUNK {
            return Err(StoreError::invalid(
                "customer_ids",
                format!("at most {MAX_HISTORY_CHUNK} customers per read"),
            ));
        }
        let sql = format!(
            "SELECT customer_id, {SCORE_COLUMNS} FROM customer_scores WHERE tenant_id = $1 AND plugin_id = $2 \
             AND customer_id IN ({})",
            list_placeholders(3, customer_ids.len())
        );
        let mut q = sqlx::query(&sql).bind(tenant.as_str()).bind(plugin);
        for id in customer_ids {
            q = q.bind(id.as_str());
        }
        let mut found = HashMap::new();
        for row in q.fetch_all(self.db().pool()).await? {
            found.insert(row.try_get::<String, _>("customer_id")?, score_from_row(&row)?);
        }
        Ok(found)
    }
}

/// Separators of the packed history text (see [`attach_histories`]). ASCII
/// control characters: none can occur in a stored field (ids, kinds,
/// channels, currencies and SKUs are validated free of control characters,
/// and JSON text escapes them), so the packing needs no escaping.
const INTERACTION_SEP: &str = "\u{1e}";
const FIELD_SEP: &str = "\u{1f}";
const ITEM_SEP: &str = "\u{1c}";
const ITEM_FIELD_SEP: &str = "\u{1d}";

/// Loads the interactions (with their items) of `customers` and pairs them
/// up: ONE row per customer, its interactions packed into one text
/// (`string_agg ... ORDER BY`, the same SQL on SQLite 3.44+ and PostgreSQL).
/// Row-per-interaction reads cost ~10 µs a row through `sqlx::Any` (a copy
/// per value and a cross-thread hand-off per row); packing cuts the rows ten
/// times for a typical customer, and splitting text is cheap. Optional
/// fields are packed as `v<value>` or `n` (NULL).
async fn attach_histories(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customers: Vec<ScoringCustomer>,
    scope: HistoryScope<'_>,
    max_interactions: usize,
) -> StoreResult<Vec<ScoringHistory>> {
    const SELECT: &str = "SELECT i.customer_id, string_agg(\
           i.id || $2 || i.kind || $2 || COALESCE('v' || i.channel, 'n') || $2 \
           || CAST(i.occurred_at AS TEXT) || $2 || COALESCE('v' || CAST(i.amount_minor AS TEXT), 'n') || $2 \
           || COALESCE('v' || i.currency, 'n') || $2 || i.payload || $2 \
           || COALESCE((SELECT string_agg(it.sku || $3 || CAST(it.quantity AS TEXT) || $3 \
                                          || CAST(it.unit_price_minor AS TEXT), $4 ORDER BY it.line_no) \
                        FROM interaction_items it WHERE it.tenant_id = i.tenant_id AND it.interaction_id = i.id), ''), \
           $5 ORDER BY i.occurred_at, i.id) AS packed \
         FROM interactions i WHERE i.tenant_id = $1 AND ";
    const GROUP: &str = " GROUP BY i.customer_id";
    let rows = match scope {
        HistoryScope::Range { first, last } => {
            let sql = format!("{SELECT}i.customer_id >= $6 AND i.customer_id <= $7{GROUP}");
            sqlx::query(&sql)
                .bind(tenant.as_str())
                .bind(FIELD_SEP)
                .bind(ITEM_FIELD_SEP)
                .bind(ITEM_SEP)
                .bind(INTERACTION_SEP)
                .bind(first)
                .bind(last)
                .fetch_all(&mut *conn)
                .await?
        }
        HistoryScope::Ids(ids) => {
            let sql = format!("{SELECT}i.customer_id IN ({}){GROUP}", list_placeholders(6, ids.len()));
            let mut q = sqlx::query(&sql)
                .bind(tenant.as_str())
                .bind(FIELD_SEP)
                .bind(ITEM_FIELD_SEP)
                .bind(ITEM_SEP)
                .bind(INTERACTION_SEP);
            for id in ids {
                q = q.bind(id.as_str());
            }
            q.fetch_all(&mut *conn).await?
        }
    };
    let index: HashMap<String, usize> = customers.iter().enumerate().map(|(n, c)| (c.id.clone(), n)).collect();
    let mut histories: Vec<ScoringHistory> = customers
        .into_iter()
        .map(|customer| ScoringHistory {
            customer,
            interactions: Vec::new(),
            truncated: false,
        })
        .collect();
    for row in &rows {
        let customer_id: String = row.try_get(0)?;
        // In the id range but not in the page cannot happen for a page (it
        // is contiguous); skip rather than misattribute.
        let Some(&slot) = index.get(&customer_id) else {
            continue;
        };
        let packed: Option<String> = row.try_get(1)?;
        let interactions = &mut histories[slot].interactions;
        for record in packed.as_deref().unwrap_or("").split(INTERACTION_SEP) {
            if !record.is_empty() {
                interactions.push(unpack_interaction(record)?);
            }
        }
    }
    for history in &mut histories {
        let n = history.interactions.len();
        if n > max_interactions {
            // Keep the most recent ones: they matter most to any score.
            history.interactions.drain(..n - max_interactions);
            history.truncated = true;
        }
    }
    Ok(histories)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("packed interaction history: {what}"))
}

fn optional(field: &str) -> StoreResult<Option<String>> {
    match field.strip_prefix('v') {
        Some(value) => Ok(Some(value.to_string())),
        None if field == "n" => Ok(None),
        None => Err(corrupt("optional field without marker")),
    }
}

fn number(field: &str) -> StoreResult<i64> {
    field.parse().map_err(|_| corrupt("not an integer"))
}

fn unpack_interaction(record: &str) -> StoreResult<ScoringInteraction> {
    let fields: Vec<&str> = record.split(FIELD_SEP).collect();
    let [id, kind, channel, occurred_at, amount_minor, currency, payload, items] = fields[..] else {
        return Err(corrupt("wrong number of fields"));
    };
    let mut unpacked_items = Vec::new();
    for item in items.split(ITEM_SEP).filter(|i| !i.is_empty()) {
        let parts: Vec<&str> = item.split(ITEM_FIELD_SEP).collect();
        let [sku, quantity, unit_price_minor] = parts[..] else {
            return Err(corrupt("wrong number of item fields"));
        };
        unpacked_items.push(ScoringItem {
            sku: sku.to_string(),
            quantity: number(quantity)?,
            unit_price_minor: number(unit_price_minor)?,
        });
    }
    Ok(ScoringInteraction {
        id: id.to_string(),
        kind: kind.to_string(),
        channel: optional(channel)?,
        occurred_at: number(occurred_at)?,
        amount_minor: optional(amount_minor)?.map(|a| number(&a)).transpose()?,
        currency: optional(currency)?,
        payload: payload.to_string(),
        items: unpacked_items,
    })
}

/// The stored (value, computed_at) of each (customer, plugin) in `chunk`.
async fn previous_scores(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &TenantId,
    chunk: &[&NewScore],
) -> StoreResult<HashMap<(String, String), (f64, i64)>> {
    let sql = format!(
        "SELECT customer_id, plugin_id, value, computed_at FROM customer_scores WHERE tenant_id = $1 \
         AND customer_id IN ({})",
        list_placeholders(2, chunk.len())
    );
    let mut q = sqlx::query(&sql).bind(tenant.as_str());
    for s in chunk {
        q = q.bind(s.customer_id.as_str());
    }
    let mut found = HashMap::new();
    for row in q.fetch_all(&mut **tx).await? {
        found.insert(
            (row.try_get(0)?, row.try_get(1)?),
            (row.try_get::<f64, _>(2)?, row.try_get::<i64, _>(3)?),
        );
    }
    Ok(found)
}
