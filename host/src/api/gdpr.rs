//! /v1 GDPR endpoints: export everything held on a customer, and erase their
//! personal data. Both need an admin key: an export is a full copy of one
//! person's data, and erasure cannot be undone.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Auth, Json, Path};
use super::{ApiResult, AppState};
use crate::store::gdpr::{CustomerExport, Erasure};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export_customer))
        .routes(routes!(erase_customer))
}

/// Everything held on one customer as one JSON document (admin key): the
/// customer record, interactions with line items and payloads, the loyalty
/// account, full ledger, allocations and tier changes.
#[utoipa::path(get, path = "/v1/customers/{customer_id}/export", tag = "gdpr",
    params(("customer_id" = String, Path)),
    responses((status = 200, body = CustomerExport), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn export_customer(
    State(s): State<AppState>,
    auth: Auth,
    Path(customer_id): Path<String>,
) -> ApiResult<Json<CustomerExport>> {
    let t = auth.admin()?;
    let export = s.store.export_customer(&t, &customer_id).await?;
    // Who exported whom; never the exported data itself.
    let target = format!("customer:{customer_id}");
    super::audit::record(
        &s,
        &auth,
        Some(&t),
        "gdpr.export",
        target,
        super::audit::NONE,
        super::audit::NONE,
    )
    .await?;
    Ok(Json(export))
}

/// Erase a customer's personal data (admin key). Name, email, phone and
/// attributes are cleared, the external id becomes `erased:<id>`, interaction
/// payloads are emptied; amounts, kinds, times, channels, line items and the
/// loyalty ledger are kept. Idempotent.
#[utoipa::path(post, path = "/v1/customers/{customer_id}/erase", tag = "gdpr",
    params(("customer_id" = String, Path)),
    responses((status = 200, body = Erasure), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn erase_customer(
    State(s): State<AppState>,
    auth: Auth,
    Path(customer_id): Path<String>,
) -> ApiResult<Json<Erasure>> {
    let t = auth.admin()?;
    let erasure = s.store.erase_customer(&t, &customer_id).await?;
    let target = format!("customer:{customer_id}");
    super::audit::record(
        &s,
        &auth,
        Some(&t),
        "gdpr.erase",
        target,
        super::audit::NONE,
        Some(&erasure),
    )
    .await?;
    Ok(Json(erasure))
}
