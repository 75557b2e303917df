//! /v1 products endpoints: the tenant's catalogue by SKU. `PUT` is an
//! upsert (201 created, 200 replaced), convenient for catalogue syncs.
//!
//! Roles: reading needs any tenant key, every change a write key.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Auth, Json, Path, Query};
use super::{ApiResult, AppState};
use crate::store::Page;
use crate::store::products::{NewProduct, Product, ProductFields, ProductFilter};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_product, list_products))
        .routes(routes!(get_product, put_product, delete_product))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListProductsQuery {
    /// Exact category.
    pub category: Option<String>,
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Create a product. 409 `product_exists` if the SKU is taken.
#[utoipa::path(post, path = "/v1/products", tag = "products", request_body = NewProduct,
    responses((status = 201, body = Product), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_product(
    State(s): State<AppState>,
    auth: Auth,
    Json(body): Json<NewProduct>,
) -> ApiResult<(StatusCode, Json<Product>)> {
    let tenant = auth.write()?;
    Ok((StatusCode::CREATED, Json(s.store.create_product(&tenant, body).await?)))
}

/// List products by SKU.
#[utoipa::path(get, path = "/v1/products", tag = "products", params(ListProductsQuery),
    responses((status = 200, body = Page<Product>), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_products(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<ListProductsQuery>,
) -> ApiResult<Json<Page<Product>>> {
    let tenant = auth.read()?;
    let filter = ProductFilter {
        category: q.category,
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(Json(s.store.list_products(&tenant, filter).await?))
}

#[utoipa::path(get, path = "/v1/products/{sku}", tag = "products", params(("sku" = String, Path)),
    responses((status = 200, body = Product), (status = 404, body = ErrorBody)))]
async fn get_product(State(s): State<AppState>, auth: Auth, Path(sku): Path<String>) -> ApiResult<Json<Product>> {
    let tenant = auth.read()?;
    Ok(Json(s.store.get_product(&tenant, &sku).await?))
}

/// Create or replace a product.
#[utoipa::path(put, path = "/v1/products/{sku}", tag = "products", params(("sku" = String, Path)),
    request_body = ProductFields,
    responses((status = 201, description = "Created", body = Product), (status = 200, description = "Replaced", body = Product),
        (status = 422, body = ErrorBody)))]
async fn put_product(
    State(s): State<AppState>,
    auth: Auth,
    Path(sku): Path<String>,
    Json(body): Json<ProductFields>,
) -> ApiResult<(StatusCode, Json<Product>)> {
    let tenant = auth.write()?;
    let (product, created) = s.store.upsert_product(&tenant, &sku, body).await?;
    Ok((
        if created { StatusCode::CREATED } else { StatusCode::OK },
        Json(product),
    ))
}

#[utoipa::path(delete, path = "/v1/products/{sku}", tag = "products", params(("sku" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_product(State(s): State<AppState>, auth: Auth, Path(sku): Path<String>) -> ApiResult<StatusCode> {
    let tenant = auth.write()?;
    s.store.delete_product(&tenant, &sku).await?;
    Ok(StatusCode::NO_CONTENT)
}
