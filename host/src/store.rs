//! The store: every read and write of tenant data, always scoped by a
//! [`TenantId`]. Only `host/src/store*` writes SQL.
//!
//! Each area lives in its own file (`store/customers.rs`, `store/loyalty.rs`,
//! ...) as an `impl Store` block; a large area is split into parts under
//! `store/<area>/` (ARCHITECTURE.md's code map says which part holds what).
//! `sql` and `money` are the helpers every area shares. Functions that must
//! compose inside one transaction (ingest + reward ledger operations, say)
//! also come in a `*_tx(&mut AnyConnection, ...)` form.

pub mod artifacts;
pub mod audience;
pub mod audit;
mod bulk;
pub mod campaigns;
pub mod complaints;
pub mod crm_metrics;
pub mod customers;
pub mod gdpr;
pub mod interactions;
pub mod loyalty;
pub mod messages;
pub mod money;
pub mod playbook;
pub mod plugin_fits;
pub mod plugin_runs;
pub mod plugin_versions;
pub mod plugins;
pub mod products;
pub mod referrals;
pub mod satisfaction;
pub mod scores;
pub mod simulations;
mod sql;
pub mod suppressions;
pub mod tenants;
pub mod triggers;

use serde::Serialize;

use crate::db::Db;

/// The tenant a request acts for: holding one means "this caller may see
/// this tenant's data". The field is private, so a `TenantId` is made only
/// where a tenant may legitimately come from, each source a constructor of
/// its own (ARCHITECTURE.md lists them): an authenticated API key and a
/// stored row (both inside the store), a tenant looked up by id for the two
/// request paths that name one ([`Store::existing_tenant`]), the operator's
/// command line, a plugin author's local fixture and the runtime's
/// load-time check. Never from a request body or guest input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// The tenant of an authenticated API key (`Store::authenticate`) or of
    /// a row the store read: the store's own source.
    fn from_row(id: String) -> TenantId {
        TenantId(id)
    }

    /// A tenant named on the command line of `rapport` (`import`, `score`,
    /// `key create`): whoever runs it holds the database itself.
    pub fn from_operator(id: String) -> TenantId {
        TenantId(id)
    }

    /// The tenant of a plugin author's local fixture (`rapport plugin run`):
    /// in-memory data only, no store behind it.
    pub fn from_local_fixture(id: String) -> TenantId {
        TenantId(id)
    }

    /// The runtime's load-time type check, which instantiates a plugin with
    /// no tenant's data behind any capability.
    pub fn load_check() -> TenantId {
        TenantId("(load check)".to_owned())
    }

    /// Tests and benchmarks name their tenants directly; the feature is on
    /// only for the crate's own dev-dependency on itself.
    #[cfg(any(test, feature = "test-support"))]
    pub fn for_tests(id: impl Into<String>) -> TenantId {
        TenantId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Errors at the store boundary. The API maps each to a status code; the
/// `Database` variant is the only one that becomes a 500, and its text is
/// logged, never shown to the client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{entity} not found")]
    NotFound { entity: &'static str },
    /// A uniqueness or state conflict the caller can act on (409).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Input that is well-formed JSON but violates a rule (422).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// Like `Invalid`, with a code of its own for a case callers handle
    /// specifically (e.g. `no_address` for a message without a destination).
    #[error("{field}: {message}")]
    Unprocessable {
        code: &'static str,
        field: String,
        message: String,
    },
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    /// A database error, except text PostgreSQL cannot store (NUL,
    /// SQLSTATE 22021), which is the input's fault: the API refuses NUL at
    /// the edge, this is the backstop for text that came another way (a
    /// plugin's output, say), so that it is a 422 and not a 500.
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("22021") => {
                StoreError::invalid("text", "must not contain the NUL character (U+0000)")
            }
            _ => StoreError::Database(err),
        }
    }
}

impl StoreError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        StoreError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        StoreError::Conflict {
            code,
            message: message.into(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// True when a database error is a unique-constraint violation (both backends).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db.is_unique_violation(),
        _ => false,
    }
}

/// True for errors that mean "try the transaction again": a deadlock
/// (PostgreSQL 40P01), a serialization failure (40001), or SQLite still
/// busy after its timeout.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("40P01" | "40001" | "5" | "517" | "6"))
        }
        _ => false,
    }
}

/// The CRM store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

impl Store {
    pub fn new(db: Db) -> Self {
        Store { db }
    }
    pub fn db(&self) -> &Db {
        &self.db
    }
}

/// A fresh time-ordered id (UUIDv7), so ids sort roughly by creation and make
/// stable pagination cursors.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Current time in epoch milliseconds, the unit of every stored time.
pub fn now_ms() -> i64 {
    millis(time::OffsetDateTime::now_utc())
}

pub fn millis(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn from_millis(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Parses a JSON column. A failure means the database holds something the
/// application never wrote, hence `Corrupt` rather than a client error.
pub fn json_column(text: &str) -> StoreResult<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("JSON column: {e}")))
}

/// Opaque pagination cursors: base64url of a small JSON array of the sort
/// key of the last row returned.
pub mod cursor {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::StoreError;

    pub fn encode<T: serde::Serialize>(key: &T) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).unwrap_or_default())
    }

    pub fn decode<T: serde::de::DeserializeOwned>(cursor: &str) -> Result<T, StoreError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| StoreError::invalid("cursor", "not a cursor returned by this API"))?;
        serde_json::from_slice(&bytes).map_err(|_| StoreError::invalid("cursor", "not a cursor returned by this API"))
    }
}

/// A page of results with the cursor for the next one (absent on the last page).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
