//! Store: loyalty — accounts, the points ledger, tiers, the rewards catalogue
//! and redemption. This file holds the types, row mapping and validation the
//! parts share; the parts are `loyalty/ledger.rs` (the ledger and accounts:
//! locking, lots, expiry, the `*_tx` operations the API and plugins share),
//! `loyalty/catalogue.rs` (tiers and rewards CRUD) and
//! `loyalty/reward_plugins.rs` (what reward plugins read and write inside an
//! ingest's transaction).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::audience::Audience;
use super::{Store, StoreError, StoreResult, TenantId, from_millis, json_column};
use crate::db::Backend;

mod catalogue;
mod ledger;
mod reward_plugins;

use ledger::due_expiry_tx;
pub(in crate::store) use ledger::require_customer;
pub use ledger::{apply_ledger_ops_tx, expire_account_tx};

pub use reward_plugins::{
    AppliedReward, LATEST_PURCHASE_CURRENCY_SQL, ROLLING_SPEND_WINDOW_MS, RewardAccount, RewardSnapshot,
    RewardTierChange, apply_reward_ops_tx, lock_reward_account_tx, predict_reward_ops, reward_account_tx,
    reward_entries_sql, reward_entries_tx, reward_key, reward_tiers_tx, rolling_spend_sql, rolling_spend_tx,
};

/// The window reported as "expiring soon" on an account.
pub const EXPIRING_WINDOW_MS: i64 = 30 * 24 * 60 * 60 * 1000;
/// Bound on a single entry's points.
pub const MAX_POINTS: i64 = 1_000_000_000_000;
/// Bound on an account's balance: a credit that would take it higher is
/// refused (422), so no sum of entries can overflow. `lifetime_earned`,
/// which debits never lower, is capped at `i64::MAX` instead.
pub const MAX_BALANCE: i64 = 1_000_000_000_000_000;
pub const MAX_REASON_CHARS: usize = 500;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 500;

/// Internal conflict code: a concurrent transaction inserted the same
/// idempotency key first (PostgreSQL only; SQLite serialises writers). The
/// `Store` wrappers retry the whole transaction, which then replays or reports
/// `idempotency_conflict`.
const RETRY: &str = "concurrent_write_retry";
const MAX_ATTEMPTS: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    Earn,
    Redeem,
    Expire,
    Adjust,
}

impl LedgerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::Earn => "earn",
            LedgerKind::Redeem => "redeem",
            LedgerKind::Expire => "expire",
            LedgerKind::Adjust => "adjust",
        }
    }

    fn parse(s: &str) -> StoreResult<LedgerKind> {
        Ok(match s {
            "earn" => LedgerKind::Earn,
            "redeem" => LedgerKind::Redeem,
            "expire" => LedgerKind::Expire,
            "adjust" => LedgerKind::Adjust,
            other => {
                return Err(StoreError::Corrupt(format!("unknown ledger kind {other:?}")));
            }
        })
    }
}

/// One immutable ledger line.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerEntry {
    pub id: String,
    pub customer_id: String,
    /// Position in the account's ledger, 1, 2, 3, ... without gaps.
    pub seq: i64,
    pub kind: LedgerKind,
    /// Positive for credits, negative for debits.
    pub points: i64,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub idempotency_key: Option<String>,
    pub interaction_id: Option<String>,
    pub reward_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// How many points of credit lot `credit_id` debit `debit_id` consumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Allocation {
    pub debit_id: String,
    pub credit_id: String,
    pub points: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Tier {
    pub id: String,
    pub name: String,
    /// Higher is better; rewards may require a minimum rank.
    pub rank: i64,
    pub min_points: i64,
    #[schema(value_type = Object)]
    pub perks: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTier {
    pub name: String,
    pub rank: i64,
    #[serde(default)]
    pub min_points: i64,
    /// A JSON object describing the tier's perks (free form).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub perks: Option<Value>,
}

/// Partial update of a tier: absent fields are left unchanged.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierPatch {
    pub name: Option<String>,
    pub rank: Option<i64>,
    pub min_points: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub perks: Option<Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Reward {
    pub id: String,
    pub name: String,
    pub description: String,
    pub cost_points: i64,
    /// Minimum tier rank needed to redeem; `null` means any customer.
    pub min_tier_rank: Option<i64>,
    /// Units left; `null` means unlimited.
    pub stock: Option<i64>,
    pub active: bool,
    /// Only customers in these segments of a scoring plugin may redeem it
    /// (e.g. a relationship level); absent: every customer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<Audience>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReward {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub cost_points: i64,
    #[serde(default)]
    pub min_tier_rank: Option<i64>,
    #[serde(default)]
    pub stock: Option<i64>,
    #[serde(default = "default_true")]
    pub active: bool,
    /// Only customers in these segments of a scoring plugin may redeem it
    /// (default: every customer).
    #[serde(default)]
    pub audience: Option<Audience>,
}

/// Distinguishes "field absent" (outer `None`) from "field set to null"
/// (`Some(None)`) in partial updates.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Partial update of a reward: absent fields are left unchanged; `null`
/// clears `min_tier_rank` (anyone) or `stock` (unlimited).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub cost_points: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub min_tier_rank: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub stock: Option<Option<i64>>,
    pub active: Option<bool>,
    /// `null` opens the reward to every customer again.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Audience>)]
    pub audience: Option<Option<Audience>>,
}

/// A customer's loyalty account as seen now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Account {
    pub customer_id: String,
    /// Spendable points now: expired lots are excluded even before a sweep
    /// has recorded their `expire` entries.
    pub balance: i64,
    pub lifetime_earned: i64,
    pub tier: Option<Tier>,
    /// Points of lots that expire within the next 30 days.
    pub expiring_in_30_days: i64,
    /// Sequence number of the newest ledger entry (0 when none).
    pub last_seq: i64,
    /// `null` until the first ledger entry creates the account.
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TierChange {
    pub id: String,
    pub customer_id: String,
    pub from_tier_id: Option<String>,
    pub to_tier_id: Option<String>,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The outcome of a ledger write: the entry, the account balance after it, and
/// whether it was a replay of an earlier request with the same idempotency key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerWrite {
    pub entry: LedgerEntry,
    pub balance: i64,
    #[serde(skip)]
    pub replayed: bool,
}

/// An operation on a customer's loyalty account, as requested over HTTP or
/// returned by a reward-scheme plugin. Times are epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerOp {
    Earn {
        points: i64,
        reason: String,
        expires_at: Option<i64>,
        idempotency_key: Option<String>,
    },
    /// Manual correction of either sign; a positive adjust is a non-expiring lot.
    Adjust {
        points: i64,
        reason: String,
        idempotency_key: Option<String>,
    },
    Redeem {
        reward_id: String,
        idempotency_key: Option<String>,
    },
    SetTier {
        tier_id: Option<String>,
        reason: String,
    },
}

// ---------------------------------------------------------------------------
// Row mapping

pub(in crate::store) const LEDGER_COLUMNS: &str = "id, customer_id, seq, kind, points, reason, expires_at, \
     idempotency_key, interaction_id, reward_id, created_at";

pub(in crate::store) fn entry_from_row(row: &AnyRow) -> StoreResult<LedgerEntry> {
    let kind: String = row.try_get("kind")?;
    let expires: Option<i64> = row.try_get("expires_at")?;
    Ok(LedgerEntry {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        seq: row.try_get("seq")?,
        kind: LedgerKind::parse(&kind)?,
        points: row.try_get("points")?,
        reason: row.try_get("reason")?,
        expires_at: expires.map(from_millis),
        idempotency_key: row.try_get("idempotency_key")?,
        interaction_id: row.try_get("interaction_id")?,
        reward_id: row.try_get("reward_id")?,
        created_at: from_millis(row.try_get("created_at")?),
    })
}

const TIER_COLUMNS: &str = "id, name, rank, min_points, perks, created_at";

fn tier_from_row(row: &AnyRow) -> StoreResult<Tier> {
    let perks: String = row.try_get("perks")?;
    Ok(Tier {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        rank: row.try_get("rank")?,
        min_points: row.try_get("min_points")?,
        perks: json_column(&perks)?,
        created_at: from_millis(row.try_get("created_at")?),
    })
}

/// `active` is read as a BIGINT 0/1: sqlx's Any driver refuses a row holding
/// a SQLite column *declared* BOOLEAN, while an expression has no declared type.
const REWARD_COLUMNS: &str = "id, name, description, cost_points, min_tier_rank, stock, \
     CAST(CASE WHEN active THEN 1 ELSE 0 END AS BIGINT) AS active, created_at, updated_at, audience";

fn get_bool(row: &AnyRow, column: &str) -> StoreResult<bool> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}

fn reward_from_row(row: &AnyRow) -> StoreResult<Reward> {
    Ok(Reward {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        cost_points: row.try_get("cost_points")?,
        min_tier_rank: row.try_get("min_tier_rank")?,
        stock: row.try_get("stock")?,
        active: get_bool(row, "active")?,
        audience: Audience::from_column(row.try_get("audience")?)?,
        created_at: from_millis(row.try_get("created_at")?),
        updated_at: from_millis(row.try_get("updated_at")?),
    })
}

pub(in crate::store) const TIER_CHANGE_COLUMNS: &str = "id, customer_id, from_tier_id, to_tier_id, reason, created_at";

pub(in crate::store) fn tier_change_from_row(row: &AnyRow) -> StoreResult<TierChange> {
    Ok(TierChange {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        from_tier_id: row.try_get("from_tier_id")?,
        to_tier_id: row.try_get("to_tier_id")?,
        reason: row.try_get("reason")?,
        created_at: from_millis(row.try_get("created_at")?),
    })
}

// ---------------------------------------------------------------------------
// Validation

fn check_reason(reason: &str) -> StoreResult<String> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(StoreError::invalid(
            "reason",
            format!("must be 1 to {MAX_REASON_CHARS} characters"),
        ));
    }
    Ok(reason.to_string())
}

fn check_key(key: &Option<String>) -> StoreResult<()> {
    if let Some(k) = key
        && (k.is_empty() || k.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS)
    {
        return Err(StoreError::invalid(
            "idempotency_key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
        ));
    }
    Ok(())
}

fn check_points(points: i64, positive: bool) -> StoreResult<()> {
    if positive && points <= 0 {
        return Err(StoreError::invalid("points", "must be greater than 0"));
    }
    if points == 0 {
        return Err(StoreError::invalid("points", "must not be 0"));
    }
    if points.abs() > MAX_POINTS {
        return Err(StoreError::invalid(
            "points",
            format!("must be at most {MAX_POINTS} in absolute value"),
        ));
    }
    Ok(())
}

fn check_name(field: &str, name: &str) -> StoreResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(StoreError::invalid(
            field,
            format!("must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_string())
}

fn check_non_negative(field: &str, value: i64) -> StoreResult<()> {
    if value < 0 {
        return Err(StoreError::invalid(field, "must not be negative"));
    }
    Ok(())
}

fn check_perks(perks: Option<Value>) -> StoreResult<String> {
    match perks {
        None => Ok("{}".to_string()),
        Some(v @ Value::Object(_)) => Ok(v.to_string()),
        Some(_) => Err(StoreError::invalid("perks", "must be a JSON object")),
    }
}

fn check_reward(
    name: &str,
    description: &str,
    cost: i64,
    min_rank: Option<i64>,
    stock: Option<i64>,
) -> StoreResult<String> {
    let name = check_name("name", name)?;
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(StoreError::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if cost <= 0 || cost > MAX_POINTS {
        return Err(StoreError::invalid("cost_points", format!("must be 1 to {MAX_POINTS}")));
    }
    if let Some(r) = min_rank {
        check_non_negative("min_tier_rank", r)?;
    }
    if let Some(s) = stock {
        check_non_negative("stock", s)?;
    }
    Ok(name)
}

async fn get_tier_tx(conn: &mut AnyConnection, tenant: &TenantId, id: &str) -> StoreResult<Tier> {
    let row = sqlx::query(&format!(
        "SELECT {TIER_COLUMNS} FROM loyalty_tiers WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.as_str())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound { entity: "tier" })?;
    tier_from_row(&row)
}

async fn get_reward_tx(conn: &mut AnyConnection, tenant: &TenantId, id: &str) -> StoreResult<Reward> {
    let row = sqlx::query(&format!(
        "SELECT {REWARD_COLUMNS} FROM loyalty_rewards WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.as_str())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound { entity: "reward" })?;
    reward_from_row(&row)
}

/// Starts a read transaction with one snapshot for all its statements
/// (PostgreSQL defaults to a fresh snapshot per statement).
pub(in crate::store) async fn begin_read(store: &Store) -> StoreResult<sqlx::Transaction<'static, sqlx::Any>> {
    let mut tx = store.db().begin().await?;
    if store.db().backend() == Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx)
}
