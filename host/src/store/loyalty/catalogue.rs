//! The tiers and rewards catalogue: create, list, update and delete tiers
//! and rewards (a tier or reward still referenced cannot be deleted). Plain
//! CRUD with no ledger locking, hence apart from `ledger.rs`.

use sqlx::{AnyConnection, Row};

use super::{
    NewReward, NewTier, REWARD_COLUMNS, Reward, RewardPatch, TIER_COLUMNS, Tier, TierPatch, check_name,
    check_non_negative, check_perks, check_reward, get_reward_tx, get_tier_tx, reward_from_row, tier_from_row,
};
use crate::store::audience::Audience;
use crate::store::{
    Store, StoreError, StoreResult, TenantId, from_millis, is_unique_violation, json_column, new_id, now_ms,
};

fn tier_conflict(err: sqlx::Error) -> StoreError {
    if is_unique_violation(&err) {
        StoreError::conflict("tier_exists", "a tier with this name or rank already exists")
    } else {
        StoreError::Database(err)
    }
}

impl Store {
    // --- tiers ---

    pub async fn create_tier(&self, tenant: &TenantId, new: NewTier) -> StoreResult<Tier> {
        let name = check_name("name", &new.name)?;
        check_non_negative("rank", new.rank)?;
        check_non_negative("min_points", new.min_points)?;
        let perks = check_perks(new.perks)?;
        let now = now_ms();
        let id = new_id();
        sqlx::query(
            "INSERT INTO loyalty_tiers (tenant_id, id, name, rank, min_points, perks, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(tenant.as_str())
        .bind(&id)
        .bind(&name)
        .bind(new.rank)
        .bind(new.min_points)
        .bind(&perks)
        .bind(now)
        .execute(self.db().pool())
        .await
        .map_err(tier_conflict)?;
        Ok(Tier {
            id,
            name,
            rank: new.rank,
            min_points: new.min_points,
            perks: json_column(&perks)?,
            created_at: from_millis(now),
        })
    }

    pub async fn list_tiers(&self, tenant: &TenantId) -> StoreResult<Vec<Tier>> {
        let rows = sqlx::query(&format!(
            "SELECT {TIER_COLUMNS} FROM loyalty_tiers WHERE tenant_id = $1 ORDER BY rank"
        ))
        .bind(tenant.as_str())
        .fetch_all(self.db().pool())
        .await?;
        rows.iter().map(tier_from_row).collect()
    }

    pub async fn get_tier(&self, tenant: &TenantId, id: &str) -> StoreResult<Tier> {
        let mut conn = self.db().pool().acquire().await?;
        get_tier_tx(&mut conn, tenant, id).await
    }

    pub async fn update_tier(&self, tenant: &TenantId, id: &str, patch: TierPatch) -> StoreResult<Tier> {
        let mut tx = self.db().begin_write().await?;
        let current = get_tier_tx(&mut tx, tenant, id).await?;
        let name = check_name("name", patch.name.as_deref().unwrap_or(&current.name))?;
        let rank = patch.rank.unwrap_or(current.rank);
        check_non_negative("rank", rank)?;
        let min_points = patch.min_points.unwrap_or(current.min_points);
        check_non_negative("min_points", min_points)?;
        let perks = check_perks(Some(patch.perks.unwrap_or(current.perks)))?;
        sqlx::query(
            "UPDATE loyalty_tiers SET name = $3, rank = $4, min_points = $5, perks = $6 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(&name)
        .bind(rank)
        .bind(min_points)
        .bind(&perks)
        .execute(&mut *tx)
        .await
        .map_err(tier_conflict)?;
        tx.commit().await?;
        Ok(Tier {
            id: id.to_string(),
            name,
            rank,
            min_points,
            perks: json_column(&perks)?,
            created_at: current.created_at,
        })
    }

    /// Deletes a tier no account holds (409 `tier_in_use` otherwise).
    pub async fn delete_tier(&self, tenant: &TenantId, id: &str) -> StoreResult<()> {
        let mut tx = self.db().begin_write().await?;
        get_tier_tx(&mut tx, tenant, id).await?;
        let holders = count_references(&mut tx, "loyalty_accounts", "tier_id", tenant, id).await?;
        if holders > 0 {
            return Err(StoreError::conflict(
                "tier_in_use",
                format!("{holders} customer(s) hold this tier"),
            ));
        }
        sqlx::query("DELETE FROM loyalty_tiers WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // --- rewards ---

    pub async fn create_reward(&self, tenant: &TenantId, new: NewReward) -> StoreResult<Reward> {
        let name = check_reward(
            &new.name,
            &new.description,
            new.cost_points,
            new.min_tier_rank,
            new.stock,
        )?;
        if let Some(a) = &new.audience {
            a.validate()?;
        }
        let now = now_ms();
        let reward = Reward {
            id: new_id(),
            name,
            description: new.description,
            cost_points: new.cost_points,
            min_tier_rank: new.min_tier_rank,
            stock: new.stock,
            active: new.active,
            audience: new.audience,
            created_at: from_millis(now),
            updated_at: from_millis(now),
        };
        sqlx::query(
            "INSERT INTO loyalty_rewards (tenant_id, id, name, description, cost_points, min_tier_rank, stock, active, \
                 created_at, updated_at, audience) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)",
        )
        .bind(tenant.as_str())
        .bind(&reward.id)
        .bind(&reward.name)
        .bind(&reward.description)
        .bind(reward.cost_points)
        .bind(reward.min_tier_rank)
        .bind(reward.stock)
        .bind(reward.active)
        .bind(now)
        .bind(Audience::to_column(reward.audience.as_ref())?)
        .execute(self.db().pool())
        .await?;
        Ok(reward)
    }

    /// The catalogue, optionally only active (or inactive) rewards.
    pub async fn list_rewards(&self, tenant: &TenantId, active: Option<bool>) -> StoreResult<Vec<Reward>> {
        let rows = sqlx::query(&format!(
            "SELECT {REWARD_COLUMNS} FROM loyalty_rewards WHERE tenant_id = $1 ORDER BY cost_points, id"
        ))
        .bind(tenant.as_str())
        .fetch_all(self.db().pool())
        .await?;
        let rewards = rows.iter().map(reward_from_row).collect::<StoreResult<Vec<_>>>()?;
        Ok(rewards
            .into_iter()
            .filter(|r| active.is_none_or(|a| r.active == a))
            .collect())
    }

    pub async fn get_reward(&self, tenant: &TenantId, id: &str) -> StoreResult<Reward> {
        let mut conn = self.db().pool().acquire().await?;
        get_reward_tx(&mut conn, tenant, id).await
    }

    pub async fn update_reward(&self, tenant: &TenantId, id: &str, patch: RewardPatch) -> StoreResult<Reward> {
        let mut tx = self.db().begin_write().await?;
        let cur = get_reward_tx(&mut tx, tenant, id).await?;
        let description = patch.description.unwrap_or(cur.description);
        let cost_points = patch.cost_points.unwrap_or(cur.cost_points);
        let min_tier_rank = patch.min_tier_rank.unwrap_or(cur.min_tier_rank);
        let stock = patch.stock.unwrap_or(cur.stock);
        let active = patch.active.unwrap_or(cur.active);
        let audience = patch.audience.unwrap_or(cur.audience);
        if let Some(a) = &audience {
            a.validate()?;
        }
        let name = check_reward(
            patch.name.as_deref().unwrap_or(&cur.name),
            &description,
            cost_points,
            min_tier_rank,
            stock,
        )?;
        let now = now_ms();
        sqlx::query(
            "UPDATE loyalty_rewards SET name = $3, description = $4, cost_points = $5, min_tier_rank = $6, stock = $7, \
                 active = $8, updated_at = $9, audience = $10 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(&name)
        .bind(&description)
        .bind(cost_points)
        .bind(min_tier_rank)
        .bind(stock)
        .bind(active)
        .bind(now)
        .bind(Audience::to_column(audience.as_ref())?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Reward {
            id: id.to_string(),
            name,
            description,
            cost_points,
            min_tier_rank,
            stock,
            active,
            audience,
            created_at: cur.created_at,
            updated_at: from_millis(now),
        })
    }

    /// Deletes a reward never redeemed (409 `reward_in_use` otherwise: the
    /// ledger references it; deactivate it instead).
    pub async fn delete_reward(&self, tenant: &TenantId, id: &str) -> StoreResult<()> {
        let mut tx = self.db().begin_write().await?;
        get_reward_tx(&mut tx, tenant, id).await?;
        let uses = count_references(&mut tx, "loyalty_ledger", "reward_id", tenant, id).await?;
        if uses > 0 {
            return Err(StoreError::conflict(
                "reward_in_use",
                "this reward has been redeemed; deactivate it instead",
            ));
        }
        sqlx::query("DELETE FROM loyalty_rewards WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// How many of the tenant's rows in `table` point at `id` through `column`
/// (what stops a tier or reward from being deleted).
async fn count_references(
    conn: &mut AnyConnection,
    table: &'static str,
    column: &'static str,
    tenant: &TenantId,
    id: &str,
) -> StoreResult<i64> {
    let row = sqlx::query(&format!(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM {table} WHERE tenant_id = $1 AND {column} = $2"
    ))
    .bind(tenant.as_str())
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get("n")?)
}
