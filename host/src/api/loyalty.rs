//! /v1 loyalty endpoints: a customer's account, ledger, redemptions and tier,
//! plus the tenant's tier and reward catalogues.
//!
//! Roles: reading needs any tenant key; earning and redeeming a write key;
//! manual adjustments, tier overrides, catalogue changes and the expiry sweep
//! an admin key (they change balances or terms outside the normal flow).
//! Replaying a request with the same `idempotency_key` answers 200 with the
//! original entry; a fresh write answers 201.
//!
//! `GET /v1/customers/{id}/loyalty/redeemable` asks the tenant's reward-scheme
//! plugins which rewards the customer may redeem now (see `plugins::rewards`).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Auth, Json, Path, Query};
use super::{ApiResult, AppState, Error};
use crate::store::loyalty::{
    Account, DEFAULT_PAGE, LedgerEntry, LedgerOp, LedgerWrite, NewReward, NewTier, Reward, RewardPatch, Tier,
    TierChange, TierPatch,
};
use crate::store::{Page, StoreError, TenantId, millis};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_account))
        .routes(routes!(redeemable))
        .routes(routes!(list_ledger, post_ledger))
        .routes(routes!(redeem))
        .routes(routes!(set_tier))
        .routes(routes!(list_tier_changes))
        .routes(routes!(list_tiers, create_tier))
        .routes(routes!(get_tier, update_tier, delete_tier))
        .routes(routes!(list_rewards, create_reward))
        .routes(routes!(get_reward, update_reward, delete_reward))
        .routes(routes!(expire_points))
}

/// Kinds of entry that may be posted by hand (redeem has its own endpoint;
/// expire entries are written by the system only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ManualKind {
    /// Credit points (write key); may expire.
    Earn,
    /// Correction of either sign (admin key); cannot take the balance below 0.
    Adjust,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLedgerEntry {
    pub kind: ManualKind,
    pub points: i64,
    pub reason: String,
    /// When the earned points expire (must be in the future; earn only).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    pub reward_id: String,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTierRequest {
    /// The tier to assign, or `null` to clear it.
    #[serde(default)]
    pub tier_id: Option<String>,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SetTierResult {
    /// The recorded change; `null` when the customer already had that tier.
    pub change: Option<TierChange>,
    pub account: Account,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RewardQuery {
    /// Only active (`true`) or inactive (`false`) rewards.
    pub active: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExpirySweep {
    /// Number of `expire` entries written.
    pub expired_entries: u64,
}

fn written(write: LedgerWrite) -> (StatusCode, Json<LedgerWrite>) {
    let status = if write.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, Json(write))
}

/// Adds `{balance, required}` to an `insufficient_points` conflict (the
/// store's error carries only a message). The balance is re-read, so it is the
/// one a client retrying now would face.
async fn explain(s: &AppState, tenant: &TenantId, customer_id: &str, required: i64, err: StoreError) -> Error {
    match err {
        StoreError::Conflict {
            code: "insufficient_points",
            message,
        } => {
            let balance = match s.store.get_account(tenant, customer_id).await {
                Ok(account) => json!(account.balance),
                Err(_) => json!(null),
            };
            Error::Conflict {
                code: "insufficient_points",
                message,
                details: json!({ "balance": balance, "required": required }),
            }
        }
        other => other.into(),
    }
}

/// A customer's loyalty account: balance, lifetime earned, tier, points expiring within 30 days.
#[utoipa::path(get, path = "/v1/customers/{customer_id}/loyalty", tag = "loyalty",
    params(("customer_id" = String, Path)),
    responses((status = 200, body = Account), (status = 404, body = ErrorBody)))]
async fn get_account(
    State(s): State<AppState>,
    auth: Auth,
    Path(customer_id): Path<String>,
) -> ApiResult<Json<Account>> {
    let t = auth.read()?;
    Ok(Json(s.store.get_account(&t, &customer_id).await?))
}

/// The active rewards a customer may redeem now: those the host's rules allow
/// (cost within the balance, tier rank, stock), intersected with every active
/// reward plugin's `redeemable` answer. A failing plugin is reported in
/// `plugins` and, if every plugin fails, nothing is redeemable.
#[utoipa::path(get, path = "/v1/customers/{customer_id}/loyalty/redeemable", tag = "loyalty",
    params(("customer_id" = String, Path)),
    responses((status = 200, body = crate::plugins::rewards::Redeemable), (status = 404, body = ErrorBody)))]
async fn redeemable(
    State(s): State<AppState>,
    auth: Auth,
    Path(customer_id): Path<String>,
) -> ApiResult<Json<crate::plugins::rewards::Redeemable>> {
    let t = auth.read()?;
    Ok(Json(s.plugins.redeemable(&t, &customer_id).await?))
}

/// A customer's ledger, newest first.
#[utoipa::path(get, path = "/v1/customers/{customer_id}/loyalty/ledger", tag = "loyalty",
    params(("customer_id" = String, Path), LedgerQuery),
    responses((status = 200, body = Page<LedgerEntry>), (status = 404, body = ErrorBody)))]
async fn list_ledger(
    State(s): State<AppState>,
    auth: Auth,
    Path(customer_id): Path<String>,
    Query(q): Query<LedgerQuery>,
) -> ApiResult<Json<Page<LedgerEntry>>> {
    let t = auth.read()?;
    let page = s
        .store
        .list_ledger(&t, &customer_id, q.limit.unwrap_or(DEFAULT_PAGE), q.cursor.as_deref())
        .await?;
    Ok(Json(page))
}

/// Earn (write key) or adjust (admin key) points.
#[utoipa::path(post, path = "/v1/customers/{customer_id}/loyalty/ledger", tag = "loyalty",
    params(("customer_id" = String, Path)), request_body = NewLedgerEntry,
    responses((status = 201, body = LedgerWrite), (status = 200, description = "idempotent replay", body = LedgerWrite),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn post_ledger(
    State(s): State<AppState>,
    auth: Auth,
    Path(customer_id): Path<String>,
    Json(body): Json<NewLedgerEntry>,
) -> ApiResult<(StatusCode, Json<LedgerWrite>)> {
    let t = auth.write()?;
    let op = match body.kind {
        ManualKind::Earn => LedgerOp::Earn {
            points: body.points,
            reason: body.reason,
            expires_at: body.expires_at.map(millis),
            idempotency_key: body.idempotency_key,
        },
        ManualKind::Adjust => {
            auth.admin()?;
            if body.expires_at.is_some() {
                return Err(Error::invalid("expires_at", "only earned points may expire"));
            }
            LedgerOp::Adjust {
                points: body.points,
                reason: body.reason,
                idempotency_key: body.idempotency_key,
            }
        }
    };
    match s.store.record_points(&t, &customer_id, &op).await {
        Ok(write) => Ok(written(write)),
        Err(e) => Err(explain(&s, &t, &customer_id, body.points.saturating_abs(), e).await),
    }
}

/// Redeem a reward: atomically debits its cost (oldest points first) and takes one unit of stock.
#[utoipa::path(post, path = "/v1/customers/{customer_id}/loyalty/redeem", tag = "loyalty",
    params(("customer_id" = String, Path)), request_body = RedeemRequest,
    responses((status = 201, body = LedgerWrite), (status = 200, description = "idempotent replay", body = LedgerWrite),
        (status = 404, body = ErrorBody),
        (status = 409, description = "insufficient_points, out_of_stock, reward_inactive, tier_too_low, not_in_audience, idempotency_conflict", body = ErrorBody)))]
async fn redeem(
    State(s): State<AppState>,
    auth: Auth,
    Path(customer_id): Path<String>,
    Json(body): Json<RedeemRequest>,
) -> ApiResult<(StatusCode, Json<LedgerWrite>)> {
    let t = auth.write()?;
    let op = LedgerOp::Redeem {
        reward_id: body.reward_id.clone(),
        idempotency_key: body.idempotency_key,
    };
    match s.store.record_points(&t, &customer_id, &op).await {
        Ok(write) => Ok(written(write)),
        Err(e) => {
            let cost = s
                .store
                .get_reward(&t, &body.reward_id)
                .await
                .map(|r| r.cost_points)
                .unwrap_or(0);
            Err(explain(&s, &t, &customer_id, cost, e).await)
        }
    }
}

/// Set or clear a customer's tier by hand (admin key); recorded in the tier history.
#[utoipa::path(put, path = "/v1/customers/{customer_id}/loyalty/tier", tag = "loyalty",
    params(("customer_id" = String, Path)), request_body = SetTierRequest,
    responses((status = 200, body = SetTierResult), (status = 404, body = ErrorBody)))]
async fn set_tier(
    State(s): State<AppState>,
    auth: Auth,
    Path(customer_id): Path<String>,
    Json(body): Json<SetTierRequest>,
) -> ApiResult<Json<SetTierResult>> {
    let t = auth.admin()?;
    let change = s.store.set_tier(&t, &customer_id, body.tier_id, body.reason).await?;
    super::audit::record(
        &s,
        &auth,
        Some(&t),
        "customer.tier_set",
        format!("customer:{customer_id}"),
        super::audit::NONE,
        Some(&change),
    )
    .await?;
    let account = s.store.get_account(&t, &customer_id).await?;
    Ok(Json(SetTierResult { change, account }))
}

/// A customer's tier history, newest first.
#[utoipa::path(get, path = "/v1/customers/{customer_id}/loyalty/tier-changes", tag = "loyalty",
    params(("customer_id" = String, Path)),
    responses((status = 200, body = Vec<TierChange>), (status = 404, body = ErrorBody)))]
async fn list_tier_changes(
    State(s): State<AppState>,
    auth: Auth,
    Path(customer_id): Path<String>,
) -> ApiResult<Json<Vec<TierChange>>> {
    let t = auth.read()?;
    Ok(Json(s.store.list_tier_changes(&t, &customer_id).await?))
}

/// The tenant's tiers, by rank.
#[utoipa::path(get, path = "/v1/loyalty/tiers", tag = "loyalty", responses((status = 200, body = Vec<Tier>)))]
async fn list_tiers(State(s): State<AppState>, auth: Auth) -> ApiResult<Json<Vec<Tier>>> {
    let t = auth.read()?;
    Ok(Json(s.store.list_tiers(&t).await?))
}

/// Create a tier (admin key). Names and ranks are unique per tenant.
#[utoipa::path(post, path = "/v1/loyalty/tiers", tag = "loyalty", request_body = NewTier,
    responses((status = 201, body = Tier), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_tier(
    State(s): State<AppState>,
    auth: Auth,
    Json(body): Json<NewTier>,
) -> ApiResult<(StatusCode, Json<Tier>)> {
    let t = auth.admin()?;
    let tier = s.store.create_tier(&t, body).await?;
    super::audit::record(
        &s,
        &auth,
        Some(&t),
        "tier.create",
        format!("tier:{}", tier.id),
        super::audit::NONE,
        Some(&tier),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(tier)))
}

#[utoipa::path(get, path = "/v1/loyalty/tiers/{tier_id}", tag = "loyalty", params(("tier_id" = String, Path)),
    responses((status = 200, body = Tier), (status = 404, body = ErrorBody)))]
async fn get_tier(State(s): State<AppState>, auth: Auth, Path(tier_id): Path<String>) -> ApiResult<Json<Tier>> {
    let t = auth.read()?;
    Ok(Json(s.store.get_tier(&t, &tier_id).await?))
}

/// Update a tier (admin key); absent fields are unchanged.
#[utoipa::path(patch, path = "/v1/loyalty/tiers/{tier_id}", tag = "loyalty", params(("tier_id" = String, Path)),
    request_body = TierPatch, responses((status = 200, body = Tier), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_tier(
    State(s): State<AppState>,
    auth: Auth,
    Path(tier_id): Path<String>,
    Json(body): Json<TierPatch>,
) -> ApiResult<Json<Tier>> {
    let t = auth.admin()?;
    let before = s.store.get_tier(&t, &tier_id).await?;
    let tier = s.store.update_tier(&t, &tier_id, body).await?;
    super::audit::record(
        &s,
        &auth,
        Some(&t),
        "tier.update",
        format!("tier:{tier_id}"),
        Some(&before),
        Some(&tier),
    )
    .await?;
    Ok(Json(tier))
}

/// Delete a tier no customer holds (admin key).
#[utoipa::path(delete, path = "/v1/loyalty/tiers/{tier_id}", tag = "loyalty", params(("tier_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_tier(State(s): State<AppState>, auth: Auth, Path(tier_id): Path<String>) -> ApiResult<StatusCode> {
    let t = auth.admin()?;
    let before = s.store.get_tier(&t, &tier_id).await?;
    s.store.delete_tier(&t, &tier_id).await?;
    super::audit::record(
        &s,
        &auth,
        Some(&t),
        "tier.delete",
        format!("tier:{tier_id}"),
        Some(&before),
        super::audit::NONE,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The rewards catalogue, cheapest first.
#[utoipa::path(get, path = "/v1/loyalty/rewards", tag = "loyalty", params(RewardQuery),
    responses((status = 200, body = Vec<Reward>)))]
async fn list_rewards(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<RewardQuery>,
) -> ApiResult<Json<Vec<Reward>>> {
    let t = auth.read()?;
    Ok(Json(s.store.list_rewards(&t, q.active).await?))
}

/// Add a reward (admin key).
#[utoipa::path(post, path = "/v1/loyalty/rewards", tag = "loyalty", request_body = NewReward,
    responses((status = 201, body = Reward), (status = 422, body = ErrorBody)))]
async fn create_reward(
    State(s): State<AppState>,
    auth: Auth,
    Json(body): Json<NewReward>,
) -> ApiResult<(StatusCode, Json<Reward>)> {
    let t = auth.admin()?;
    let reward = s.store.create_reward(&t, body).await?;
    super::audit::record(
        &s,
        &auth,
        Some(&t),
        "reward.create",
        format!("reward:{}", reward.id),
        super::audit::NONE,
        Some(&reward),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(reward)))
}

#[utoipa::path(get, path = "/v1/loyalty/rewards/{reward_id}", tag = "loyalty", params(("reward_id" = String, Path)),
    responses((status = 200, body = Reward), (status = 404, body = ErrorBody)))]
async fn get_reward(State(s): State<AppState>, auth: Auth, Path(reward_id): Path<String>) -> ApiResult<Json<Reward>> {
    let t = auth.read()?;
    Ok(Json(s.store.get_reward(&t, &reward_id).await?))
}

/// Update a reward (admin key); `null` clears `min_tier_rank` or `stock`.
#[utoipa::path(patch, path = "/v1/loyalty/rewards/{reward_id}", tag = "loyalty", params(("reward_id" = String, Path)),
    request_body = RewardPatch, responses((status = 200, body = Reward), (status = 404, body = ErrorBody)))]
async fn update_reward(
    State(s): State<AppState>,
    auth: Auth,
    Path(reward_id): Path<String>,
    Json(body): Json<RewardPatch>,
) -> ApiResult<Json<Reward>> {
    let t = auth.admin()?;
    let before = s.store.get_reward(&t, &reward_id).await?;
    let reward = s.store.update_reward(&t, &reward_id, body).await?;
    super::audit::record(
        &s,
        &auth,
        Some(&t),
        "reward.update",
        format!("reward:{reward_id}"),
        Some(&before),
        Some(&reward),
    )
    .await?;
    Ok(Json(reward))
}

/// Delete a never-redeemed reward (admin key); deactivate redeemed ones instead.
#[utoipa::path(delete, path = "/v1/loyalty/rewards/{reward_id}", tag = "loyalty", params(("reward_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_reward(State(s): State<AppState>, auth: Auth, Path(reward_id): Path<String>) -> ApiResult<StatusCode> {
    let t = auth.admin()?;
    let before = s.store.get_reward(&t, &reward_id).await?;
    s.store.delete_reward(&t, &reward_id).await?;
    super::audit::record(
        &s,
        &auth,
        Some(&t),
        "reward.delete",
        format!("reward:{reward_id}"),
        Some(&before),
        super::audit::NONE,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Record `expire` entries for every lot of the tenant past its expiry (admin key).
/// Writes on an account sweep it anyway; this is for schedulers and reporting.
#[utoipa::path(post, path = "/v1/loyalty/expire", tag = "loyalty", responses((status = 200, body = ExpirySweep)))]
async fn expire_points(State(s): State<AppState>, auth: Auth) -> ApiResult<Json<ExpirySweep>> {
    let t = auth.admin()?;
    Ok(Json(ExpirySweep {
        expired_entries: s.store.expire_due_points(&t).await?,
    }))
}
