//! The points ledger and accounts: earning, adjusting, redeeming, setting a
//! tier, expiry, and the reads of an account, its ledger and tier changes.
//! Separate from the catalogue (`catalogue.rs`) because it is the part with
//! locking and invariants; a ledger bug is here.
//!
//! The ledger is a bank ledger: append-only, and `loyalty_accounts.balance` is
//! a cache of `SUM(points)` updated in the same statement that hands out the
//! entry's `seq` (`last_seq + 1`), inside the same write transaction as the
//! entry itself. Credits (earn, positive adjust) are *lots*; every debit
//! (redeem, expire, negative adjust) is allocated to lots oldest first and the
//! allocation is recorded in `loyalty_allocations`, so the remaining points of
//! any lot, and therefore what expires when, are derivable at any time.
//!
//! Concurrency. Every write on an account first *locks* it: the account row is
//! created if missing and touched with an `UPDATE`. On SQLite the write
//! transaction (`BEGIN IMMEDIATE`) already serialises writers; on PostgreSQL
//! the `UPDATE` takes the row lock, so everything that follows (expiry sweep,
//! lot allocation) sees a stable account. Debits are on top of that a
//! conditional `UPDATE ... WHERE balance >= $n`, backed by `CHECK (balance >=
//! 0)`, so a balance can never be overdrawn even if the lock were bypassed.
//!
//! Expiry. Lots whose `expires_at` has passed are swept into `expire` entries
//! lazily at the start of every write transaction on the account (before any
//! availability is computed) and by [`Store::expire_due_points`] (a
//! tenant-wide sweep). Reads never write: [`Store::get_account`] *computes* the
//! balance net of expired-but-unswept lots, so it is always what a write would
//! find.
//!
//! The HTTP handlers and the plugin path ([`apply_ledger_ops_tx`]) run the same
//! `*_tx` functions; there is one implementation of each operation.

use sqlx::{AnyConnection, Row};

use super::{
    Account, EXPIRING_WINDOW_MS, LEDGER_COLUMNS, LedgerEntry, LedgerKind, LedgerOp, LedgerWrite, MAX_ATTEMPTS,
    MAX_BALANCE, MAX_PAGE, RETRY, TIER_CHANGE_COLUMNS, TierChange, begin_read, check_key, check_points, check_reason,
    entry_from_row, get_reward_tx, get_tier_tx, tier_change_from_row,
};
use crate::store::{
    Page, Store, StoreError, StoreResult, TenantId, cursor, from_millis, is_unique_violation, new_id, now_ms,
};

// ---------------------------------------------------------------------------
// Transaction building blocks (all expect a write transaction)

/// 404 unless the customer exists in this tenant.
pub(in crate::store) async fn require_customer(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
) -> StoreResult<()> {
    sqlx::query("SELECT id FROM customers WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_str())
        .bind(customer_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound { entity: "customer" })?;
    Ok(())
}

/// Creates the account if needed and takes its row lock (see module docs).
async fn lock_account(conn: &mut AnyConnection, tenant: &TenantId, customer_id: &str, now: i64) -> StoreResult<()> {
    require_customer(conn, tenant, customer_id).await?;
    sqlx::query(
        "INSERT INTO loyalty_accounts (tenant_id, customer_id, balance, lifetime_earned, last_seq, created_at, updated_at) \
         VALUES ($1, $2, 0, 0, 0, $3, $3) ON CONFLICT (tenant_id, customer_id) DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(customer_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE loyalty_accounts SET updated_at = $3 WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant.as_str())
        .bind(customer_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A credit lot with points not yet consumed.
struct Lot {
    id: String,
    expires_at: Option<i64>,
    remaining: i64,
}

/// The account's credit lots with points remaining, oldest first.
async fn open_lots(conn: &mut AnyConnection, tenant: &TenantId, customer_id: &str) -> StoreResult<Vec<Lot>> {
    let rows = sqlx::query(
        "SELECT l.id, l.expires_at, CAST(l.points - COALESCE((SELECT SUM(a.points) FROM loyalty_allocations a \
             WHERE a.tenant_id = l.tenant_id AND a.credit_id = l.id), 0) AS BIGINT) AS remaining \
         FROM loyalty_ledger l WHERE l.tenant_id = $1 AND l.customer_id = $2 AND l.points > 0 ORDER BY l.seq",
    )
    .bind(tenant.as_str())
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut lots = Vec::new();
    for row in rows {
        let remaining: i64 = row.try_get("remaining")?;
        if remaining < 0 {
            return Err(StoreError::Corrupt(format!("ledger lot over-allocated ({remaining})")));
        }
        if remaining > 0 {
            lots.push(Lot {
                id: row.try_get("id")?,
                expires_at: row.try_get("expires_at")?,
                remaining,
            });
        }
    }
    Ok(lots)
}

struct NewEntry<'a> {
    customer_id: &'a str,
    kind: LedgerKind,
    points: i64,
    reason: &'a str,
    expires_at: Option<i64>,
    idempotency_key: Option<&'a str>,
    interaction_id: Option<&'a str>,
    reward_id: Option<&'a str>,
}

/// Moves the balance and hands out the next `seq` in one statement. A debit
/// is conditional on the balance covering it, a credit on the balance
/// staying within [`MAX_BALANCE`]; `None` means it did not. Written so that
/// no intermediate value can overflow on either backend.
async fn bump_account(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
    points: i64,
    earned: i64,
    now: i64,
) -> StoreResult<Option<(i64, i64)>> {
    let row = sqlx::query(
        "UPDATE loyalty_accounts SET balance = balance + $3, \
             lifetime_earned = CASE WHEN lifetime_earned > $7 - $4 THEN $7 ELSE lifetime_earned + $4 END, \
             last_seq = last_seq + 1, updated_at = $5 \
         WHERE tenant_id = $1 AND customer_id = $2 AND balance + $3 >= 0 AND balance <= $6 - $3 \
         RETURNING last_seq, balance",
    )
    .bind(tenant.as_str())
    .bind(customer_id)
    .bind(points)
    .bind(earned)
    .bind(now)
    .bind(MAX_BALANCE)
    .bind(i64::MAX)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => Ok(Some((row.try_get("last_seq")?, row.try_get("balance")?))),
        None => Ok(None),
    }
}

async fn insert_entry(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    e: &NewEntry<'_>,
    seq: i64,
    now: i64,
) -> StoreResult<LedgerEntry> {
    let id = new_id();
    let inserted = sqlx::query(
        "INSERT INTO loyalty_ledger (tenant_id, id, customer_id, seq, kind, points, reason, expires_at, \
             idempotency_key, interaction_id, reward_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(tenant.as_str())
    .bind(&id)
    .bind(e.customer_id)
    .bind(seq)
    .bind(e.kind.as_str())
    .bind(e.points)
    .bind(e.reason)
    .bind(e.expires_at)
    .bind(e.idempotency_key)
    .bind(e.interaction_id)
    .bind(e.reward_id)
    .bind(now)
    .execute(&mut *conn)
    .await;
    match inserted {
        Err(err) if is_unique_violation(&err) => {
            return Err(StoreError::conflict(
                RETRY,
                "a concurrent request used the same idempotency key; retry",
            ));
        }
        Err(err) if matches!(&err, sqlx::Error::Database(d) if d.is_foreign_key_violation()) => {
            return Err(StoreError::NotFound { entity: "interaction" });
        }
        other => other?,
    };
    Ok(LedgerEntry {
        id,
        customer_id: e.customer_id.to_string(),
        seq,
        kind: e.kind,
        points: e.points,
        reason: e.reason.to_string(),
        expires_at: e.expires_at.map(from_millis),
        idempotency_key: e.idempotency_key.map(str::to_string),
        interaction_id: e.interaction_id.map(str::to_string),
        reward_id: e.reward_id.map(str::to_string),
        created_at: from_millis(now),
    })
}

async fn insert_allocation(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    debit: &str,
    credit: &str,
    points: i64,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO loyalty_allocations (tenant_id, debit_id, credit_id, points) VALUES ($1, $2, $3, $4)")
        .bind(tenant.as_str())
        .bind(debit)
        .bind(credit)
        .bind(points)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records `expire` entries for every lot of the (locked) account whose
/// expiry has passed, each allocated to its own lot. Returns how many.
async fn sweep_account_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
    now: i64,
) -> StoreResult<u64> {
    let lots = open_lots(conn, tenant, customer_id).await?;
    let mut swept = 0;
    for lot in lots.into_iter().filter(|l| l.expires_at.is_some_and(|at| at <= now)) {
        let (seq, _) = bump_account(conn, tenant, customer_id, -lot.remaining, 0, now)
            .await?
            .ok_or_else(|| StoreError::Corrupt("account balance below its open lots".into()))?;
        let entry = NewEntry {
            customer_id,
            kind: LedgerKind::Expire,
            points: -lot.remaining,
            reason: "points expired",
            expires_at: None,
            idempotency_key: None,
            interaction_id: None,
            reward_id: None,
        };
        let expired = insert_entry(conn, tenant, &entry, seq, now).await?;
        insert_allocation(conn, tenant, &expired.id, &lot.id, lot.remaining).await?;
        swept += 1;
    }
    Ok(swept)
}

/// Allocates a debit of `amount` (> 0) to the open lots, oldest first.
async fn allocate_debit(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
    debit_id: &str,
    amount: i64,
) -> StoreResult<()> {
    let mut left = amount;
    for lot in open_lots(conn, tenant, customer_id).await? {
        if left == 0 {
            break;
        }
        let take = left.min(lot.remaining);
        insert_allocation(conn, tenant, debit_id, &lot.id, take).await?;
        left -= take;
    }
    if left > 0 {
        return Err(StoreError::Corrupt(format!(
            "balance covered a debit its lots could not ({left} short)"
        )));
    }
    Ok(())
}

async fn current_balance(conn: &mut AnyConnection, tenant: &TenantId, customer_id: &str) -> StoreResult<i64> {
    let row = sqlx::query("SELECT balance FROM loyalty_accounts WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant.as_str())
        .bind(customer_id)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => Ok(row.try_get("balance")?),
        None => Ok(0),
    }
}

fn insufficient(balance: i64, required: i64) -> StoreError {
    StoreError::conflict(
        "insufficient_points",
        format!("insufficient points: balance {balance}, required {required}"),
    )
}

/// The request an idempotency key was first used for, to tell a retry from a
/// reuse of the key for something else.
struct Fingerprint<'a> {
    customer_id: &'a str,
    kind: LedgerKind,
    points: Option<i64>,
    reason: Option<&'a str>,
    expires_at: Option<Option<i64>>,
    reward_id: Option<&'a str>,
}

/// `Some(write)` when `key` was used before by the same request (a replay).
async fn replay(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    key: Option<&str>,
    fp: Fingerprint<'_>,
) -> StoreResult<Option<LedgerWrite>> {
    let Some(key) = key else { return Ok(None) };
    let row = sqlx::query(&format!(
        "SELECT {LEDGER_COLUMNS} FROM loyalty_ledger WHERE tenant_id = $1 AND idempotency_key = $2"
    ))
    .bind(tenant.as_str())
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let entry = entry_from_row(&row)?;
    let same = entry.customer_id == fp.customer_id
        && entry.kind == fp.kind
        && fp.points.is_none_or(|p| p == entry.points)
        && fp.reason.is_none_or(|r| r == entry.reason)
        && fp
            .expires_at
            .is_none_or(|at| at == entry.expires_at.map(crate::store::millis))
        && fp.reward_id.is_none_or(|r| Some(r) == entry.reward_id.as_deref());
    if !same {
        return Err(StoreError::conflict(
            "idempotency_conflict",
            "this idempotency key was already used for a different request",
        ));
    }
    let balance = current_balance(conn, tenant, &entry.customer_id).await?;
    Ok(Some(LedgerWrite {
        entry,
        balance,
        replayed: true,
    }))
}

/// Earn or positive/negative adjust.
#[allow(clippy::too_many_arguments)]
async fn points_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
    interaction_id: Option<&str>,
    kind: LedgerKind,
    points: i64,
    reason: &str,
    expires_at: Option<i64>,
    key: Option<&str>,
    now: i64,
) -> StoreResult<LedgerWrite> {
    lock_account(conn, tenant, customer_id, now).await?;
    let fp = Fingerprint {
        customer_id,
        kind,
        points: Some(points),
        reason: Some(reason),
        expires_at: Some(expires_at),
        reward_id: None,
    };
    if let Some(done) = replay(conn, tenant, key, fp).await? {
        return Ok(done);
    }
    sweep_account_tx(conn, tenant, customer_id, now).await?;
    let earned = if kind == LedgerKind::Earn { points } else { 0 };
    let Some((seq, balance)) = bump_account(conn, tenant, customer_id, points, earned, now).await? else {
        let balance = current_balance(conn, tenant, customer_id).await?;
        if points > 0 {
            return Err(StoreError::invalid(
                "points",
                format!("would take the balance ({balance}) above the ceiling of {MAX_BALANCE} points"),
            ));
        }
        return Err(insufficient(balance, -points));
    };
    let new = NewEntry {
        customer_id,
        kind,
        points,
        reason,
        expires_at,
        idempotency_key: key,
        interaction_id,
        reward_id: None,
    };
    let entry = insert_entry(conn, tenant, &new, seq, now).await?;
    if points < 0 {
        allocate_debit(conn, tenant, customer_id, &entry.id, -points).await?;
    } else {
        // A reward that just became affordable may have a message to go with it.
        crate::store::triggers::on_balance_rose_tx(conn, tenant, customer_id, &entry.id, balance - points, balance)
            .await?;
    }
    Ok(LedgerWrite {
        entry,
        balance,
        replayed: false,
    })
}

async fn redeem_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
    interaction_id: Option<&str>,
    reward_id: &str,
    key: Option<&str>,
    now: i64,
) -> StoreResult<LedgerWrite> {
    lock_account(conn, tenant, customer_id, now).await?;
    let fp = Fingerprint {
        customer_id,
        kind: LedgerKind::Redeem,
        points: None,
        reason: None,
        expires_at: None,
        reward_id: Some(reward_id),
    };
    if let Some(done) = replay(conn, tenant, key, fp).await? {
        return Ok(done);
    }
    let reward = get_reward_tx(conn, tenant, reward_id).await?;
    if !reward.active {
        return Err(StoreError::conflict("reward_inactive", "this reward is not active"));
    }
    if let Some(min_rank) = reward.min_tier_rank {
        let rank: Option<i64> = sqlx::query(
            "SELECT t.rank FROM loyalty_accounts a JOIN loyalty_tiers t ON t.tenant_id = a.tenant_id AND t.id = a.tier_id \
             WHERE a.tenant_id = $1 AND a.customer_id = $2",
        )
        .bind(tenant.as_str())
        .bind(customer_id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| row.try_get("rank"))
        .transpose()?;
        if rank.is_none_or(|r| r < min_rank) {
            return Err(StoreError::conflict(
                "tier_too_low",
                format!("this reward requires a tier of rank {min_rank} or higher"),
            ));
        }
    }
    if let Some(audience) = &reward.audience
        && !audience.includes_tx(conn, tenant, customer_id).await?
    {
        return Err(StoreError::conflict(
            "not_in_audience",
            format!(
                "this reward is for customers in the {} segments {:?}",
                audience.plugin, audience.segments
            ),
        ));
    }
    sweep_account_tx(conn, tenant, customer_id, now).await?;
    let cost = reward.cost_points;
    let Some((seq, balance)) = bump_account(conn, tenant, customer_id, -cost, 0, now).await? else {
        let balance = current_balance(conn, tenant, customer_id).await?;
        return Err(insufficient(balance, cost));
    };
    if reward.stock.is_some() {
        let taken = sqlx::query(
            "UPDATE loyalty_rewards SET stock = stock - 1, updated_at = $3 \
             WHERE tenant_id = $1 AND id = $2 AND stock IS NOT NULL AND stock > 0",
        )
        .bind(tenant.as_str())
        .bind(reward_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        if taken.rows_affected() == 0 {
            return Err(StoreError::conflict("out_of_stock", "this reward is out of stock"));
        }
    }
    let reason = format!("redeemed: {}", reward.name);
    let new = NewEntry {
        customer_id,
        kind: LedgerKind::Redeem,
        points: -cost,
        reason: &reason,
        expires_at: None,
        idempotency_key: key,
        interaction_id,
        reward_id: Some(reward_id),
    };
    let entry = insert_entry(conn, tenant, &new, seq, now).await?;
    allocate_debit(conn, tenant, customer_id, &entry.id, cost).await?;
    Ok(LedgerWrite {
        entry,
        balance,
        replayed: false,
    })
}

/// Sets (or clears) the customer's tier and records the change. `None` when
/// the tier was already the requested one (nothing recorded).
async fn set_tier_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
    tier_id: Option<&str>,
    reason: &str,
    now: i64,
) -> StoreResult<Option<TierChange>> {
    lock_account(conn, tenant, customer_id, now).await?;
    if let Some(id) = tier_id {
        get_tier_tx(conn, tenant, id).await?;
    }
    let row = sqlx::query("SELECT tier_id FROM loyalty_accounts WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant.as_str())
        .bind(customer_id)
        .fetch_one(&mut *conn)
        .await?;
    let from: Option<String> = row.try_get("tier_id")?;
    if from.as_deref() == tier_id {
        return Ok(None);
    }
    sqlx::query("UPDATE loyalty_accounts SET tier_id = $3, updated_at = $4 WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant.as_str())
        .bind(customer_id)
        .bind(tier_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let change = TierChange {
        id: new_id(),
        customer_id: customer_id.to_string(),
        from_tier_id: from,
        to_tier_id: tier_id.map(str::to_string),
        reason: reason.to_string(),
        created_at: from_millis(now),
    };
    sqlx::query(
        "INSERT INTO loyalty_tier_changes (tenant_id, id, customer_id, from_tier_id, to_tier_id, reason, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant.as_str())
    .bind(&change.id)
    .bind(customer_id)
    .bind(&change.from_tier_id)
    .bind(&change.to_tier_id)
    .bind(&change.reason)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    // Messages the tenant wants on a tier change go out with it (outbox).
    crate::store::triggers::on_tier_changed_tx(
        conn,
        tenant,
        customer_id,
        &change.id,
        change.from_tier_id.as_deref(),
        change.to_tier_id.as_deref(),
    )
    .await?;
    Ok(Some(change))
}

/// What one applied operation produced.
enum Applied {
    Ledger(LedgerWrite),
    Tier(Option<TierChange>),
}

/// Validates and applies one operation inside the caller's write transaction.
async fn apply_op_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
    interaction_id: Option<&str>,
    op: &LedgerOp,
    now: i64,
) -> StoreResult<Applied> {
    Ok(match op {
        LedgerOp::Earn {
            points,
            reason,
            expires_at,
            idempotency_key,
        } => {
            check_points(*points, true)?;
            let reason = check_reason(reason)?;
            check_key(idempotency_key)?;
            if let Some(at) = expires_at
                && *at <= now
            {
                return Err(StoreError::invalid("expires_at", "must be in the future"));
            }
            let key = idempotency_key.as_deref();
            Applied::Ledger(
                points_tx(
                    conn,
                    tenant,
                    customer_id,
                    interaction_id,
                    LedgerKind::Earn,
                    *points,
                    &reason,
                    *expires_at,
                    key,
                    now,
                )
                .await?,
            )
        }
        LedgerOp::Adjust {
            points,
            reason,
            idempotency_key,
        } => {
            check_points(*points, false)?;
            let reason = check_reason(reason)?;
            check_key(idempotency_key)?;
            let key = idempotency_key.as_deref();
            Applied::Ledger(
                points_tx(
                    conn,
                    tenant,
                    customer_id,
                    interaction_id,
                    LedgerKind::Adjust,
                    *points,
                    &reason,
                    None,
                    key,
                    now,
                )
                .await?,
            )
        }
        LedgerOp::Redeem {
            reward_id,
            idempotency_key,
        } => {
            check_key(idempotency_key)?;
            let key = idempotency_key.as_deref();
            Applied::Ledger(redeem_tx(conn, tenant, customer_id, interaction_id, reward_id, key, now).await?)
        }
        LedgerOp::SetTier { tier_id, reason } => {
            let reason = check_reason(reason)?;
            Applied::Tier(set_tier_tx(conn, tenant, customer_id, tier_id.as_deref(), &reason, now).await?)
        }
    })
}

/// Applies ledger operations (from a reward-scheme plugin, say) inside the
/// caller's write transaction, e.g. the one that ingests the interaction they
/// were computed from. Returns the ledger entries written (or replayed), in
/// order; `SetTier` produces none.
pub async fn apply_ledger_ops_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
    interaction_id: Option<&str>,
    ops: &[LedgerOp],
) -> StoreResult<Vec<LedgerEntry>> {
    let now = now_ms();
    let mut entries = Vec::new();
    for op in ops {
        if let Applied::Ledger(write) = apply_op_tx(conn, tenant, customer_id, interaction_id, op, now).await? {
            entries.push(write.entry);
        }
    }
    Ok(entries)
}

/// Points of the account's lots whose expiry has passed by `now` but that
/// no sweep has recorded yet: what the next write will expire. Read-only,
/// for a reward plugin's snapshot of the account.
pub(super) async fn due_expiry_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
    now: i64,
) -> StoreResult<i64> {
    Ok(open_lots(conn, tenant, customer_id)
        .await?
        .iter()
        .filter(|lot| lot.expires_at.is_some_and(|at| at <= now))
        .map(|lot| lot.remaining)
        .sum())
}

/// Tenant-wide expiry of one customer's due lots, as its own sweep step.
pub async fn expire_account_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
    now: i64,
) -> StoreResult<u64> {
    lock_account(conn, tenant, customer_id, now).await?;
    sweep_account_tx(conn, tenant, customer_id, now).await
}

impl Store {
    /// Runs one ledger operation in its own write transaction, retrying when a
    /// concurrent request raced on the same idempotency key.
    async fn apply_op(&self, tenant: &TenantId, customer_id: &str, op: &LedgerOp) -> StoreResult<Applied> {
        let mut attempt = 1;
        loop {
            let mut tx = self.db().begin_write().await?;
            match apply_op_tx(&mut tx, tenant, customer_id, None, op, now_ms()).await {
                Ok(applied) => {
                    tx.commit().await?;
                    return Ok(applied);
                }
                Err(StoreError::Conflict { code: RETRY, .. }) if attempt < MAX_ATTEMPTS => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Earn, adjust or redeem for one customer (its own transaction).
    pub async fn record_points(&self, tenant: &TenantId, customer_id: &str, op: &LedgerOp) -> StoreResult<LedgerWrite> {
        if matches!(op, LedgerOp::SetTier { .. }) {
            return Err(StoreError::invalid("kind", "use set_tier for tier changes"));
        }
        match self.apply_op(tenant, customer_id, op).await? {
            Applied::Ledger(write) => Ok(write),
            Applied::Tier(_) => Err(StoreError::Corrupt("ledger operation produced a tier change".into())),
        }
    }

    /// Sets or clears a customer's tier; `None` when it was already so.
    pub async fn set_tier(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        tier_id: Option<String>,
        reason: String,
    ) -> StoreResult<Option<TierChange>> {
        match self
            .apply_op(tenant, customer_id, &LedgerOp::SetTier { tier_id, reason })
            .await?
        {
            Applied::Tier(change) => Ok(change),
            Applied::Ledger(_) => Err(StoreError::Corrupt("tier operation produced a ledger entry".into())),
        }
    }

    /// The account as of now, without writing (see module docs on expiry).
    pub async fn get_account(&self, tenant: &TenantId, customer_id: &str) -> StoreResult<Account> {
        let mut tx = begin_read(self).await?;
        require_customer(&mut tx, tenant, customer_id).await?;
        let now = now_ms();
        let row = sqlx::query(
            "SELECT tier_id, balance, lifetime_earned, last_seq, created_at, updated_at FROM loyalty_accounts \
             WHERE tenant_id = $1 AND customer_id = $2",
        )
        .bind(tenant.as_str())
        .bind(customer_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Account {
                customer_id: customer_id.to_string(),
                balance: 0,
                lifetime_earned: 0,
                tier: None,
                expiring_in_30_days: 0,
                last_seq: 0,
                created_at: None,
                updated_at: None,
            });
        };
        let tier_id: Option<String> = row.try_get("tier_id")?;
        let stored: i64 = row.try_get("balance")?;
        let mut expired = 0;
        let mut expiring = 0;
        for lot in open_lots(&mut tx, tenant, customer_id).await? {
            match lot.expires_at {
                Some(at) if at <= now => expired += lot.remaining,
                Some(at) if at <= now + EXPIRING_WINDOW_MS => expiring += lot.remaining,
                _ => {}
            }
        }
        let tier = match tier_id {
            Some(id) => Some(get_tier_tx(&mut tx, tenant, &id).await?),
            None => None,
        };
        Ok(Account {
            customer_id: customer_id.to_string(),
            balance: stored - expired,
            lifetime_earned: row.try_get("lifetime_earned")?,
            tier,
            expiring_in_30_days: expiring,
            last_seq: row.try_get("last_seq")?,
            created_at: Some(from_millis(row.try_get("created_at")?)),
            updated_at: Some(from_millis(row.try_get("updated_at")?)),
        })
    }

    /// The customer's ledger, newest first, `limit` per page.
    pub async fn list_ledger(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        limit: u32,
        after: Option<&str>,
    ) -> StoreResult<Page<LedgerEntry>> {
        if limit == 0 || limit > MAX_PAGE {
            return Err(StoreError::invalid("limit", format!("must be 1 to {MAX_PAGE}")));
        }
        let before_seq: Option<i64> = match after {
            Some(c) => {
                let (seq,): (i64,) = cursor::decode(c)?;
                Some(seq)
            }
            None => None,
        };
        let mut tx = begin_read(self).await?;
        require_customer(&mut tx, tenant, customer_id).await?;
        let rows = sqlx::query(&format!(
            "SELECT {LEDGER_COLUMNS} FROM loyalty_ledger WHERE tenant_id = $1 AND customer_id = $2 AND seq < $3 \
             ORDER BY seq DESC LIMIT $4"
        ))
        .bind(tenant.as_str())
        .bind(customer_id)
        .bind(before_seq.unwrap_or(i64::MAX))
        .bind(i64::from(limit) + 1)
        .fetch_all(&mut *tx)
        .await?;
        let mut items = rows.iter().map(entry_from_row).collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|e| cursor::encode(&(e.seq,)))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// The customer's tier changes, newest first.
    pub async fn list_tier_changes(&self, tenant: &TenantId, customer_id: &str) -> StoreResult<Vec<TierChange>> {
        let mut tx = begin_read(self).await?;
        require_customer(&mut tx, tenant, customer_id).await?;
        let rows = sqlx::query(&format!(
            "SELECT {TIER_CHANGE_COLUMNS} FROM loyalty_tier_changes WHERE tenant_id = $1 AND customer_id = $2 \
             ORDER BY created_at DESC, id DESC"
        ))
        .bind(tenant.as_str())
        .bind(customer_id)
        .fetch_all(&mut *tx)
        .await?;
        rows.iter().map(tier_change_from_row).collect()
    }

    /// Records `expire` entries for every due lot of the tenant, one account
    /// per transaction (so a large sweep never holds one long lock). Returns
    /// the number of entries written.
    pub async fn expire_due_points(&self, tenant: &TenantId) -> StoreResult<u64> {
        let now = now_ms();
        let rows = sqlx::query(
            "SELECT DISTINCT l.customer_id FROM loyalty_ledger l WHERE l.tenant_id = $1 AND l.points > 0 \
               AND l.expires_at IS NOT NULL AND l.expires_at <= $2 \
               AND l.points > COALESCE((SELECT SUM(a.points) FROM loyalty_allocations a \
                   WHERE a.tenant_id = l.tenant_id AND a.credit_id = l.id), 0) \
             ORDER BY l.customer_id",
        )
        .bind(tenant.as_str())
        .bind(now)
        .fetch_all(self.db().pool())
        .await?;
        let mut total = 0;
        for row in rows {
            let customer_id: String = row.try_get("customer_id")?;
            let mut tx = self.db().begin_write().await?;
            total += expire_account_tx(&mut tx, tenant, &customer_id, now).await?;
            tx.commit().await?;
        }
        Ok(total)
    }
}
