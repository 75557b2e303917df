//! Store: what scoring plugins computed, and the bulk reads that feed them.
//! This file holds the types and row helpers the parts share; the parts are
//! `scores/stored.rs` (stored scores and history), `scores/queue.rs` (the
//! rescore queue and its leases), `scores/jobs.rs` (scoring jobs) and
//! `scores/reads.rs` (bulk reads for scoring).
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

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::db::Backend;

use super::{StoreError, StoreResult, from_millis, is_transient, json_column};

mod jobs;
mod queue;
mod reads;
mod stored;

pub use jobs::{JobStatus, PluginOutcome, PluginOutcomeError, PluginOutcomeStatus, ScoringJob};
pub use queue::{QueuedRescore, RescoreClaim, RescoreWorkerState, enqueue_rescore_many_tx, enqueue_rescore_tx};
pub use reads::{
    MAX_HISTORY_CHUNK, PopulationMember, PopulationPurchase, ScoringCustomer, ScoringHistory, ScoringInteraction,
    ScoringItem,
};
pub use stored::delete_customer_scores_tx;

/// Rows per multi-row INSERT (10-11 bind values each): few statements (a
/// round trip each), far below either backend's parameter limit (SQLite
/// 32766, PostgreSQL 65535). See [`row_placeholders`] for SQLite.
const INSERT_ROWS_PER_STATEMENT: usize = 100;
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
    /// The plugin version that computed it (`None`: not known).
    pub plugin_version: Option<String>,
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
    /// The plugin version that computed it; `null` for scores stored
    /// before versions were recorded.
    pub plugin_version: Option<String>,
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

const SCORE_COLUMNS: &str =
    "plugin_id, value, label, segment, explanation, components, computed_at, job_id, as_of, plugin_version";

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
        plugin_version: row.try_get("plugin_version")?,
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

fn is_foreign_key_violation(err: &StoreError) -> bool {
    matches!(err, StoreError::Database(sqlx::Error::Database(db)) if db.is_foreign_key_violation())
}

fn retryable(err: &StoreError) -> bool {
    matches!(err, StoreError::Database(e) if is_transient(e))
}
