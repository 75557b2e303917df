//! Store: the tenant's product catalogue, keyed by SKU. Interaction line
//! items name SKUs as free text (no foreign key): a purchase of a product
//! that was never catalogued, or was later deleted, is still history.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::interactions::MAX_SKU_CHARS;
use super::money::{Money, MoneyInput};
use super::sql::{Arg, Sql, page_limit};
use super::{
    Page, Store, StoreError, StoreResult, TenantId, cursor, from_millis, is_unique_violation, json_column, now_ms,
};

pub const MAX_PRODUCT_NAME_CHARS: usize = 200;
pub const MAX_CATEGORY_CHARS: usize = 100;
pub const MAX_PRODUCT_ATTRIBUTES_BYTES: usize = 16 * 1024;

/// A product to create (`POST /v1/products`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    #[serde(default)]
    pub category: Option<String>,
    /// `{"currency":"USD","amount":"9.99"}`; not negative.
    pub price: MoneyInput,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

impl NewProduct {
    /// Splits off the SKU (serde cannot combine `flatten` with `deny_unknown_fields`).
    pub fn into_parts(self) -> (String, ProductFields) {
        let NewProduct {
            sku,
            name,
            category,
            price,
            attributes,
        } = self;
        (
            sku,
            ProductFields {
                name,
                category,
                price,
                attributes,
            },
        )
    }
}

/// Everything about a product but its SKU (the body of `PUT /v1/products/{sku}`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductFields {
    pub name: String,
    #[serde(default)]
    pub category: Option<String>,
    /// `{"currency":"USD","amount":"9.99"}`; not negative.
    pub price: MoneyInput,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub category: Option<String>,
    pub price: Money,
    #[schema(value_type = Object)]
    pub attributes: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Default)]
pub struct ProductFilter {
    pub category: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

const COLUMNS: &str = "sku, name, category, price_minor, currency, attributes, created_at, updated_at";

fn product_from_row(row: &AnyRow) -> StoreResult<Product> {
    let currency: String = row.try_get("currency")?;
    let attributes: String = row.try_get("attributes")?;
    Ok(Product {
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        category: row.try_get("category")?,
        price: Money::stored(&currency, row.try_get("price_minor")?)?,
        attributes: json_column(&attributes)?,
        created_at: from_millis(row.try_get("created_at")?),
        updated_at: from_millis(row.try_get("updated_at")?),
    })
}

pub fn validate_product_sku(sku: &str) -> StoreResult<()> {
    let n = sku.chars().count();
    if n == 0 || n > MAX_SKU_CHARS || sku.chars().any(|c| c.is_control() || c.is_whitespace() || c == '/') {
        return Err(StoreError::invalid(
            "sku",
            format!("must be 1 to {MAX_SKU_CHARS} characters without spaces, slashes or control characters"),
        ));
    }
    Ok(())
}

/// Validated column values of a product.
struct Validated {
    name: String,
    category: Option<String>,
    price: Money,
    attributes: Value,
    attributes_text: String,
}

fn validate(fields: ProductFields) -> StoreResult<Validated> {
    let name = fields.name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_PRODUCT_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            "name",
            format!("must be 1 to {MAX_PRODUCT_NAME_CHARS} characters"),
        ));
    }
    let category = match fields.category.map(|c| c.trim().to_string()).filter(|c| !c.is_empty()) {
        Some(c) if c.chars().count() > MAX_CATEGORY_CHARS || c.chars().any(char::is_control) => {
            return Err(StoreError::invalid(
                "category",
                format!("must be at most {MAX_CATEGORY_CHARS} characters"),
            ));
        }
        other => other,
    };
    let price = fields.price.validate("price")?;
    if price.amount_minor < 0 {
        return Err(StoreError::invalid("price.amount", "must not be negative"));
    }
    let attributes = Value::Object(fields.attributes);
    let attributes_text = attributes.to_string();
    if attributes_text.len() > MAX_PRODUCT_ATTRIBUTES_BYTES {
        return Err(StoreError::invalid(
            "attributes",
            format!("must be at most {MAX_PRODUCT_ATTRIBUTES_BYTES} bytes serialized"),
        ));
    }
    Ok(Validated {
        name,
        category,
        price,
        attributes,
        attributes_text,
    })
}

impl Store {
    /// Creates a product; 409 `product_exists` if the SKU is taken.
    pub async fn create_product(&self, tenant: &TenantId, new: NewProduct) -> StoreResult<Product> {
        let (sku, fields) = new.into_parts();
        validate_product_sku(&sku)?;
        let v = validate(fields)?;
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO products (tenant_id, sku, name, category, price_minor, currency, attributes, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(tenant.as_str())
        .bind(&sku)
        .bind(&v.name)
        .bind(&v.category)
        .bind(v.price.amount_minor)
        .bind(&v.price.currency)
        .bind(&v.attributes_text)
        .bind(now)
        .execute(self.db().pool())
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::conflict(
                    "product_exists",
                    format!("a product with sku {sku:?} already exists"),
                ));
            }
            other => other?,
        };
        Ok(Product {
            sku,
            name: v.name,
            category: v.category,
            price: v.price,
            attributes: v.attributes,
            created_at: from_millis(now),
            updated_at: from_millis(now),
        })
    }

    /// Creates or replaces a product; `true` when it was created. The write
    /// is `ON CONFLICT DO UPDATE` (both backends), so two concurrent PUTs
    /// never fail, and the original `created_at` is kept.
    pub async fn upsert_product(
        &self,
        tenant: &TenantId,
        sku: &str,
        fields: ProductFields,
    ) -> StoreResult<(Product, bool)> {
        validate_product_sku(sku)?;
        let v = validate(fields)?;
        let now = now_ms();
        let mut tx = self.db().begin_write().await?;
        let existed = sqlx::query("SELECT sku FROM products WHERE tenant_id = $1 AND sku = $2")
            .bind(tenant.as_str())
            .bind(sku)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        let row = sqlx::query(&format!(
            "INSERT INTO products (tenant_id, sku, name, category, price_minor, currency, attributes, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (tenant_id, sku) DO UPDATE SET name = excluded.name, category = excluded.category, \
             price_minor = excluded.price_minor, currency = excluded.currency, attributes = excluded.attributes, \
             updated_at = excluded.updated_at \
             RETURNING {COLUMNS}"
        ))
        .bind(tenant.as_str())
        .bind(sku)
        .bind(&v.name)
        .bind(&v.category)
        .bind(v.price.amount_minor)
        .bind(&v.price.currency)
        .bind(&v.attributes_text)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let product = product_from_row(&row)?;
        tx.commit().await?;
        Ok((product, !existed))
    }

    pub async fn get_product(&self, tenant: &TenantId, sku: &str) -> StoreResult<Product> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM products WHERE tenant_id = $1 AND sku = $2"
        ))
        .bind(tenant.as_str())
        .bind(sku)
        .fetch_optional(self.db().pool())
        .await?
        .ok_or(StoreError::NotFound { entity: "product" })?;
        product_from_row(&row)
    }

    pub async fn delete_product(&self, tenant: &TenantId, sku: &str) -> StoreResult<()> {
        let deleted = sqlx::query("DELETE FROM products WHERE tenant_id = $1 AND sku = $2")
            .bind(tenant.as_str())
            .bind(sku)
            .execute(self.db().pool())
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound { entity: "product" });
        }
        Ok(())
    }

    /// Products by SKU, optionally of one category.
    pub async fn list_products(&self, tenant: &TenantId, filter: ProductFilter) -> StoreResult<Page<Product>> {
        let limit = page_limit(filter.limit)?;
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM products WHERE tenant_id = "));
        let p = sql.arg(Arg::Text(tenant.0.clone()));
        sql.push(&p);
        if let Some(c) = &filter.cursor {
            let (after,): (String,) = cursor::decode(c)?;
            let p = sql.arg(Arg::Text(after));
            sql.push(&format!(" AND sku > {p}"));
        }
        if let Some(category) = filter.category {
            let p = sql.arg(Arg::Text(category));
            sql.push(&format!(" AND category = {p}"));
        }
        let p = sql.arg(Arg::Int(limit + 1));
        sql.push(&format!(" ORDER BY sku LIMIT {p}"));
        let rows = sql.query().fetch_all(self.db().pool()).await?;
        let mut items = rows.iter().map(product_from_row).collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|p| cursor::encode(&(p.sku.clone(),)))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}

impl Store {
    /// Which of `skus` the tenant's catalogue holds: what a plugin's
    /// recommendations are checked against. One query per 500 SKUs, so a
    /// plugin returning thousands stays under the backends' parameter caps.
    pub async fn known_skus(
        &self,
        tenant: &TenantId,
        skus: &[String],
    ) -> StoreResult<std::collections::HashSet<String>> {
        let mut known = std::collections::HashSet::new();
        for chunk in skus.chunks(500) {
            let mut sql = Sql::new("SELECT sku FROM products WHERE tenant_id = ");
            let p = sql.arg(Arg::Text(tenant.0.clone()));
            sql.push(&p);
            sql.push(" AND sku IN (");
            for (i, sku) in chunk.iter().enumerate() {
                let p = sql.arg(Arg::Text(sku.clone()));
                if i > 0 {
                    sql.push(", ");
                }
                sql.push(&p);
            }
            sql.push(")");
            for row in sql.query().fetch_all(self.db().pool()).await? {
                known.insert(row.try_get("sku")?);
            }
        }
        Ok(known)
    }
}
