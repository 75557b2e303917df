//! Store: referrals (word of mouth). A `referral` interaction of the
//! referrer names the customer it brought, by
//! `payload.referred_customer_id` or `payload.referred_external_id`
//! (created if new); ingest records the link in the same transaction or
//! refuses the interaction:
//! - 422 `self_referral`: a customer cannot refer itself;
//! - 422 `referral_cycle`: the referred customer is already the referrer's
//!   referrer, directly or up the chain;
//! - 422 `not_a_new_customer`: the referred customer has already purchased;
//! - 409 `already_referred`: someone else referred them first (the same
//!   referrer again is accepted and changes nothing).
//!
//! A customer has at most one referrer (the primary key), so the referrals
//! form a forest and the cycle check walks one chain. Referral writes of a
//! tenant are serialized by a no-op update of its `tenants` row
//! (PostgreSQL; SQLite has one writer anyway), so two concurrent referrals
//! A -> B and B -> A cannot both pass the check.
//!
//! Credit: the referred customer's first purchase sets `credited_at` with
//! one conditional UPDATE (`credited_at IS NULL`): of concurrent first
//! purchases exactly one matches (PostgreSQL re-checks the condition after
//! the first commits), and only that one credits the referrer the tenant's
//! `referral_points` (ledger key `referral:<referred id>` besides).

use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::customers::{NewCustomer, ensure_customer_tx, get_customer_tx};
use super::interactions::Interaction;
use super::playbook::{credit_points_tx, settings_tx};
use super::{Store, StoreError, StoreResult, TenantId, from_millis, now_ms};

/// How deep `GET /v1/customers/{id}/referrals` follows the tree.
pub const MAX_TREE_DEPTH: usize = 10;
/// How many referred customers it lists at most.
pub const MAX_TREE_NODES: usize = 1000;

/// A customer's place in the referral forest.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReferralTree {
    pub customer_id: String,
    /// Who referred this customer, if anyone.
    pub referred_by: Option<String>,
    /// The customers this one referred, each with its own.
    pub referrals: Vec<ReferralNode>,
    /// Whether the tree was cut at the depth or size limit.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReferralNode {
    pub customer_id: String,
    /// The referrer's `referral` interaction.
    pub interaction_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub referred_at: OffsetDateTime,
    /// When the first purchase credited the referrer.
    #[serde(with = "time::serde::rfc3339::option")]
    pub credited_at: Option<OffsetDateTime>,
    /// Points the referrer got for it (absent: none).
    pub credited_points: Option<i64>,
    #[schema(no_recursion)]
    pub referrals: Vec<ReferralNode>,
}

fn unprocessable(code: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::Unprocessable {
        code,
        field: "payload".into(),
        message: message.into(),
    }
}

/// Records the link of a new `referral` interaction (see the module doc).
pub(super) async fn record_referral_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    interaction: &Interaction,
) -> StoreResult<()> {
    let referrer = &interaction.customer_id;
    let by_id = interaction.payload.get("referred_customer_id");
    let by_external = interaction.payload.get("referred_external_id");
    let referred = match (by_id, by_external) {
        (Some(Value::String(id)), None) => get_customer_tx(conn, tenant, id).await.map_err(|e| match e {
            StoreError::NotFound { .. } => {
                StoreError::invalid("payload.referred_customer_id", "no customer with this id")
            }
            e => e,
        })?,
        (None, Some(Value::String(external))) => {
            super::customers::validate_external_id(external)
                .map_err(|_| StoreError::invalid("payload.referred_external_id", "must be 1 to 200 characters"))?;
            ensure_customer_tx(conn, tenant, NewCustomer::with_external_id(external.clone()))
                .await?
                .0
        }
        _ => {
            return Err(StoreError::invalid(
                "payload.referred_customer_id",
                "a referral names the referred customer by exactly one of referred_customer_id or \
                 referred_external_id (a string)",
            ));
        }
    };
    if &referred.id == referrer {
        return Err(unprocessable("self_referral", "a customer cannot refer itself"));
    }
    if referred.erased_at.is_some() {
        return Err(StoreError::conflict(
            "customer_erased",
            "the referred customer's data has been erased",
        ));
    }
    // Serialize the tenant's referral writes (see the module doc).
    sqlx::query("UPDATE tenants SET name = name WHERE id = $1")
        .bind(tenant.as_str())
        .execute(&mut *conn)
        .await?;
    if let Some(existing) = referrer_of(conn, tenant, &referred.id).await? {
        if &existing == referrer {
            return Ok(());
        }
        return Err(StoreError::conflict(
            "already_referred",
            format!("customer {} was already referred by another customer", referred.id),
        ));
    }
    // Walk up from the referrer: meeting the referred customer means the
    // new link would close a cycle.
    let mut current = referrer.clone();
    let mut steps = 0;
    while let Some(up) = referrer_of(conn, tenant, &current).await? {
        if up == referred.id {
            return Err(unprocessable(
                "referral_cycle",
                format!(
                    "customer {} is already up the referral chain of customer {referrer}: the referral would make a cycle",
                    referred.id
                ),
            ));
        }
        current = up;
        steps += 1;
        if steps > 100_000 {
            return Err(StoreError::Corrupt("referral chain does not end".into()));
        }
    }
    let purchased = sqlx::query(
        "SELECT id FROM interactions WHERE tenant_id = $1 AND customer_id = $2 AND kind = 'purchase' LIMIT 1",
    )
    .bind(tenant.as_str())
    .bind(&referred.id)
    .fetch_optional(&mut *conn)
    .await?
    .is_some();
    if purchased {
        return Err(unprocessable(
            "not_a_new_customer",
            format!(
                "customer {} has already made a purchase; only new customers can be referred",
                referred.id
            ),
        ));
    }
    sqlx::query(
        "INSERT INTO referrals (tenant_id, referred_id, referrer_id, interaction_id, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant.as_str())
    .bind(&referred.id)
    .bind(referrer)
    .bind(&interaction.id)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn referrer_of(conn: &mut AnyConnection, tenant: &TenantId, customer: &str) -> StoreResult<Option<String>> {
    Ok(
        sqlx::query("SELECT referrer_id FROM referrals WHERE tenant_id = $1 AND referred_id = $2")
            .bind(tenant.as_str())
            .bind(customer)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| r.try_get("referrer_id"))
            .transpose()?,
    )
}

/// Credits the referrer of a new purchase's customer, if this is the first
/// purchase since the referral (exactly once, see the module doc).
pub(super) async fn credit_first_purchase_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    purchase: &Interaction,
) -> StoreResult<()> {
    let claimed = sqlx::query(
        "UPDATE referrals SET credited_at = $3, credit_interaction_id = $4 \
         WHERE tenant_id = $1 AND referred_id = $2 AND credited_at IS NULL RETURNING referrer_id",
    )
    .bind(tenant.as_str())
    .bind(&purchase.customer_id)
    .bind(now_ms())
    .bind(&purchase.id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = claimed else { return Ok(()) };
    let referrer: String = row.try_get("referrer_id")?;
    let points = settings_tx(conn, tenant).await?.referral_points;
    let entry = credit_points_tx(
        conn,
        tenant,
        &referrer,
        points,
        "referral: first purchase of a referred customer",
        format!("referral:{}", purchase.customer_id),
    )
    .await?;
    if let Some(entry) = entry {
        sqlx::query(
            "UPDATE referrals SET credited_points = $3, credit_entry_id = $4 WHERE tenant_id = $1 AND referred_id = $2",
        )
        .bind(tenant.as_str())
        .bind(&purchase.customer_id)
        .bind(points)
        .bind(&entry)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

fn node_from_row(row: &AnyRow) -> StoreResult<(String, ReferralNode)> {
    Ok((
        row.try_get("referrer_id")?,
        ReferralNode {
            customer_id: row.try_get("referred_id")?,
            interaction_id: row.try_get("interaction_id")?,
            referred_at: from_millis(row.try_get("created_at")?),
            credited_at: row.try_get::<Option<i64>, _>("credited_at")?.map(from_millis),
            credited_points: row.try_get("credited_points")?,
            referrals: Vec::new(),
        },
    ))
}

impl Store {
    /// The customer's referrer and the tree of customers it referred
    /// (breadth first, one query per level, cut at [`MAX_TREE_DEPTH`]
    /// levels and [`MAX_TREE_NODES`] customers).
    pub async fn referral_tree(&self, tenant: &TenantId, customer_id: &str) -> StoreResult<ReferralTree> {
        let mut conn = self.db().pool().acquire().await?;
        get_customer_tx(&mut conn, tenant, customer_id).await?;
        let referred_by = referrer_of(&mut conn, tenant, customer_id).await?;
        // levels[d] holds (parent, node) of depth d + 1.
        let mut levels: Vec<Vec<(String, ReferralNode)>> = Vec::new();
        let mut frontier = vec![customer_id.to_owned()];
        let mut count = 0usize;
        let mut truncated = false;
        while !frontier.is_empty() {
            if levels.len() == MAX_TREE_DEPTH {
                truncated = true;
                break;
            }
            let mut level = Vec::new();
            for chunk in frontier.chunks(200) {
                let mut sql = super::sql::Sql::new(
                    "SELECT referred_id, referrer_id, interaction_id, created_at, credited_at, credited_points \
                     FROM referrals WHERE tenant_id = ",
                );
                let p = sql.arg(super::sql::Arg::Text(tenant.as_str().to_owned()));
                sql.push(&p);
                sql.push(" AND referrer_id IN (");
                for (i, id) in chunk.iter().enumerate() {
                    let p = sql.arg(super::sql::Arg::Text(id.clone()));
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.push(&p);
                }
                sql.push(") ORDER BY created_at, referred_id");
                for row in sql.query().fetch_all(&mut *conn).await?.iter() {
                    level.push(node_from_row(row)?);
                }
            }
            if count + level.len() > MAX_TREE_NODES {
                level.truncate(MAX_TREE_NODES - count);
                truncated = true;
            }
            count += level.len();
            frontier = level.iter().map(|(_, n)| n.customer_id.clone()).collect();
            levels.push(level);
            if truncated {
                break;
            }
        }
        // Assemble bottom-up: each level's nodes go under their parents.
        let mut below: Vec<(String, ReferralNode)> = Vec::new();
        for mut level in levels.into_iter().rev() {
            for (parent, node) in below.drain(..) {
                if let Some((_, p)) = level.iter_mut().find(|(_, n)| n.customer_id == parent) {
                    p.referrals.push(node);
                }
            }
            below = level;
        }
        Ok(ReferralTree {
            customer_id: customer_id.to_owned(),
            referred_by,
            referrals: below.into_iter().map(|(_, n)| n).collect(),
            truncated,
        })
    }
}
