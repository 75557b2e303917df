//! `GET /v1/customers/{id}/referrals`: who referred a customer and the tree
//! of customers it referred, with each referral's credit (see
//! `store::referrals`). Referrals are recorded as `referral` interactions.
//! Any tenant key reads.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Auth, Json, Path};
use super::{ApiResult, AppState};
use crate::store::referrals::ReferralTree;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(referral_tree))
}

/// A customer's referrer and referral tree (10 levels, 1,000 customers at most).
#[utoipa::path(get, path = "/v1/customers/{id}/referrals", tag = "playbook", params(("id" = String, Path)),
    responses((status = 200, body = ReferralTree), (status = 404, body = ErrorBody)))]
async fn referral_tree(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<Json<ReferralTree>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.referral_tree(&tenant, &id).await?))
}
