//! Store: customers. Create, look up (by id or by the tenant's own external
//! id), merge-patch, delete (only without history: erasure is GDPR's job),
//! list with filters and cursor pagination, and per-customer statistics.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::money::Money;
use super::sql::{Arg, Sql, like_escape, page_limit};
use super::{
    Page, Store, StoreError, StoreResult, TenantId, cursor, from_millis, is_unique_violation, json_column, millis,
    new_id, now_ms,
};

pub const MAX_EXTERNAL_ID_CHARS: usize = 200;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_EMAIL_CHARS: usize = 254;
pub const MAX_PHONE_CHARS: usize = 64;
/// Attributes are free-form but bounded, so one customer cannot bloat every
/// list page that includes it.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    /// The tenant's own identifier for this customer (1-200 characters), unique per tenant.
    pub external_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    /// Free-form JSON object, at most 16 KiB serialized.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

impl NewCustomer {
    /// A customer known only by its external id (what ingest creates on the fly).
    pub fn with_external_id(external_id: impl Into<String>) -> NewCustomer {
        NewCustomer {
            external_id: external_id.into(),
            name: None,
            email: None,
            phone: None,
            attributes: Map::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Customer {
    pub id: String,
    pub external_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Set once the customer's personal data has been erased (GDPR).
    #[serde(with = "time::serde::rfc3339::option")]
    pub erased_at: Option<OffsetDateTime>,
}

/// Aggregates over a customer's interactions. Spend counts `purchase`
/// interactions only, one total per currency (never converted).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CustomerStats {
    pub interaction_count: i64,
    pub purchase_count: i64,
    pub total_spend: Vec<Money>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub first_purchase_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_purchase_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_interaction_at: Option<OffsetDateTime>,
}

/// A JSON merge-patch (RFC 7386) of a customer: absent fields are left
/// alone, `null` clears a field, an `attributes` object is merged key by key
/// (`null` values delete keys).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerPatch {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub external_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Option<Value>>,
}

/// Tells "field absent" (outer `None`, via `#[serde(default)]`) from
/// "field is null" (`Some(None)`), which merge-patch gives different meanings.
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Filters of the customer list; all optional and combined with AND.
#[derive(Debug, Clone, Default)]
pub struct CustomerFilter {
    pub external_id: Option<String>,
    /// Exact match, case-insensitive.
    pub email: Option<String>,
    /// Case-insensitive substring of name or email.
    pub q: Option<String>,
    pub created_after: Option<OffsetDateTime>,
    pub created_before: Option<OffsetDateTime>,
    pub updated_after: Option<OffsetDateTime>,
    /// Only customers with a stored score of this plugin; `segment`,
    /// `min_score` and `max_score` refine it and need it.
    pub score_plugin: Option<String>,
    /// Exact segment of `score_plugin`'s current score.
    pub segment: Option<String>,
    /// `score_plugin`'s current score at least this (inclusive).
    pub min_score: Option<f64>,
    /// `score_plugin`'s current score at most this (inclusive).
    pub max_score: Option<f64>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

const COLUMNS: &str = "id, external_id, name, email, phone, attributes, created_at, updated_at, erased_at";

fn customer_from_row(row: &AnyRow) -> StoreResult<Customer> {
    let attributes: String = row.try_get("attributes")?;
    let erased: Option<i64> = row.try_get("erased_at")?;
    Ok(Customer {
        id: row.try_get("id")?,
        external_id: row.try_get("external_id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        phone: row.try_get("phone")?,
        attributes: json_column(&attributes)?,
        created_at: from_millis(row.try_get("created_at")?),
        updated_at: from_millis(row.try_get("updated_at")?),
        erased_at: erased.map(from_millis),
    })
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

pub fn validate_external_id(external_id: &str) -> StoreResult<()> {
    let chars = external_id.chars().count();
    if chars == 0 || chars > MAX_EXTERNAL_ID_CHARS || has_control(external_id) || external_id.trim().is_empty() {
        return Err(StoreError::invalid(
            "external_id",
            format!("must be 1 to {MAX_EXTERNAL_ID_CHARS} characters, not blank, without control characters"),
        ));
    }
    Ok(())
}

/// Trims an optional text field; blank becomes `None`.
fn optional_text(field: &str, value: Option<String>, max_chars: usize) -> StoreResult<Option<String>> {
    let Some(value) = value else { return Ok(None) };
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.chars().count() > max_chars || has_control(value) {
        return Err(StoreError::invalid(
            field,
            format!("must be at most {max_chars} characters, without control characters"),
        ));
    }
    Ok(Some(value.to_string()))
}

/// A rough email check on purpose: real validation is sending a message.
fn validate_email(email: Option<String>) -> StoreResult<Option<String>> {
    let email = optional_text("email", email, MAX_EMAIL_CHARS)?;
    if let Some(e) = &email {
        let ok = match e.split_once('@') {
            Some((local, domain)) => !local.is_empty() && !domain.is_empty() && !e.contains(char::is_whitespace),
            None => false,
        };
        if !ok {
            return Err(StoreError::invalid("email", "is not an email address"));
        }
    }
    Ok(email)
}

fn attributes_text(attributes: &Value) -> StoreResult<String> {
    if !attributes.is_object() {
        return Err(StoreError::invalid("attributes", "must be a JSON object"));
    }
    let text = attributes.to_string();
    if text.len() > MAX_ATTRIBUTES_BYTES {
        return Err(StoreError::invalid(
            "attributes",
            format!("must be at most {MAX_ATTRIBUTES_BYTES} bytes serialized"),
        ));
    }
    Ok(text)
}

/// A validated, normalized new customer row.
struct CustomerRow {
    customer: Customer,
    attributes_text: String,
}

fn prepare(new: NewCustomer) -> StoreResult<CustomerRow> {
    validate_external_id(&new.external_id)?;
    let attributes = Value::Object(new.attributes);
    let attributes_text = attributes_text(&attributes)?;
    let now = from_millis(now_ms());
    Ok(CustomerRow {
        customer: Customer {
            id: new_id(),
            external_id: new.external_id,
            name: optional_text("name", new.name, MAX_NAME_CHARS)?,
            email: validate_email(new.email)?,
            phone: optional_text("phone", new.phone, MAX_PHONE_CHARS)?,
            attributes,
            created_at: now,
            updated_at: now,
            erased_at: None,
        },
        attributes_text,
    })
}

/// RFC 7386 merge-patch of `target` by `patch`.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn exists_conflict(external_id: &str) -> StoreError {
    StoreError::conflict(
        "customer_exists",
        format!("a customer with external_id {external_id:?} already exists"),
    )
}

/// Reads one customer on an existing connection (inside a transaction, say).
pub async fn get_customer_tx(conn: &mut AnyConnection, tenant: &TenantId, id: &str) -> StoreResult<Customer> {
    customer_where(conn, tenant, "id", id).await
}

pub async fn get_customer_by_external_id_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    external_id: &str,
) -> StoreResult<Customer> {
    customer_where(conn, tenant, "external_id", external_id).await
}

/// The tenant's customer whose unique `column` (`id` or `external_id`)
/// equals `value`.
async fn customer_where(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    column: &'static str,
    value: &str,
) -> StoreResult<Customer> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM customers WHERE tenant_id = $1 AND {column} = $2"
    ))
    .bind(tenant.as_str())
    .bind(value)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound { entity: "customer" })?;
    customer_from_row(&row)
}

/// Creates the customer unless one with the same external id exists, in
/// which case that one is returned untouched (`false`). Race-safe: the
/// unique constraint decides, and the loser reads the winner's row.
pub async fn ensure_customer_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    new: NewCustomer,
) -> StoreResult<(Customer, bool)> {
    let row = prepare(new)?;
    let c = &row.customer;
    let inserted = sqlx::query(
        "INSERT INTO customers (tenant_id, id, external_id, name, email, phone, attributes, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (tenant_id, external_id) DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(&c.id)
    .bind(&c.external_id)
    .bind(&c.name)
    .bind(&c.email)
    .bind(&c.phone)
    .bind(&row.attributes_text)
    .bind(millis(c.created_at))
    .bind(millis(c.updated_at))
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok((row.customer, true));
    }
    let existing = get_customer_by_external_id_tx(conn, tenant, &row.customer.external_id).await?;
    Ok((existing, false))
}

/// What [`ensure_customers_tx`] found or made for one customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    pub id: String,
    /// Whether this call created it (`false`: it existed, left untouched).
    pub created: bool,
    /// Whether its personal data was erased (it takes no new interactions).
    pub erased: bool,
}

const BULK_COLUMNS: [super::bulk::Column; 9] = [
    super::bulk::text("tenant_id"),
    super::bulk::text("id"),
    super::bulk::text("external_id"),
    super::bulk::text("name"),
    super::bulk::text("email"),
    super::bulk::text("phone"),
    super::bulk::text("attributes"),
    super::bulk::bigint("created_at"),
    super::bulk::bigint("updated_at"),
];

/// [`ensure_customer_tx`] for many customers at once (imports): the valid
/// ones inserted with multi-row statements in external-id order (so two
/// concurrent imports take the unique index's locks in one order), then
/// the ones that already existed read back in one pass. Each slot holds the
/// customer's outcome or why its row is invalid; a later slot naming the
/// same external id as an earlier one gets that customer, not created.
pub async fn ensure_customers_tx(
    conn: &mut AnyConnection,
    backend: crate::db::Backend,
    tenant: &TenantId,
    news: Vec<NewCustomer>,
) -> StoreResult<Vec<StoreResult<Ensured>>> {
    use super::bulk::{Cell, insert, select_in, texts};
    use std::collections::{BTreeMap, HashMap, HashSet};
    let mut results: Vec<Option<StoreResult<Ensured>>> = Vec::with_capacity(news.len());
    // External id -> (first slot naming it, its prepared row).
    let mut first: BTreeMap<String, (usize, CustomerRow)> = BTreeMap::new();
    let mut repeats: Vec<(usize, String)> = Vec::new();
    for (slot, new) in news.into_iter().enumerate() {
        results.push(None);
        match prepare(new) {
            Err(e) => results[slot] = Some(Err(e)),
            Ok(row) => match first.entry(row.customer.external_id.clone()) {
                std::collections::btree_map::Entry::Occupied(e) => repeats.push((slot, e.key().clone())),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert((slot, row));
                }
            },
        }
    }
    let rows: Vec<Vec<Cell>> = first
        .values()
        .map(|(_, row)| {
            let c = &row.customer;
            vec![
                Cell::Text(Some(tenant.0.clone())),
                Cell::Text(Some(c.id.clone())),
                Cell::Text(Some(c.external_id.clone())),
                Cell::Text(c.name.clone()),
                Cell::Text(c.email.clone()),
                Cell::Text(c.phone.clone()),
                Cell::Text(Some(row.attributes_text.clone())),
                Cell::Int(Some(millis(c.created_at))),
                Cell::Int(Some(millis(c.updated_at))),
            ]
        })
        .collect();
    let inserted = insert(
        conn,
        backend,
        "customers",
        &BULK_COLUMNS,
        &rows,
        "ON CONFLICT (tenant_id, external_id) DO NOTHING RETURNING external_id",
    )
    .await?;
    let inserted: HashSet<String> = texts(&inserted, "external_id")?.into_iter().collect();
    let existing: Vec<&str> = first
        .keys()
        .filter(|e| !inserted.contains(*e))
        .map(String::as_str)
        .collect();
    let mut found: HashMap<String, (String, bool)> = HashMap::with_capacity(existing.len());
    for row in select_in(
        conn,
        tenant.as_str(),
        "customers",
        "id, external_id, erased_at",
        "external_id",
        &existing,
    )
    .await?
    {
        let erased: Option<i64> = row.try_get("erased_at")?;
        found.insert(row.try_get("external_id")?, (row.try_get("id")?, erased.is_some()));
    }
    let mut by_external: HashMap<String, Ensured> = HashMap::with_capacity(first.len());
    for (external_id, (slot, row)) in first {
        let ensured = if inserted.contains(&external_id) {
            Ensured {
                id: row.customer.id,
                created: true,
                erased: false,
            }
        } else {
            let (id, erased) = found
                .get(&external_id)
                .cloned()
                .ok_or_else(|| StoreError::Corrupt(format!("customer {external_id:?} conflicted but is not stored")))?;
            Ensured {
                id,
                created: false,
                erased,
            }
        };
        results[slot] = Some(Ok(ensured.clone()));
        by_external.insert(external_id, ensured);
    }
    for (slot, external_id) in repeats {
        let ensured = by_external
            .get(&external_id)
            .map(|e| Ensured {
                created: false,
                ..e.clone()
            })
            .ok_or_else(|| StoreError::Corrupt(format!("customer {external_id:?} lost in a bulk ensure")))?;
        results[slot] = Some(Ok(ensured));
    }
    results
        .into_iter()
        .map(|r| r.ok_or_else(|| StoreError::Corrupt("a bulk ensure left a slot empty".into())))
        .collect()
}

/// The stored-score filters of the customer list: an `EXISTS` on the
/// customer's current score of `score_plugin` (a primary-key lookup).
fn push_score_filter(sql: &mut Sql, filter: &CustomerFilter) -> StoreResult<()> {
    let Some(plugin) = &filter.score_plugin else {
        for (field, given) in [
            ("segment", filter.segment.is_some()),
            ("min_score", filter.min_score.is_some()),
            ("max_score", filter.max_score.is_some()),
        ] {
            if given {
                return Err(StoreError::invalid(
                    field,
                    "needs score_plugin (whose score to filter on)",
                ));
            }
        }
        return Ok(());
    };
    for (field, bound) in [("min_score", filter.min_score), ("max_score", filter.max_score)] {
        if bound.is_some_and(|b| !b.is_finite()) {
            return Err(StoreError::invalid(field, "must be a finite number"));
        }
    }
    let p = sql.arg(Arg::Text(plugin.clone()));
    sql.push(&format!(
        " AND EXISTS (SELECT 1 FROM customer_scores s WHERE s.tenant_id = customers.tenant_id \
         AND s.customer_id = customers.id AND s.plugin_id = {p}"
    ));
    if let Some(segment) = &filter.segment {
        let p = sql.arg(Arg::Text(segment.clone()));
        sql.push(&format!(" AND s.segment = {p}"));
    }
    if let Some(min) = filter.min_score {
        let p = sql.arg(Arg::Float(min));
        sql.push(&format!(" AND s.value >= {p}"));
    }
    if let Some(max) = filter.max_score {
        let p = sql.arg(Arg::Float(max));
        sql.push(&format!(" AND s.value <= {p}"));
    }
    sql.push(")");
    Ok(())
}

impl Store {
    /// [`ensure_customers_tx`] in a write transaction of its own.
    pub async fn ensure_customers(
        &self,
        tenant: &TenantId,
        news: Vec<NewCustomer>,
    ) -> StoreResult<Vec<StoreResult<Ensured>>> {
        let mut tx = self.db().begin_write().await?;
        let results = ensure_customers_tx(&mut tx, self.db().backend(), tenant, news).await?;
        tx.commit().await?;
        Ok(results)
    }
}

impl Store {
    pub async fn create_customer(&self, tenant: &TenantId, new: NewCustomer) -> StoreResult<Customer> {
        let row = prepare(new)?;
        let c = &row.customer;
        let inserted = sqlx::query(
            "INSERT INTO customers (tenant_id, id, external_id, name, email, phone, attributes, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(tenant.as_str())
        .bind(&c.id)
        .bind(&c.external_id)
        .bind(&c.name)
        .bind(&c.email)
        .bind(&c.phone)
        .bind(&row.attributes_text)
        .bind(millis(c.created_at))
        .bind(millis(c.updated_at))
        .execute(self.db().pool())
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => Err(exists_conflict(&c.external_id)),
            Err(e) => Err(e.into()),
            Ok(_) => Ok(row.customer),
        }
    }

    pub async fn get_customer(&self, tenant: &TenantId, id: &str) -> StoreResult<Customer> {
        let mut conn = self.db().pool().acquire().await?;
        get_customer_tx(&mut conn, tenant, id).await
    }

    pub async fn get_customer_by_external_id(&self, tenant: &TenantId, external_id: &str) -> StoreResult<Customer> {
        let mut conn = self.db().pool().acquire().await?;
        get_customer_by_external_id_tx(&mut conn, tenant, external_id).await
    }

    /// Creates, or returns the existing one untouched; `true` when created.
    pub async fn ensure_customer(&self, tenant: &TenantId, new: NewCustomer) -> StoreResult<(Customer, bool)> {
        let mut conn = self.db().pool().acquire().await?;
        ensure_customer_tx(&mut conn, tenant, new).await
    }

    /// Applies a merge-patch. The row is locked first (a no-op UPDATE, the
    /// one row lock both backends understand) so concurrent patches of
    /// `attributes` merge instead of overwriting each other.
    pub async fn update_customer(&self, tenant: &TenantId, id: &str, patch: CustomerPatch) -> StoreResult<Customer> {
        let mut tx = self.db().begin_write().await?;
        let locked = sqlx::query("UPDATE customers SET updated_at = updated_at WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Err(StoreError::NotFound { entity: "customer" });
        }
        let mut c = get_customer_tx(&mut tx, tenant, id).await?;
        if c.erased_at.is_some() {
            return Err(StoreError::conflict(
                "customer_erased",
                "this customer's data has been erased",
            ));
        }
        match patch.external_id {
            None => {}
            Some(None) => return Err(StoreError::invalid("external_id", "cannot be removed")),
            Some(Some(external_id)) => {
                validate_external_id(&external_id)?;
                c.external_id = external_id;
            }
        }
        if let Some(name) = patch.name {
            c.name = optional_text("name", name, MAX_NAME_CHARS)?;
        }
        if let Some(email) = patch.email {
            c.email = validate_email(email)?;
        }
        if let Some(phone) = patch.phone {
            c.phone = optional_text("phone", phone, MAX_PHONE_CHARS)?;
        }
        match patch.attributes {
            None => {}
            Some(None) => c.attributes = Value::Object(Map::new()),
            Some(Some(p @ Value::Object(_))) => merge_patch(&mut c.attributes, &p),
            Some(Some(_)) => {
                return Err(StoreError::invalid("attributes", "must be a JSON object or null"));
            }
        }
        let attributes = attributes_text(&c.attributes)?;
        // updated_at never goes backwards, even if the clock does.
        let now = now_ms().max(millis(c.updated_at));
        c.updated_at = from_millis(now);
        let updated = sqlx::query(
            "UPDATE customers SET external_id = $1, name = $2, email = $3, phone = $4, attributes = $5, updated_at = $6 \
             WHERE tenant_id = $7 AND id = $8",
        )
        .bind(&c.external_id)
        .bind(&c.name)
        .bind(&c.email)
        .bind(&c.phone)
        .bind(&attributes)
        .bind(now)
        .bind(tenant.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await;
        match updated {
            Err(e) if is_unique_violation(&e) => return Err(exists_conflict(&c.external_id)),
            other => other?,
        };
        tx.commit().await?;
        Ok(c)
    }

    /// Deletes a customer that has no history. One with interactions or a
    /// loyalty account is refused (409 `customer_has_history`): removing
    /// personal data while keeping history is erasure, a GDPR operation.
    pub async fn delete_customer(&self, tenant: &TenantId, id: &str) -> StoreResult<()> {
        let has_history = || {
            StoreError::conflict(
                "customer_has_history",
                "this customer has interactions or a loyalty account; use GDPR erasure instead",
            )
        };
        let mut tx = self.db().begin_write().await?;
        let locked = sqlx::query("UPDATE customers SET updated_at = updated_at WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Err(StoreError::NotFound { entity: "customer" });
        }
        let history: i64 = sqlx::query(
            "SELECT CAST((SELECT COUNT(*) FROM interactions WHERE tenant_id = $1 AND customer_id = $2) \
                  + (SELECT COUNT(*) FROM loyalty_accounts WHERE tenant_id = $1 AND customer_id = $2) AS BIGINT) AS n",
        )
        .bind(tenant.as_str())
        .bind(id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if history > 0 {
            return Err(has_history());
        }
        // Scores computed for a customer without history (a batch job
        // scores everyone) go with it.
        super::scores::delete_customer_scores_tx(&mut tx, tenant, id).await?;
        super::suppressions::delete_customer_suppressions_tx(&mut tx, tenant, id).await?;
        let deleted = sqlx::query("DELETE FROM customers WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await;
        match deleted {
            // A history row inserted concurrently (PostgreSQL) trips the foreign key.
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                return Err(has_history());
            }
            other => other?,
        };
        tx.commit().await?;
        Ok(())
    }

    /// Lists customers by id (stable: ids never change), filtered.
    pub async fn list_customers(&self, tenant: &TenantId, filter: CustomerFilter) -> StoreResult<Page<Customer>> {
        let limit = page_limit(filter.limit)?;
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM customers WHERE tenant_id = "));
        let p = sql.arg(Arg::Text(tenant.0.clone()));
        sql.push(&p);
        if let Some(c) = &filter.cursor {
            let (after_id,): (String,) = cursor::decode(c)?;
            let p = sql.arg(Arg::Text(after_id));
            sql.push(&format!(" AND id > {p}"));
        }
        // Before the filters below move their fields out of `filter`.
        push_score_filter(&mut sql, &filter)?;
        if let Some(external_id) = filter.external_id {
            let p = sql.arg(Arg::Text(external_id));
            sql.push(&format!(" AND external_id = {p}"));
        }
        if let Some(email) = filter.email {
            let p = sql.arg(Arg::Text(email.trim().to_lowercase()));
            sql.push(&format!(" AND LOWER(email) = {p}"));
        }
        if let Some(q) = filter.q.filter(|q| !q.is_empty()) {
            let p = sql.arg(Arg::Text(format!("%{}%", like_escape(&q.to_lowercase()))));
            sql.push(&format!(
                " AND (LOWER(name) LIKE {p} ESCAPE '\\' OR LOWER(email) LIKE {p} ESCAPE '\\')"
            ));
        }
        if let Some(after) = filter.created_after {
            let p = sql.arg(Arg::Int(millis(after)));
            sql.push(&format!(" AND created_at > {p}"));
        }
        if let Some(before) = filter.created_before {
            let p = sql.arg(Arg::Int(millis(before)));
            sql.push(&format!(" AND created_at < {p}"));
        }
        if let Some(after) = filter.updated_after {
            let p = sql.arg(Arg::Int(millis(after)));
            sql.push(&format!(" AND updated_at > {p}"));
        }
        let p = sql.arg(Arg::Int(limit + 1));
        sql.push(&format!(" ORDER BY id LIMIT {p}"));
        let rows = sql.query().fetch_all(self.db().pool()).await?;
        let mut items = rows.iter().map(customer_from_row).collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|c| cursor::encode(&(c.id.clone(),)))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    pub async fn customer_stats(&self, tenant: &TenantId, id: &str) -> StoreResult<CustomerStats> {
        let mut conn = self.db().pool().acquire().await?;
        get_customer_tx(&mut conn, tenant, id).await?;
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS interactions, \
                    CAST(SUM(CASE WHEN kind = 'purchase' THEN 1 ELSE 0 END) AS BIGINT) AS purchases, \
                    CAST(MIN(CASE WHEN kind = 'purchase' THEN occurred_at END) AS BIGINT) AS first_purchase, \
                    CAST(MAX(CASE WHEN kind = 'purchase' THEN occurred_at END) AS BIGINT) AS last_purchase, \
                    CAST(MAX(occurred_at) AS BIGINT) AS last_interaction \
             FROM interactions WHERE tenant_id = $1 AND customer_id = $2",
        )
        .bind(tenant.as_str())
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
        // `kind || ''` keeps SQLite (which has no statistics) on the
        // per-customer timeline index instead of scanning every purchase of
        // the tenant through the kind index: 0.2 s -> 0.1 ms on CDNOW.
        let spend_rows = sqlx::query(&format!(
            "SELECT currency, {} FROM interactions \
             WHERE tenant_id = $1 AND customer_id = $2 AND kind || '' = 'purchase' AND amount_minor IS NOT NULL \
             GROUP BY currency ORDER BY currency",
            super::money::exact_sum_sql("amount_minor", "total")
        ))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        let mut total_spend = Vec::with_capacity(spend_rows.len());
        for r in &spend_rows {
            let currency: String = r.try_get("currency")?;
            let total = super::money::exact_sum(r, "total")?;
            total_spend.push(Money::stored(&currency, super::money::saturate(total))?);
        }
        let opt_time = |name: &str| -> StoreResult<Option<OffsetDateTime>> {
            Ok(row.try_get::<Option<i64>, _>(name)?.map(from_millis))
        };
        Ok(CustomerStats {
            interaction_count: row.try_get("interactions")?,
            purchase_count: row.try_get::<Option<i64>, _>("purchases")?.unwrap_or(0),
            total_spend,
            first_purchase_at: opt_time("first_purchase")?,
            last_purchase_at: opt_time("last_purchase")?,
            last_interaction_at: opt_time("last_interaction")?,
        })
    }
}
