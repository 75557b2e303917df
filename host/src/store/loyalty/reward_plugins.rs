//! The reward-ledger glue: what a reward plugin's hook (`plugins::rewards`)
//! reads and writes inside an ingest's transaction. Snapshots of account,
//! tiers and rolling spend taken before the write lock, the prediction of
//! what a plugin's operations make of an account, applying them in a
//! savepoint, and reading back the entries a replayed ingest reports.
//! Separate from the ledger itself because it is the one place that reads
//! an interaction as the ingest will store it; the plugin service writes no
//! SQL of its own.

use serde::Serialize;
use sqlx::{AnyConnection, Executor, Row};
use utoipa::ToSchema;

use super::{
    LEDGER_COLUMNS, LedgerEntry, LedgerOp, Tier, apply_ledger_ops_tx, begin_read, check_points, check_reason,
    due_expiry_tx, entry_from_row, expire_account_tx,
};
use crate::store::customers::{NewCustomer, ensure_customer_tx, get_customer_by_external_id_tx, get_customer_tx};
use crate::store::interactions::{
    Assigned, CustomerRef, IngestHook, IngestOutcome, Interaction, KindCache, NewInteraction, Prepared,
    get_interaction_tx, interaction_of, is_fatal, kind_exists, prepare, replay,
};
use crate::store::money::{exact_sum, exact_sum_sql, saturate};
use crate::store::{Store, StoreError, StoreResult, TenantId, from_millis, json_column, millis, now_ms};

/// Length of the rolling window of [`rolling_spend_tx`]: 12 months, taken as
/// 365 days.
pub const ROLLING_SPEND_WINDOW_MS: i64 = 365 * 24 * 60 * 60 * 1000;

/// The prefix of the idempotency keys of one interaction's reward entries.
fn reward_key_prefix(interaction_id: &str) -> String {
    format!("reward:{interaction_id}:")
}

/// The idempotency key of the `n`th (from 0) ledger intent that `plugin`
/// returned for `interaction_id`. Deterministic, so the ledger's unique key
/// guarantees an intent is applied at most once whatever happens upstream.
pub fn reward_key(interaction_id: &str, plugin: &str, n: usize) -> String {
    format!("{}{plugin}:{n}", reward_key_prefix(interaction_id))
}

/// A loyalty account as a reward plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardAccount {
    pub customer_id: String,
    pub balance: i64,
    pub lifetime_earned: i64,
    pub tier_id: Option<String>,
}

/// A tier change a reward plugin made, as the ingest response reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RewardTierChange {
    pub from_tier_id: Option<String>,
    pub to_tier_id: Option<String>,
    pub reason: String,
}

/// What one plugin's operations wrote.
#[derive(Debug, Clone)]
pub struct AppliedReward {
    pub entries: Vec<LedgerEntry>,
    /// `None` when the plugin asked for no change or for the current tier.
    pub tier_change: Option<RewardTierChange>,
}

/// Creates the customer's account if needed, locks it for the rest of the
/// transaction (so nothing changes it between what a plugin is shown and
/// what is applied) and records any due expiry, then returns it. The stored
/// balance is exact after the sweep.
pub async fn lock_reward_account_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
) -> StoreResult<RewardAccount> {
    expire_account_tx(conn, tenant, customer_id, now_ms()).await?;
    reward_account_tx(conn, tenant, customer_id).await
}

/// The account as this transaction sees it (zero when it has none yet).
pub async fn reward_account_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
) -> StoreResult<RewardAccount> {
    let row = sqlx::query(
        "SELECT balance, lifetime_earned, tier_id FROM loyalty_accounts WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant.as_str())
    .bind(customer_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        Some(row) => RewardAccount {
            customer_id: customer_id.to_string(),
            balance: row.try_get("balance")?,
            lifetime_earned: row.try_get("lifetime_earned")?,
            tier_id: row.try_get("tier_id")?,
        },
        None => RewardAccount {
            customer_id: customer_id.to_string(),
            balance: 0,
            lifetime_earned: 0,
            tier_id: None,
        },
    })
}

/// The tenant's tiers, lowest rank first, as this transaction sees them.
pub async fn reward_tiers_tx(conn: &mut AnyConnection, tenant: &TenantId) -> StoreResult<Vec<Tier>> {
    let rows = sqlx::query(
        "SELECT id, name, rank, min_points, perks, created_at FROM loyalty_tiers WHERE tenant_id = $1 ORDER BY rank",
    )
    .bind(tenant.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let mut tiers = Vec::with_capacity(rows.len());
    for row in &rows {
        let perks: String = row.try_get("perks")?;
        tiers.push(Tier {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            rank: row.try_get("rank")?,
            min_points: row.try_get("min_points")?,
            perks: json_column(&perks)?,
            created_at: from_millis(row.try_get("created_at")?),
        });
    }
    Ok(tiers)
}

/// The query of [`rolling_spend_tx`] when the interaction has no currency.
///
/// `kind || ''` (here and in [`rolling_spend_sql`]) is deliberate: it keeps
/// `interactions_kind (tenant_id, kind, occurred_at)` out of the planner's
/// choices, leaving the customer's timeline index `(tenant_id, customer_id,
/// occurred_at, id)` as the only index that matches more than the tenant.
/// Offered both, SQLite and PostgreSQL picked by statistics, and with stale
/// ones (a tenant analysed while small) took the kind index: every rewarded
/// ingest scanned the tenant's purchases of a year (24 ms instead of 0.1 ms
/// at 29k rows, issue #18). The plans are asserted in `tests/it/query_plans.rs`.
pub const LATEST_PURCHASE_CURRENCY_SQL: &str = "SELECT currency FROM interactions \
     WHERE tenant_id = $1 AND customer_id = $2 AND kind || '' = 'purchase' \
     AND currency IS NOT NULL ORDER BY occurred_at DESC, id DESC LIMIT 1";

/// The rolling-spend sum of [`rolling_spend_tx`] (see
/// [`LATEST_PURCHASE_CURRENCY_SQL`] for its shape): tenant, customer,
/// currency, window start (exclusive) and end (inclusive).
pub fn rolling_spend_sql() -> String {
    format!(
        "SELECT {} FROM interactions \
         WHERE tenant_id = $1 AND customer_id = $2 AND kind || '' = 'purchase' AND currency = $3 \
         AND occurred_at > $4 AND occurred_at <= $5",
        exact_sum_sql("amount_minor", "spend")
    )
}

/// The customer's purchase spend over the 12 months up to and including
/// `interaction` (by `occurred_at`, so an imported historical interaction
/// sees the spend as it was then), in the interaction's currency, minor
/// units; the interaction itself counts when it is a purchase. An
/// interaction without a currency uses the currency of the customer's latest
/// purchase (0 when there is none): tier rules still need a spend figure for
/// a visit. Purchases in other currencies are not converted, they are left
/// out.
pub async fn rolling_spend_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    interaction: &Interaction,
) -> StoreResult<i64> {
    let currency = match &interaction.amount {
        Some(money) => money.currency.clone(),
        None => {
            let row = sqlx::query(LATEST_PURCHASE_CURRENCY_SQL)
                .bind(tenant.as_str())
                .bind(&interaction.customer_id)
                .fetch_optional(&mut *conn)
                .await?;
            match row {
                Some(row) => row.try_get("currency")?,
                None => return Ok(0),
            }
        }
    };
    let end = millis(interaction.occurred_at);
    let row = sqlx::query(&rolling_spend_sql())
        .bind(tenant.as_str())
        .bind(&interaction.customer_id)
        .bind(&currency)
        .bind(end.saturating_sub(ROLLING_SPEND_WINDOW_MS))
        .bind(end)
        .fetch_one(&mut *conn)
        .await?;
    Ok(saturate(exact_sum(&row, "spend")?))
}

/// Applies one plugin's operations for `interaction` all or nothing, inside
/// a savepoint of the caller's transaction. The outer `Err` is a fatal
/// (database) error; the inner one says why the operations were refused (an
/// invalid intent, a debit the balance does not cover, an unknown tier), in
/// which case none of them was applied and the transaction goes on.
pub async fn apply_reward_ops_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    interaction: &Interaction,
    ops: &[LedgerOp],
) -> StoreResult<Result<AppliedReward, StoreError>> {
    conn.execute("SAVEPOINT reward_plugin").await?;
    let applied = apply_reward_ops_inner(conn, tenant, interaction, ops).await;
    match applied {
        Ok(applied) => {
            conn.execute("RELEASE SAVEPOINT reward_plugin").await?;
            Ok(Ok(applied))
        }
        Err(e) if is_fatal(&e) => Err(e),
        Err(e) => {
            // Also clears PostgreSQL's "transaction aborted" state after a
            // failed statement, so the ingest can still commit.
            conn.execute("ROLLBACK TO SAVEPOINT reward_plugin").await?;
            conn.execute("RELEASE SAVEPOINT reward_plugin").await?;
            Ok(Err(e))
        }
    }
}

async fn apply_reward_ops_inner(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    interaction: &Interaction,
    ops: &[LedgerOp],
) -> StoreResult<AppliedReward> {
    let customer_id = interaction.customer_id.as_str();
    let before = reward_account_tx(conn, tenant, customer_id).await?.tier_id;
    let entries = apply_ledger_ops_tx(conn, tenant, customer_id, Some(&interaction.id), ops).await?;
    let after = reward_account_tx(conn, tenant, customer_id).await?.tier_id;
    let reason = ops.iter().rev().find_map(|op| match op {
        LedgerOp::SetTier { reason, .. } => Some(reason.trim().to_string()),
        _ => None,
    });
    let tier_change = match reason {
        Some(reason) if before != after => Some(RewardTierChange {
            from_tier_id: before,
            to_tier_id: after,
            reason,
        }),
        _ => None,
    };
    Ok(AppliedReward { entries, tier_change })
}

/// What a reward plugin is shown for one interaction, read *before* the
/// ingest's write transaction (see `plugins::rewards`): the interaction as
/// it will be stored (its id fixed in advance), the account with its due
/// expiry deducted (what the ingest's sweep will leave), the tenant's tiers
/// and the rolling spend including this interaction. The ingest compares
/// it with what it reads under the lock and applies the plugins' answers
/// only if they agree.
#[derive(Debug, Clone)]
pub struct RewardSnapshot {
    pub interaction: Interaction,
    pub account: RewardAccount,
    pub tiers: Vec<Tier>,
    pub rolling_spend_minor: i64,
    /// The currency the rolling spend is in (`None`: no purchase to take it from).
    pub spend_currency: Option<String>,
}

/// What one plugin's operations would make of `account` if the store
/// accepts them, all or nothing as [`apply_reward_ops_tx`] applies them (the
/// same checks; a refused set leaves the account as it was). Used to show
/// the next plugin, or the customer's next interaction in a batch, the
/// account as the ingest will have it; the ingest checks the guess.
pub fn predict_reward_ops(account: &RewardAccount, tiers: &[Tier], ops: &[LedgerOp], now: i64) -> RewardAccount {
    let mut next = account.clone();
    for op in ops {
        let ok = match op {
            LedgerOp::Earn {
                points,
                reason,
                expires_at,
                ..
            } => {
                let valid = check_points(*points, true).is_ok()
                    && check_reason(reason).is_ok()
                    && expires_at.is_none_or(|at| at > now);
                match (
                    next.balance.checked_add(*points),
                    next.lifetime_earned.checked_add(*points),
                ) {
                    (Some(balance), Some(earned)) if valid => {
                        next.balance = balance;
                        next.lifetime_earned = earned;
                        true
                    }
                    _ => false,
                }
            }
            LedgerOp::Adjust { points, reason, .. } => {
                let valid = check_points(*points, false).is_ok() && check_reason(reason).is_ok();
                match next.balance.checked_add(*points) {
                    Some(balance) if valid && balance >= 0 => {
                        next.balance = balance;
                        true
                    }
                    _ => false,
                }
            }
            LedgerOp::SetTier { tier_id, reason } => {
                let known = tier_id.as_ref().is_none_or(|id| tiers.iter().any(|t| &t.id == id));
                if known && check_reason(reason).is_ok() {
                    next.tier_id = tier_id.clone();
                    true
                } else {
                    false
                }
            }
            // Reward plugins never redeem.
            LedgerOp::Redeem { .. } => false,
        };
        if !ok {
            return account.clone();
        }
    }
    next
}

/// The account as a snapshot shows it: stored, minus what is due to expire.
async fn snapshot_account(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
    now: i64,
) -> StoreResult<RewardAccount> {
    let mut account = reward_account_tx(conn, tenant, customer_id).await?;
    account.balance -= due_expiry_tx(conn, tenant, customer_id, now).await?;
    Ok(account)
}

/// The currency [`rolling_spend_tx`] sums in for `interaction`.
async fn spend_currency_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    interaction: &Interaction,
) -> StoreResult<Option<String>> {
    if let Some(money) = &interaction.amount {
        return Ok(Some(money.currency.clone()));
    }
    let row = sqlx::query(
        "SELECT currency FROM interactions WHERE tenant_id = $1 AND customer_id = $2 AND kind = 'purchase' \
         AND currency IS NOT NULL ORDER BY occurred_at DESC, id DESC LIMIT 1",
    )
    .bind(tenant.as_str())
    .bind(&interaction.customer_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        Some(row) => Some(row.try_get("currency")?),
        None => None,
    })
}

impl Store {
    /// A [`RewardSnapshot`] of each of `items` as if ingested now with the
    /// ids `assigned` (same order), read without the write lock; `None` for
    /// an item that will not be created (invalid, a replay, an unknown
    /// kind or customer, an erased customer): the ingest itself says why.
    ///
    /// A customer an item names by a new external id is created first, in
    /// a short transaction of its own, so that the snapshot can name it
    /// (creating it is idempotent: the ingest then finds it).
    pub async fn reward_snapshots(
        &self,
        tenant: &TenantId,
        items: &[NewInteraction],
        assigned: &[Assigned],
    ) -> StoreResult<Vec<Option<RewardSnapshot>>> {
        let prepared: Vec<Option<Prepared>> = items.iter().map(|new| prepare(new.clone()).ok()).collect();
        let mut created = false;
        loop {
            let mut tx = begin_read(self).await?;
            let mut kinds = KindCache::new();
            let mut customers: Vec<Option<String>> = Vec::with_capacity(prepared.len());
            let mut missing: Vec<String> = Vec::new();
            // A key used again later in the same batch replays the first item.
            let mut keys = std::collections::HashSet::new();
            for p in &prepared {
                customers.push(match p {
                    Some(p) if p.idempotency_key.as_ref().is_none_or(|k| keys.insert(k.clone())) => {
                        snapshot_customer(&mut tx, tenant, p, &mut kinds, &mut missing).await?
                    }
                    _ => None,
                });
            }
            if !missing.is_empty() && !created {
                drop(tx);
                let mut write = self.db().begin_write().await?;
                for external_id in missing {
                    ensure_customer_tx(&mut write, tenant, NewCustomer::with_external_id(external_id)).await?;
                }
                write.commit().await?;
                created = true;
                continue;
            }
            let tiers = reward_tiers_tx(&mut tx, tenant).await?;
            let now = now_ms();
            let mut snapshots = Vec::with_capacity(prepared.len());
            for ((p, customer), assigned) in prepared.iter().zip(customers).zip(assigned) {
                let (Some(p), Some(customer_id)) = (p, customer) else {
                    snapshots.push(None);
                    continue;
                };
                let mut p = p.clone();
                if !p.occurred_at_given {
                    p.occurred_at = assigned.created_at;
                }
                let interaction = interaction_of(&p, assigned.id.clone(), customer_id, assigned.created_at);
                let account = snapshot_account(&mut tx, tenant, &interaction.customer_id, now).await?;
                // Not stored yet: add its own amount as the stored one would count.
                let own = match (&interaction.amount, interaction.kind.as_str()) {
                    (Some(money), "purchase") => money.amount_minor,
                    _ => 0,
                };
                let stored = rolling_spend_tx(&mut tx, tenant, &interaction).await?;
                let spend_currency = spend_currency_tx(&mut tx, tenant, &interaction).await?;
                snapshots.push(Some(RewardSnapshot {
                    rolling_spend_minor: stored.saturating_add(own),
                    spend_currency,
                    account,
                    tiers: tiers.clone(),
                    interaction,
                }));
            }
            return Ok(snapshots);
        }
    }

    /// A [`RewardSnapshot`] of the stored interaction `interaction_id` (an
    /// admin's re-run of a reward plugin).
    pub async fn reward_snapshot_of(&self, tenant: &TenantId, interaction_id: &str) -> StoreResult<RewardSnapshot> {
        let mut tx = begin_read(self).await?;
        let interaction = get_interaction_tx(&mut tx, tenant, interaction_id).await?;
        let account = snapshot_account(&mut tx, tenant, &interaction.customer_id, now_ms()).await?;
        let tiers = reward_tiers_tx(&mut tx, tenant).await?;
        let rolling_spend_minor = rolling_spend_tx(&mut tx, tenant, &interaction).await?;
        let spend_currency = spend_currency_tx(&mut tx, tenant, &interaction).await?;
        Ok(RewardSnapshot {
            interaction,
            account,
            tiers,
            rolling_spend_minor,
            spend_currency,
        })
    }

    /// Runs `hook` for the stored interaction `interaction_id` in a write
    /// transaction of its own, as an ingest would have (re-running one
    /// reward plugin for an interaction after it failed). 409
    /// `rewards_already_applied` when `plugin` already has ledger entries for
    /// it: its effect happened; the deterministic keys would refuse a second
    /// one anyway.
    pub async fn rerun_rewards_with<H: IngestHook>(
        &self,
        tenant: &TenantId,
        interaction_id: &str,
        plugin: &str,
        hook: &H,
    ) -> StoreResult<H::Output> {
        let mut tx = self.db().begin_write().await?;
        let interaction = get_interaction_tx(&mut tx, tenant, interaction_id).await?;
        let applied = reward_entries_tx(&mut tx, tenant, interaction_id)
            .await?
            .into_iter()
            .any(|(p, _)| p == plugin);
        if applied {
            return Err(StoreError::conflict(
                "rewards_already_applied",
                format!("plugin `{plugin}` already wrote ledger entries for this interaction"),
            ));
        }
        let output = hook
            .after_ingest(&mut tx, tenant, &interaction, IngestOutcome::Created)
            .await?;
        tx.commit().await?;
        Ok(output)
    }
}

/// The id of the customer `p` will be stored for, if it will be created at
/// all; a new external id goes to `missing`.
async fn snapshot_customer(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    p: &Prepared,
    kinds: &mut KindCache,
    missing: &mut Vec<String>,
) -> StoreResult<Option<String>> {
    if let Some(key) = &p.idempotency_key
        && !matches!(replay(conn, tenant, key, &p.request_hash).await, Ok(None))
    {
        return Ok(None);
    }
    if !kind_exists(conn, tenant, &p.kind, kinds).await? {
        return Ok(None);
    }
    let customer = match &p.customer {
        CustomerRef::Id(id) => get_customer_tx(conn, tenant, id).await,
        CustomerRef::ExternalId(external) => match get_customer_by_external_id_tx(conn, tenant, external).await {
            Err(StoreError::NotFound { .. }) => {
                missing.push(external.clone());
                return Ok(None);
            }
            other => other,
        },
    };
    match customer {
        Ok(c) if c.erased_at.is_none() => Ok(Some(c.id)),
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The query of [`reward_entries_tx`]: tenant, interaction, key prefix
/// pattern. Planned on `loyalty_ledger_interaction (tenant_id,
/// interaction_id)` (migration 0020); the prefix is only a filter (a `LIKE`
/// cannot use PostgreSQL's btree under a non-C collation).
pub fn reward_entries_sql() -> String {
    format!(
        "SELECT {LEDGER_COLUMNS} FROM loyalty_ledger WHERE tenant_id = $1 AND interaction_id = $2 \
         AND idempotency_key LIKE $3 ORDER BY seq"
    )
}

/// The ledger entries reward plugins wrote for `interaction_id`, with the
/// plugin each came from (read back from the idempotency key), in ledger
/// order: what a replayed ingest reports.
pub async fn reward_entries_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    interaction_id: &str,
) -> StoreResult<Vec<(String, LedgerEntry)>> {
    let prefix = reward_key_prefix(interaction_id);
    // Interaction ids are UUIDs: the prefix holds no LIKE wildcard.
    let rows = sqlx::query(&reward_entries_sql())
        .bind(tenant.as_str())
        .bind(interaction_id)
        .bind(format!("{prefix}%"))
        .fetch_all(&mut *conn)
        .await?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in &rows {
        let entry = entry_from_row(row)?;
        let plugin = entry
            .idempotency_key
            .as_deref()
            .and_then(|key| key.strip_prefix(&prefix))
            .and_then(|rest| rest.rsplit_once(':'))
            .map(|(plugin, _)| plugin.to_string())
            .ok_or_else(|| StoreError::Corrupt(format!("reward entry {} has a malformed key", entry.id)))?;
        entries.push((plugin, entry));
    }
    Ok(entries)
}
