//! /v1 customers endpoints: create, read (with statistics), look up by
//! external id, merge-patch, delete (only without history) and list (with
//! the filtered plugin's stored score on each customer when filtered by
//! `score_plugin`).
//!
//! Roles: reading needs any tenant key, every change a write key. Deleting a
//! customer with history is refused with 409 `customer_has_history`: removing
//! personal data while keeping history is GDPR erasure (`/v1/gdpr`).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Auth, Json, Path, Query};
use super::{ApiResult, AppState};
use crate::store::Page;
use crate::store::customers::{Customer, CustomerFilter, CustomerPatch, CustomerStats, NewCustomer};
use crate::store::scores::StoredScore;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_customer, list_customers))
        .routes(routes!(get_customer, update_customer, delete_customer))
        .routes(routes!(get_customer_by_external_id))
}

/// A customer with its statistics (`GET /v1/customers/{id}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerWithStats {
    #[serde(flatten)]
    pub customer: Customer,
    pub stats: CustomerStats,
}

/// A customer in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerListItem {
    #[serde(flatten)]
    pub customer: Customer,
    /// Present when the list is filtered by `score_plugin`: that plugin's
    /// stored score of this customer, the one the filters matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<StoredScore>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListCustomersQuery {
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Exact external id.
    pub external_id: Option<String>,
    /// Exact email, case-insensitive.
    pub email: Option<String>,
    /// Case-insensitive substring of name or email.
    pub q: Option<String>,
    /// Created strictly after this RFC 3339 time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub created_after: Option<OffsetDateTime>,
    /// Created strictly before this RFC 3339 time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub created_before: Option<OffsetDateTime>,
    /// Updated strictly after this RFC 3339 time (incremental sync).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub updated_after: Option<OffsetDateTime>,
    /// Only customers with a stored score of this scoring plugin (see
    /// `/v1/customers/{id}/scores`); needed by the three filters below.
    pub score_plugin: Option<String>,
    /// `score_plugin`'s stored segment, exactly (e.g. `Champions`).
    pub segment: Option<String>,
    /// `score_plugin`'s stored score at least this (inclusive).
    pub min_score: Option<f64>,
    /// `score_plugin`'s stored score at most this (inclusive).
    pub max_score: Option<f64>,
}

/// Create a customer. 409 `customer_exists` if the external id is taken.
#[utoipa::path(post, path = "/v1/customers", tag = "customers", request_body = NewCustomer,
    responses((status = 201, body = Customer), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_customer(
    State(s): State<AppState>,
    auth: Auth,
    Json(body): Json<NewCustomer>,
) -> ApiResult<(StatusCode, Json<Customer>)> {
    let tenant = auth.write()?;
    Ok((StatusCode::CREATED, Json(s.store.create_customer(&tenant, body).await?)))
}

/// List customers by id, with optional filters and cursor pagination.
/// Filtered by `score_plugin`, each customer carries that plugin's stored
/// `score`.
#[utoipa::path(get, path = "/v1/customers", tag = "customers", params(ListCustomersQuery),
    responses((status = 200, body = Page<CustomerListItem>), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_customers(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<ListCustomersQuery>,
) -> ApiResult<Json<Page<CustomerListItem>>> {
    let tenant = auth.read()?;
    let score_plugin = q.score_plugin.clone();
    let filter = CustomerFilter {
        external_id: q.external_id,
        email: q.email,
        q: q.q,
        created_after: q.created_after,
        created_before: q.created_before,
        updated_after: q.updated_after,
        score_plugin: q.score_plugin,
        segment: q.segment,
        min_score: q.min_score,
        max_score: q.max_score,
        limit: q.limit,
        cursor: q.cursor,
    };
    let page = s.store.list_customers(&tenant, filter).await?;
    // The page's scores in one read (a page is at most 500 customers). A
    // score deleted between the two reads leaves `score` out.
    let mut scores = match &score_plugin {
        Some(plugin) => {
            let ids: Vec<String> = page.items.iter().map(|c| c.id.clone()).collect();
            s.store.plugin_scores_of(&tenant, plugin, &ids).await?
        }
        None => Default::default(),
    };
    Ok(Json(Page {
        items: page
            .items
            .into_iter()
            .map(|customer| CustomerListItem {
                score: scores.remove(&customer.id),
                customer,
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A customer and its statistics (interaction counts, spend per currency, ...).
#[utoipa::path(get, path = "/v1/customers/{id}", tag = "customers", params(("id" = String, Path)),
    responses((status = 200, body = CustomerWithStats), (status = 404, body = ErrorBody)))]
async fn get_customer(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<CustomerWithStats>> {
    let tenant = auth.read()?;
    let customer = s.store.get_customer(&tenant, &id).await?;
    let stats = s.store.customer_stats(&tenant, &id).await?;
    Ok(Json(CustomerWithStats { customer, stats }))
}

/// Find a customer by the tenant's own external id.
#[utoipa::path(get, path = "/v1/customers/by-external-id/{external_id}", tag = "customers",
    params(("external_id" = String, Path)), responses((status = 200, body = Customer), (status = 404, body = ErrorBody)))]
async fn get_customer_by_external_id(
    State(s): State<AppState>,
    auth: Auth,
    Path(external_id): Path<String>,
) -> ApiResult<Json<Customer>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.get_customer_by_external_id(&tenant, &external_id).await?))
}

/// Update a customer with JSON merge-patch semantics: absent fields stay,
/// `null` clears, `attributes` merges key by key (`null` deletes a key).
#[utoipa::path(patch, path = "/v1/customers/{id}", tag = "customers", params(("id" = String, Path)),
    request_body(content = CustomerPatch, content_type = "application/merge-patch+json"),
    responses((status = 200, body = Customer), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn update_customer(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Json(patch): Json<CustomerPatch>,
) -> ApiResult<Json<Customer>> {
    let tenant = auth.write()?;
    Ok(Json(s.store.update_customer(&tenant, &id, patch).await?))
}

/// Delete a customer without history (no interactions, no loyalty account).
#[utoipa::path(delete, path = "/v1/customers/{id}", tag = "customers", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_customer(State(s): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let tenant = auth.write()?;
    s.store.delete_customer(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
