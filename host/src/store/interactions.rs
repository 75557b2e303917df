//! Store: interactions (purchases, visits, emails, tickets, ... and
//! tenant-defined kinds), their line items, idempotent ingest (single and
//! batch) and the customer timeline. Money is `store::money`.
//!
//! Idempotency: a request with an `idempotency_key` stores a sha256 of its
//! canonical form (`request_hash`). A repeat with the same hash replays the
//! stored interaction; a different hash is a conflict. Concurrent repeats
//! are settled by the `UNIQUE (tenant_id, idempotency_key)` constraint
//! (`ON CONFLICT DO NOTHING`, then read back), never by a check-then-insert.
//!
//! Work that must commit or roll back with an interaction (reward plugins'
//! ledger effects, see `plugins::rewards`) joins the ingest's transaction
//! through an [`IngestHook`]: it runs on the same connection right after the
//! interaction is stored (inside the item's savepoint in a batch). A hook
//! that computed its work before the transaction (on a `RewardSnapshot`)
//! fixes the interactions' ids in advance ([`IngestHook::assigned`]) and
//! aborts the transaction with [`SNAPSHOT_STALE`] when what it computed on
//! changed meanwhile. The reward-specific reads (snapshots, predictions)
//! and the per-plugin savepoint are the loyalty area's
//! (`store/loyalty/reward_plugins.rs`), so that the plugin service never
//! writes SQL itself.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Executor, Row};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::customers::{NewCustomer, ensure_customer_tx, get_customer_tx};
use super::money::{Amount, Currency, MAX_AMOUNT_MINOR, Money, too_large};
use super::sql::{Arg, Sql, page_limit};
use super::{Page, Store, StoreError, StoreResult, TenantId, cursor, from_millis, json_column, millis, new_id, now_ms};

/// Largest batch accepted by [`Store::ingest_batch`] and `POST /v1/interactions/batch`.
pub const MAX_BATCH: usize = 1000;
/// Largest chunk accepted by [`Store::import_interactions`]: big enough that
/// commits are rare, small enough that a chunk's statements stay quick.
pub const MAX_IMPORT_CHUNK: usize = 10_000;
/// Largest `payload` object, serialized.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
pub const MAX_ITEMS_PER_INTERACTION: usize = 500;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;
pub const MAX_SKU_CHARS: usize = 100;
pub const MAX_CHANNEL_CHARS: usize = 64;
pub const MAX_KIND_DESCRIPTION_CHARS: usize = 500;

/// Kinds every tenant has, with their descriptions. Tenant-defined kinds may
/// not reuse these names.
pub const BUILT_IN_KINDS: &[(&str, &str)] = &[
    ("purchase", "A purchase; needs an amount or line items"),
    ("visit", "A visit to a store or a website"),
    ("email_open", "A marketing email was opened"),
    ("email_click", "A link in a marketing email was clicked"),
    ("support_ticket", "A support ticket was opened"),
    ("complaint", "A complaint was made"),
    (
        "referral",
        "The customer referred someone: payload referred_customer_id or referred_external_id",
    ),
    (
        "satisfaction",
        "A satisfaction answer: payload survey (csat 1-5 or nps 0-10) and score",
    ),
    // Reported by channel connectors (POST /v1/channels/{connector}/inbound).
    ("message_delivered", "A message reached the customer's channel"),
    ("message_opened", "The customer opened a message"),
    ("message_clicked", "The customer clicked a link in a message"),
    ("message_replied", "The customer replied to a message"),
    ("message_bounced", "A message could not be delivered"),
    ("message_unsubscribed", "The customer unsubscribed from a channel"),
];

pub fn is_built_in_kind(name: &str) -> bool {
    BUILT_IN_KINDS.iter().any(|(k, _)| *k == name)
}

// ---------------------------------------------------------------------------
// Types

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLineItem {
    pub sku: String,
    /// At least 1.
    pub quantity: i64,
    /// Price of one unit, in the interaction's currency; not negative.
    pub unit_price: Amount,
}

/// An interaction to ingest. Name the customer by exactly one of
/// `customer_id` (must exist) or `customer_external_id` (created if new).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInteraction {
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub customer_external_id: Option<String>,
    /// A built-in kind (`purchase`, `visit`, ...) or one defined by the tenant.
    pub kind: String,
    #[serde(default)]
    pub channel: Option<String>,
    /// When it happened; defaults to the time of ingest.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub occurred_at: Option<OffsetDateTime>,
    /// Total amount; for a purchase with items and no amount, the items' sum.
    #[serde(default)]
    pub amount: Option<Amount>,
    /// ISO 4217 code; required with `amount` or `items`.
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub items: Vec<NewLineItem>,
    /// Free-form JSON object, at most 64 KiB serialized.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Retrying with the same key and body returns the first result.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LineItem {
    pub sku: String,
    pub quantity: i64,
    pub unit_price: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Interaction {
    pub id: String,
    pub customer_id: String,
    pub kind: String,
    pub channel: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub amount: Option<Money>,
    pub items: Vec<LineItem>,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub idempotency_key: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Whether an ingest stored a new interaction or replayed an earlier one
/// with the same idempotency key and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IngestOutcome {
    Created,
    Replayed,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InteractionKind {
    pub name: String,
    pub description: String,
    pub built_in: bool,
    /// Absent for built-in kinds.
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
}

/// Filters of a customer's timeline (newest first).
#[derive(Debug, Clone, Default)]
pub struct TimelineFilter {
    pub kind: Option<String>,
    /// Only interactions that occurred strictly after this time.
    pub after: Option<OffsetDateTime>,
    /// Only interactions that occurred strictly before this time.
    pub before: Option<OffsetDateTime>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

// ---------------------------------------------------------------------------
// Validation

#[derive(Clone)]
pub(super) enum CustomerRef {
    Id(String),
    ExternalId(String),
}

/// A request that passed every check that needs no database.
#[derive(Clone)]
pub(super) struct Prepared {
    pub(super) customer: CustomerRef,
    pub(super) kind: String,
    channel: Option<String>,
    pub(super) occurred_at: i64,
    /// Whether the request gave `occurred_at` (otherwise it is the ingest's time).
    pub(super) occurred_at_given: bool,
    money: Option<(Currency, i64)>,
    items: Vec<(String, i64, i64)>,
    payload: Value,
    payload_text: String,
    pub(super) idempotency_key: Option<String>,
    pub(super) request_hash: String,
}

pub fn validate_kind_name(name: &str) -> StoreResult<()> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid("kind", "must match [a-z][a-z0-9_.-]{0,63}"))
    }
}

fn validate_sku(field: &str, sku: &str) -> StoreResult<()> {
    let n = sku.chars().count();
    if n == 0 || n > MAX_SKU_CHARS || sku.chars().any(|c| c.is_control() || c.is_whitespace() || c == '/') {
        return Err(StoreError::invalid(
            field,
            format!("must be 1 to {MAX_SKU_CHARS} characters without spaces, slashes or control characters"),
        ));
    }
    Ok(())
}

fn short_text(field: &str, value: &str, max: usize) -> StoreResult<()> {
    let n = value.chars().count();
    if n == 0 || n > max || value.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            field,
            format!("must be 1 to {max} characters without control characters"),
        ));
    }
    Ok(())
}

pub(super) fn prepare(new: NewInteraction) -> StoreResult<Prepared> {
    let customer = match (new.customer_id, new.customer_external_id) {
        (Some(id), None) => CustomerRef::Id(id),
        (None, Some(external)) => {
            super::customers::validate_external_id(&external)
                .map_err(|_| StoreError::invalid("customer_external_id", "must be 1 to 200 characters, not blank"))?;
            CustomerRef::ExternalId(external)
        }
        _ => {
            return Err(StoreError::invalid(
                "customer_id",
                "give exactly one of customer_id or customer_external_id",
            ));
        }
    };
    validate_kind_name(&new.kind)?;
    if let Some(channel) = &new.channel {
        short_text("channel", channel, MAX_CHANNEL_CHARS)?;
    }
    if let Some(key) = &new.idempotency_key {
        short_text("idempotency_key", key, MAX_IDEMPOTENCY_KEY_CHARS)?;
    }
    if !new.payload.is_object() {
        return Err(StoreError::invalid("payload", "must be a JSON object"));
    }
    let payload_text = new.payload.to_string();
    if payload_text.len() > MAX_PAYLOAD_BYTES {
        return Err(StoreError::invalid(
            "payload",
            format!("must be at most {MAX_PAYLOAD_BYTES} bytes serialized"),
        ));
    }
    if new.items.len() > MAX_ITEMS_PER_INTERACTION {
        return Err(StoreError::invalid(
            "items",
            format!("at most {MAX_ITEMS_PER_INTERACTION} items per interaction"),
        ));
    }
    let currency = match &new.currency {
        Some(code) => Some(Currency::parse("currency", code)?),
        None if new.amount.is_some() || !new.items.is_empty() => {
            return Err(StoreError::invalid("currency", "is required with amount or items"));
        }
        None => None,
    };
    let mut items = Vec::with_capacity(new.items.len());
    let mut items_total: Option<i64> = Some(0);
    for (i, item) in new.items.iter().enumerate() {
        validate_sku(&format!("items[{i}].sku"), &item.sku)?;
        if item.quantity < 1 {
            return Err(StoreError::invalid(
                format!("items[{i}].quantity"),
                "must be at least 1",
            ));
        }
        // `currency` is Some whenever items exist (checked above).
        let Some(cur) = &currency else {
            return Err(StoreError::invalid("currency", "is required with items"));
        };
        let unit = item.unit_price.to_minor(&format!("items[{i}].unit_price"), cur)?;
        if unit < 0 {
            return Err(StoreError::invalid(
                format!("items[{i}].unit_price"),
                "must not be negative",
            ));
        }
        items_total = items_total.and_then(|t| item.quantity.checked_mul(unit).and_then(|line| t.checked_add(line)));
        items.push((item.sku.clone(), item.quantity, unit));
    }
    let amount_minor = match (&new.amount, &currency) {
        (Some(amount), Some(cur)) => Some(amount.to_minor("amount", cur)?),
        (None, Some(cur)) if !items.is_empty() => Some(
            items_total
                .filter(|total| *total <= MAX_AMOUNT_MINOR)
                .ok_or_else(|| StoreError::invalid("items", format!("the items' total {}", too_large(cur))))?,
        ),
        (None, Some(_)) => {
            return Err(StoreError::invalid("currency", "given without amount or items"));
        }
        _ => None,
    };
    if new.kind == "purchase" {
        match amount_minor {
            None => {
                return Err(StoreError::invalid("amount", "a purchase needs an amount or items"));
            }
            Some(a) if a < 0 => {
                return Err(StoreError::invalid("amount", "a purchase amount must not be negative"));
            }
            Some(_) => {}
        }
    }
    let occurred_at = new.occurred_at.map(millis);
    // The canonical request: normalized values (so "29.33" and 29.33 are the
    // same request), the *given* occurred_at (a retry without one must not
    // differ by the clock), and sorted object keys (serde_json's map).
    let canonical = json!({
        "customer_id": match &customer { CustomerRef::Id(id) => Some(id), _ => None },
        "customer_external_id": match &customer { CustomerRef::ExternalId(e) => Some(e), _ => None },
        "kind": new.kind,
        "channel": new.channel,
        "occurred_at": occurred_at,
        "currency": currency.as_ref().map(|c| &c.code),
        "amount_minor": new.amount.as_ref().and(amount_minor),
        "items": items,
        "payload": new.payload,
    });
    let request_hash = hex::encode(Sha256::digest(canonical.to_string().as_bytes()));
    Ok(Prepared {
        customer,
        kind: new.kind,
        channel: new.channel,
        occurred_at: occurred_at.unwrap_or_else(now_ms),
        occurred_at_given: occurred_at.is_some(),
        money: currency.zip(amount_minor),
        items,
        payload: new.payload,
        payload_text,
        idempotency_key: new.idempotency_key,
        request_hash,
    })
}

// ---------------------------------------------------------------------------
// Reads

const COLUMNS: &str =
    "id, customer_id, kind, channel, occurred_at, amount_minor, currency, payload, idempotency_key, created_at";

fn interaction_from_row(row: &AnyRow) -> StoreResult<Interaction> {
    let amount_minor: Option<i64> = row.try_get("amount_minor")?;
    let currency: Option<String> = row.try_get("currency")?;
    let amount = match (amount_minor, &currency) {
        (Some(minor), Some(cur)) => Some(Money::stored(cur, minor)?),
        _ => None,
    };
    let payload: String = row.try_get("payload")?;
    Ok(Interaction {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        kind: row.try_get("kind")?,
        channel: row.try_get("channel")?,
        occurred_at: from_millis(row.try_get("occurred_at")?),
        amount,
        items: Vec::new(),
        payload: json_column(&payload)?,
        idempotency_key: row.try_get("idempotency_key")?,
        created_at: from_millis(row.try_get("created_at")?),
    })
}

/// Loads the line items of `interactions` (one query) and attaches them.
async fn attach_items(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    interactions: &mut [Interaction],
) -> StoreResult<()> {
    if interactions.is_empty() {
        return Ok(());
    }
    let mut sql =
        Sql::new("SELECT interaction_id, sku, quantity, unit_price_minor FROM interaction_items WHERE tenant_id = ");
    let p = sql.arg(Arg::Text(tenant.0.clone()));
    sql.push(&p);
    sql.push(" AND interaction_id IN (");
    for (i, interaction) in interactions.iter().enumerate() {
        let p = sql.arg(Arg::Text(interaction.id.clone()));
        if i > 0 {
            sql.push(", ");
        }
        sql.push(&p);
    }
    sql.push(") ORDER BY interaction_id, line_no");
    let rows = sql.query().fetch_all(&mut *conn).await?;
    let mut by_id: HashMap<String, Vec<(String, i64, i64)>> = HashMap::new();
    for row in &rows {
        by_id.entry(row.try_get("interaction_id")?).or_default().push((
            row.try_get("sku")?,
            row.try_get("quantity")?,
            row.try_get("unit_price_minor")?,
        ));
    }
    for interaction in interactions.iter_mut() {
        let Some(items) = by_id.remove(&interaction.id) else {
            continue;
        };
        let currency =
            interaction.amount.as_ref().map(|m| m.currency.clone()).ok_or_else(|| {
                StoreError::Corrupt(format!("interaction {} has items but no currency", interaction.id))
            })?;
        for (sku, quantity, unit) in items {
            interaction.items.push(LineItem {
                sku,
                quantity,
                unit_price: Money::stored(&currency, unit)?,
            });
        }
    }
    Ok(())
}

pub async fn get_interaction_tx(conn: &mut AnyConnection, tenant: &TenantId, id: &str) -> StoreResult<Interaction> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM interactions WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.as_str())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound { entity: "interaction" })?;
    let mut one = [interaction_from_row(&row)?];
    attach_items(conn, tenant, &mut one).await?;
    let [interaction] = one;
    Ok(interaction)
}

// ---------------------------------------------------------------------------
// Ingest

/// Custom kinds already looked up in this transaction (a batch asks once per name).
pub(super) type KindCache = HashMap<String, bool>;

pub(super) async fn kind_exists(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    kind: &str,
    cache: &mut KindCache,
) -> StoreResult<bool> {
    if is_built_in_kind(kind) {
        return Ok(true);
    }
    if let Some(known) = cache.get(kind) {
        return Ok(*known);
    }
    let found = sqlx::query("SELECT name FROM interaction_kinds WHERE tenant_id = $1 AND name = $2")
        .bind(tenant.as_str())
        .bind(kind)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    cache.insert(kind.to_string(), found);
    Ok(found)
}

/// The idempotency lookup of an ingest: fully matches the `UNIQUE
/// (tenant_id, idempotency_key)` index, so at most one row is read; its plan
/// is asserted in `tests/it/query_plans.rs`.
pub const REPLAY_SQL: &str = "SELECT id, request_hash FROM interactions WHERE tenant_id = $1 AND idempotency_key = $2";

/// The outcome for a key that is already stored: a replay if the request is
/// the same, a conflict otherwise.
pub(super) async fn replay(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    key: &str,
    request_hash: &str,
) -> StoreResult<Option<(Interaction, IngestOutcome)>> {
    let row = sqlx::query(REPLAY_SQL)
        .bind(tenant.as_str())
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let stored_hash: Option<String> = row.try_get("request_hash")?;
    if stored_hash.as_deref() != Some(request_hash) {
        return Err(StoreError::conflict(
            "idempotency_conflict",
            format!("idempotency key {key:?} was already used with a different request"),
        ));
    }
    let id: String = row.try_get("id")?;
    Ok(Some((
        get_interaction_tx(conn, tenant, &id).await?,
        IngestOutcome::Replayed,
    )))
}

/// Whether [`ingest_prepared`] queues the customer for rescoring itself
/// (`Now`) or leaves it to the caller (`Deferred`: a batch queues all its
/// customers in one sorted statement at the end).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rescore {
    Now,
    Deferred,
}

/// The interaction `p` becomes when stored with this id and time.
pub(super) fn interaction_of(p: &Prepared, id: String, customer_id: String, created_at: i64) -> Interaction {
    let items = match &p.money {
        Some((currency, _)) => p
            .items
            .iter()
            .map(|(sku, quantity, unit)| LineItem {
                sku: sku.clone(),
                quantity: *quantity,
                unit_price: Money::new(currency, *unit),
            })
            .collect(),
        None => Vec::new(),
    };
    Interaction {
        id,
        customer_id,
        kind: p.kind.clone(),
        channel: p.channel.clone(),
        occurred_at: from_millis(p.occurred_at),
        amount: p.money.as_ref().map(|(c, minor)| Money::new(c, *minor)),
        items,
        payload: p.payload.clone(),
        idempotency_key: p.idempotency_key.clone(),
        created_at: from_millis(created_at),
    }
}

async fn ingest_prepared(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    mut p: Prepared,
    kinds: &mut KindCache,
    rescore: Rescore,
    assigned: Option<Assigned>,
) -> StoreResult<(Interaction, IngestOutcome)> {
    if let Some(key) = &p.idempotency_key
        && let Some(done) = replay(conn, tenant, key, &p.request_hash).await?
    {
        return Ok(done);
    }
    if !kind_exists(conn, tenant, &p.kind, kinds).await? {
        return Err(StoreError::invalid(
            "kind",
            format!(
                "unknown interaction kind {:?}; define it with POST /v1/interaction-kinds",
                p.kind
            ),
        ));
    }
    let customer = match &p.customer {
        CustomerRef::Id(id) => get_customer_tx(conn, tenant, id).await?,
        CustomerRef::ExternalId(external) => {
            ensure_customer_tx(conn, tenant, NewCustomer::with_external_id(external.clone()))
                .await?
                .0
        }
    };
    if customer.erased_at.is_some() {
        return Err(StoreError::conflict(
            "customer_erased",
            "this customer's data has been erased",
        ));
    }
    let (id, created_at) = match assigned {
        Some(a) => {
            if !p.occurred_at_given {
                p.occurred_at = a.created_at;
            }
            (a.id, a.created_at)
        }
        None => (new_id(), now_ms()),
    };
    let inserted = sqlx::query(
        "INSERT INTO interactions (tenant_id, id, customer_id, kind, channel, occurred_at, amount_minor, currency, \
         payload, idempotency_key, request_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(&id)
    .bind(&customer.id)
    .bind(&p.kind)
    .bind(&p.channel)
    .bind(p.occurred_at)
    .bind(p.money.as_ref().map(|(_, minor)| *minor))
    .bind(p.money.as_ref().map(|(c, _)| c.code.clone()))
    .bind(&p.payload_text)
    .bind(&p.idempotency_key)
    .bind(p.idempotency_key.as_ref().map(|_| p.request_hash.clone()))
    .bind(created_at)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        // Lost a race on the idempotency key: the winner's row is committed now.
        let key = p.idempotency_key.as_deref().unwrap_or_default();
        return replay(conn, tenant, key, &p.request_hash)
            .await?
            .ok_or_else(|| StoreError::Corrupt("idempotency key conflicted but no row holds it".into()));
    }
    for (line_no, (sku, quantity, unit)) in p.items.iter().enumerate() {
        sqlx::query(
            "INSERT INTO interaction_items (tenant_id, interaction_id, line_no, sku, quantity, unit_price_minor) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant.as_str())
        .bind(&id)
        .bind(line_no as i64 + 1)
        .bind(sku)
        .bind(*quantity)
        .bind(*unit)
        .execute(&mut *conn)
        .await?;
    }
    // The customer's stored scores are now stale; queue them for the
    // rescoring job in the same transaction, so a rolled-back interaction
    // leaves no queue entry and a committed one never misses its rescore.
    if rescore == Rescore::Now {
        super::scores::enqueue_rescore_tx(conn, tenant, &customer.id).await?;
    }
    let interaction = interaction_of(&p, id, customer.id, created_at);
    // Satisfaction answers, complaint cases and referrals commit with their
    // interaction, or refuse it (store/playbook.rs).
    super::playbook::on_interaction_tx(conn, tenant, &interaction).await?;
    Ok((interaction, IngestOutcome::Created))
}

/// Ingests one interaction on `conn`, which the caller has put in a write
/// transaction, so further work (reward ledger entries, say) can join the
/// same transaction.
pub async fn ingest_interaction_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    new: NewInteraction,
) -> StoreResult<(Interaction, IngestOutcome)> {
    let prepared = prepare(new)?;
    ingest_prepared(conn, tenant, prepared, &mut KindCache::new(), Rescore::Now, None).await
}

const IMPORT_COLUMNS: [super::bulk::Column; 12] = [
    super::bulk::text("tenant_id"),
    super::bulk::text("id"),
    super::bulk::text("customer_id"),
    super::bulk::text("kind"),
    super::bulk::text("channel"),
    super::bulk::bigint("occurred_at"),
    super::bulk::bigint("amount_minor"),
    super::bulk::text("currency"),
    super::bulk::text("payload"),
    super::bulk::text("idempotency_key"),
    super::bulk::text("request_hash"),
    super::bulk::bigint("created_at"),
];

const ITEM_COLUMNS: [super::bulk::Column; 6] = [
    super::bulk::text("tenant_id"),
    super::bulk::text("interaction_id"),
    super::bulk::bigint("line_no"),
    super::bulk::text("sku"),
    super::bulk::bigint("quantity"),
    super::bulk::bigint("unit_price_minor"),
];

/// How often a transaction that hit a deadlock, a serialization failure
/// or a busy SQLite is run again before the error is reported.
const TRANSIENT_ATTEMPTS: u32 = 8;

/// Runs `attempt` until it succeeds or fails with anything but a transient
/// conflict, at most [`TRANSIENT_ATTEMPTS`] times, with a short jittered
/// backoff: a client never sees a deadlock the database resolved by
/// aborting its transaction.
async fn retry_transient<T, F, Fut>(what: &str, mut attempt: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut n = 1u32;
    loop {
        match attempt().await {
            Err(StoreError::Database(e)) if super::is_transient(&e) && n < TRANSIENT_ATTEMPTS => {
                tracing::debug!(attempt = n, error = %e, "{what} hit a transient conflict; retrying");
                let jitter = rand::random::<u64>() % 20;
                let backoff = 5u64 << n.min(6);
                tokio::time::sleep(std::time::Duration::from_millis(backoff + jitter)).await;
                n += 1;
            }
            other => return other,
        }
    }
}

/// The order a batch's items are stored in: by customer (items naming one
/// by id first), and within a customer in request order (the sort is
/// stable). Two batches over the same customers then take their
/// per-customer row locks (new customers' external ids, loyalty accounts)
/// in the same order, whatever order their requests listed the customers
/// in, so they queue behind each other instead of deadlocking. A
/// customer's own items keep their request order because reward plugins
/// are shown each item's account as the customer's earlier items leave it
/// (see `plugins::rewards`); two batches that reuse each other's
/// idempotency keys for one customer in opposite orders can still
/// deadlock, which the retry absorbs.
fn batch_order(p: &Prepared) -> (u8, &str) {
    match &p.customer {
        CustomerRef::Id(id) => (0, id.as_str()),
        CustomerRef::ExternalId(external) => (1, external.as_str()),
    }
}

/// Errors that mean the database, not the item, is at fault: they abort a batch.
/// The CRM playbook's flows (satisfaction answers, complaint cases,
/// referrals and a referred customer's first-purchase credit) for the rows
/// an import chunk stored, in file order, in the chunk's transaction: an
/// imported interaction is recorded or refused exactly as an ingested one
/// (store/playbook.rs). A refused row is taken out again and reported in
/// its slot. Purchases go through the hook only when their customer has a
/// referral waiting for its credit, so a purchase history costs one
/// indexed look-up per chunk, not a statement per row.
async fn playbook_on_import(
    tx: &mut AnyConnection,
    tenant: &TenantId,
    items: &[(usize, Prepared)],
    inserted: &[(usize, String, String)],
    created_at: i64,
    results: &mut [Option<StoreResult<IngestOutcome>>],
) -> StoreResult<()> {
    const HOOKED: [&str; 3] = ["satisfaction", "complaint", "referral"];
    let buyers: Vec<&str> = inserted
        .iter()
        .filter(|(n, _, _)| items[*n].1.kind == "purchase")
        .map(|(_, _, customer)| customer.as_str())
        .collect();
    let mut waiting: std::collections::HashSet<String> = std::collections::HashSet::new();
    if !buyers.is_empty() {
        let rows = super::bulk::select_in(
            tx,
            tenant.as_str(),
            "referrals",
            "referred_id, credited_at",
            "referred_id",
            &buyers,
        )
        .await?;
        for row in rows {
            let credited: Option<i64> = row.try_get("credited_at")?;
            if credited.is_none() {
                waiting.insert(row.try_get("referred_id")?);
            }
        }
    }
    for (n, id, customer) in inserted {
        let p = &items[*n].1;
        let hooked = HOOKED.contains(&p.kind.as_str()) || (p.kind == "purchase" && waiting.contains(customer));
        if !hooked {
            continue;
        }
        let interaction = interaction_of(p, id.clone(), customer.clone(), created_at);
        sqlx::query("SAVEPOINT import_playbook").execute(&mut *tx).await?;
        match super::playbook::on_interaction_tx(tx, tenant, &interaction).await {
            Ok(()) => {
                sqlx::query("RELEASE SAVEPOINT import_playbook")
                    .execute(&mut *tx)
                    .await?;
                if p.kind == "referral" {
                    // Its customer's first purchase, later in this chunk, is credited.
                    waiting.insert(customer.clone());
                }
            }
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT import_playbook")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("RELEASE SAVEPOINT import_playbook")
                    .execute(&mut *tx)
                    .await?;
                for table in [
                    "interaction_items WHERE tenant_id = $1 AND interaction_id = $2",
                    "interactions WHERE tenant_id = $1 AND id = $2",
                ] {
                    sqlx::query(&format!("DELETE FROM {table}"))
                        .bind(tenant.as_str())
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                results[*n] = Some(Err(e));
            }
        }
    }
    Ok(())
}

pub fn is_fatal(err: &StoreError) -> bool {
    matches!(err, StoreError::Database(_) | StoreError::Corrupt(_))
}

/// The code of the conflict a hook returns when what it computed before the
/// write transaction is out of date: the whole ingest (a batch too) is
/// rolled back, and the caller computes again and retries.
pub const SNAPSHOT_STALE: &str = "snapshot_stale";

/// Whether `err` is the [`SNAPSHOT_STALE`] conflict.
pub fn is_stale(err: &StoreError) -> bool {
    matches!(err, StoreError::Conflict { code, .. } if *code == SNAPSHOT_STALE)
}

/// The id and creation time an ingest gives an interaction, fixed in
/// advance by a hook that computed work for it before the transaction. An
/// interaction without `occurred_at` also takes `created_at` as its
/// `occurred_at`, so that what the hook computed on is what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub id: String,
    pub created_at: i64,
}

impl Assigned {
    pub fn new() -> Assigned {
        Assigned {
            id: new_id(),
            created_at: now_ms(),
        }
    }
}

impl Default for Assigned {
    fn default() -> Self {
        Assigned::new()
    }
}

/// Work that joins an ingest's write transaction for every interaction it
/// stores or replays (e.g. running reward plugins and applying their ledger
/// effects), so that it commits or rolls back together with the interaction.
///
/// An `Err` from the hook fails the interaction like any other error: in a
/// batch a fatal one ([`is_fatal`]) aborts the batch and any other rolls the
/// item back alone. A hook that must never cost the interaction (reward
/// plugins) therefore handles its own failures and returns `Ok`.
pub trait IngestHook: Sync {
    type Output: Send;

    /// The id and time of the `index`th interaction of the ingest (its
    /// position in a batch, 0 for a single one), when fixed in advance.
    fn assigned(&self, _index: usize) -> Option<Assigned> {
        None
    }

    fn after_ingest(
        &self,
        conn: &mut AnyConnection,
        tenant: &TenantId,
        interaction: &Interaction,
        outcome: IngestOutcome,
    ) -> impl std::future::Future<Output = StoreResult<Self::Output>> + Send;
}

/// The hook of a plain ingest: nothing joins the transaction.
pub struct NoHook;

impl IngestHook for NoHook {
    type Output = ();
    async fn after_ingest(
        &self,
        _conn: &mut AnyConnection,
        _tenant: &TenantId,
        _interaction: &Interaction,
        _outcome: IngestOutcome,
    ) -> StoreResult<()> {
        Ok(())
    }
}

/// One batch item's result with what the hook produced for it.
pub type HookedIngest<O> = (Interaction, IngestOutcome, O);

impl Store {
    pub async fn ingest_interaction(
        &self,
        tenant: &TenantId,
        new: NewInteraction,
    ) -> StoreResult<(Interaction, IngestOutcome)> {
        let (interaction, outcome, ()) = self.ingest_interaction_with(tenant, new, &NoHook).await?;
        Ok((interaction, outcome))
    }

    /// Ingests one interaction and runs `hook` in the same transaction.
    pub async fn ingest_interaction_with<H: IngestHook>(
        &self,
        tenant: &TenantId,
        new: NewInteraction,
        hook: &H,
    ) -> StoreResult<HookedIngest<H::Output>> {
        let prepared = prepare(new)?;
        retry_transient("ingest", || async {
            let mut tx = self.db().begin_write().await?;
            let (interaction, outcome) = ingest_prepared(
                &mut tx,
                tenant,
                prepared.clone(),
                &mut KindCache::new(),
                Rescore::Now,
                hook.assigned(0),
            )
            .await?;
            let output = hook.after_ingest(&mut tx, tenant, &interaction, outcome).await?;
            tx.commit().await?;
            Ok((interaction, outcome, output))
        })
        .await
    }

    /// Ingests many interactions in one transaction, one savepoint per item:
    /// a bad item is rolled back alone and reported in its slot; good items
    /// are kept. Only a database failure fails the whole batch.
    pub async fn ingest_batch(
        &self,
        tenant: &TenantId,
        items: Vec<NewInteraction>,
    ) -> StoreResult<Vec<Result<(Interaction, IngestOutcome), StoreError>>> {
        let results = self.ingest_batch_with(tenant, items, &NoHook).await?;
        Ok(results
            .into_iter()
            .map(|r| r.map(|(interaction, outcome, ())| (interaction, outcome)))
            .collect())
    }

    /// [`Store::ingest_batch`] with `hook` run inside each item's savepoint.
    /// A retried batch (see below) runs the hook again from scratch: the
    /// failed attempt's effects were rolled back with it.
    pub async fn ingest_batch_with<H: IngestHook>(
        &self,
        tenant: &TenantId,
        items: Vec<NewInteraction>,
        hook: &H,
    ) -> StoreResult<Vec<Result<HookedIngest<H::Output>, StoreError>>> {
        if items.len() > MAX_BATCH {
            return Err(StoreError::invalid(
                "items",
                format!("at most {MAX_BATCH} items per batch"),
            ));
        }
        // Checks that need no database, once; then the items in lock order
        // (see `batch_order`), each result going back to its request slot.
        let mut results: Vec<Option<Result<HookedIngest<H::Output>, StoreError>>> = Vec::with_capacity(items.len());
        let mut ordered: Vec<(usize, Prepared)> = Vec::with_capacity(items.len());
        for (index, new) in items.into_iter().enumerate() {
            match prepare(new) {
                Ok(p) => {
                    ordered.push((index, p));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        ordered.sort_by(|(_, a), (_, b)| batch_order(a).cmp(&batch_order(b)));
        // Ordered locks make deadlocks between batches rare, not impossible
        // (the rescore worker, single ingests); a batch is one transaction,
        // so running it again is safe and invisible to the client.
        let stored = retry_transient("batch ingest", || self.ingest_batch_once(tenant, &ordered, hook)).await?;
        for ((index, _), result) in ordered.iter().zip(stored) {
            results[*index] = Some(result);
        }
        Ok(results.into_iter().flatten().collect())
    }

    async fn ingest_batch_once<H: IngestHook>(
        &self,
        tenant: &TenantId,
        items: &[(usize, Prepared)],
        hook: &H,
    ) -> StoreResult<Vec<Result<HookedIngest<H::Output>, StoreError>>> {
        let mut results = Vec::with_capacity(items.len());
        let mut kinds = KindCache::new();
        let mut rescore = Vec::new();
        let mut tx = self.db().begin_write().await?;
        for (index, prepared) in items {
            tx.execute("SAVEPOINT ingest_item").await?;
            let done = match ingest_prepared(
                &mut tx,
                tenant,
                prepared.clone(),
                &mut kinds,
                Rescore::Deferred,
                hook.assigned(*index),
            )
            .await
            {
                Ok((interaction, outcome)) => hook
                    .after_ingest(&mut tx, tenant, &interaction, outcome)
                    .await
                    .map(|output| (interaction, outcome, output)),
                Err(e) => Err(e),
            };
            match done {
                Ok(done) => {
                    tx.execute("RELEASE SAVEPOINT ingest_item").await?;
                    if done.1 == IngestOutcome::Created {
                        rescore.push(done.0.customer_id.clone());
                    }
                    results.push(Ok(done));
                }
                // A stale snapshot invalidates the batch, not just the item.
                Err(e) if is_fatal(&e) || is_stale(&e) => return Err(e),
                Err(e) => {
                    tx.execute("ROLLBACK TO SAVEPOINT ingest_item").await?;
                    tx.execute("RELEASE SAVEPOINT ingest_item").await?;
                    results.push(Err(e));
                }
            }
        }
        super::scores::enqueue_rescore_many_tx(&mut tx, tenant, &rescore).await?;
        tx.commit().await?;
        Ok(results)
    }

    /// Bulk ingest for imports: up to [`MAX_IMPORT_CHUNK`] interactions
    /// naming their customer by `customer_id`, in one write transaction with
    /// multi-row statements (see `store::bulk`) instead of a savepoint and
    /// half a dozen statements per item. Same validation, idempotency and
    /// per-item results as [`Store::ingest_batch`]: an item already stored
    /// under its key with the same content is `Replayed`, with other content
    /// an `idempotency_conflict`, and a bad item is reported in its slot
    /// while the others are stored. Unlike an ingest it does not queue the
    /// customers for rescoring: an import schedules one scoring job instead
    /// ([`Store::schedule_import_scoring`]).
    pub async fn import_interactions(
        &self,
        tenant: &TenantId,
        items: Vec<NewInteraction>,
    ) -> StoreResult<Vec<StoreResult<IngestOutcome>>> {
        if items.len() > MAX_IMPORT_CHUNK {
            return Err(StoreError::invalid(
                "items",
                format!("at most {MAX_IMPORT_CHUNK} items per import chunk"),
            ));
        }
        let mut results: Vec<Option<StoreResult<IngestOutcome>>> = Vec::with_capacity(items.len());
        let mut prepared: Vec<(usize, Prepared)> = Vec::with_capacity(items.len());
        for (slot, new) in items.into_iter().enumerate() {
            results.push(None);
            match prepare(new) {
                Ok(p) if matches!(p.customer, CustomerRef::Id(_)) => prepared.push((slot, p)),
                Ok(_) => {
                    results[slot] = Some(Err(StoreError::invalid(
                        "customer_id",
                        "an import names customers by id",
                    )))
                }
                Err(e) => results[slot] = Some(Err(e)),
            }
        }
        // In file order, unlike a batch ingest (see `batch_order`): when two
        // rows reuse one idempotency key, the later row in the file is the
        // replay or the conflict, as when rows went one at a time. Two
        // imports of one file still take their locks in the same order.
        let stored = retry_transient("import", || self.import_once(tenant, &prepared)).await?;
        for ((slot, _), result) in prepared.iter().zip(stored) {
            results[*slot] = Some(result);
        }
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| StoreError::Corrupt("an import chunk left a slot empty".into())))
            .collect()
    }

    async fn import_once(
        &self,
        tenant: &TenantId,
        items: &[(usize, Prepared)],
    ) -> StoreResult<Vec<StoreResult<IngestOutcome>>> {
        use super::bulk::{Cell, insert, select_in, texts};
        use std::collections::HashSet;
        let backend = self.db().backend();
        let mut tx = self.db().begin_write().await?;
        let mut results: Vec<Option<StoreResult<IngestOutcome>>> = (0..items.len()).map(|_| None).collect();
        // The customers named, in one pass: unknown ones and erased ones
        // fail their items, as in a single ingest.
        let mut ids: Vec<&str> = items
            .iter()
            .filter_map(|(_, p)| match &p.customer {
                CustomerRef::Id(id) => Some(id.as_str()),
                CustomerRef::ExternalId(_) => None,
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut customers: HashMap<String, bool> = HashMap::with_capacity(ids.len());
        for row in select_in(&mut tx, tenant.as_str(), "customers", "id, erased_at", "id", &ids).await? {
            let erased: Option<i64> = row.try_get("erased_at")?;
            customers.insert(row.try_get("id")?, erased.is_some());
        }
        let mut kinds = KindCache::new();
        let created_at = now_ms();
        // (position in `items`, id) of the rows offered to the insert.
        let mut offered: Vec<(usize, String)> = Vec::with_capacity(items.len());
        let mut rows: Vec<Vec<Cell>> = Vec::with_capacity(items.len());
        for (n, (_, p)) in items.iter().enumerate() {
            let CustomerRef::Id(customer_id) = &p.customer else {
                continue;
            };
            let refused = match customers.get(customer_id) {
                None => Some(StoreError::NotFound { entity: "customer" }),
                Some(true) => Some(StoreError::conflict(
                    "customer_erased",
                    "this customer's data has been erased",
                )),
                Some(false) if !kind_exists(&mut tx, tenant, &p.kind, &mut kinds).await? => Some(StoreError::invalid(
                    "kind",
                    format!(
                        "unknown interaction kind {:?}; define it with POST /v1/interaction-kinds",
                        p.kind
                    ),
                )),
                Some(false) => None,
            };
            if let Some(e) = refused {
                results[n] = Some(Err(e));
                continue;
            }
            let id = new_id();
            rows.push(vec![
                Cell::Text(Some(tenant.0.clone())),
                Cell::Text(Some(id.clone())),
                Cell::Text(Some(customer_id.clone())),
                Cell::Text(Some(p.kind.clone())),
                Cell::Text(p.channel.clone()),
                Cell::Int(Some(p.occurred_at)),
                Cell::Int(p.money.as_ref().map(|(_, minor)| *minor)),
                Cell::Text(p.money.as_ref().map(|(c, _)| c.code.clone())),
                Cell::Text(Some(p.payload_text.clone())),
                Cell::Text(p.idempotency_key.clone()),
                Cell::Text(p.idempotency_key.as_ref().map(|_| p.request_hash.clone())),
                Cell::Int(Some(created_at)),
            ]);
            offered.push((n, id));
        }
        let inserted = insert(
            &mut tx,
            backend,
            "interactions",
            &IMPORT_COLUMNS,
            &rows,
            "ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING id",
        )
        .await?;
        let inserted: HashSet<String> = texts(&inserted, "id")?.into_iter().collect();
        // Rows the key's constraint turned away: a replay if the stored
        // request is the same (an earlier run, or an earlier row of this
        // chunk), a conflict otherwise.
        let refused_keys: Vec<&str> = offered
            .iter()
            .filter(|(_, id)| !inserted.contains(id))
            .filter_map(|(n, _)| items[*n].1.idempotency_key.as_deref())
            .collect();
        let mut stored_hash: HashMap<String, Option<String>> = HashMap::with_capacity(refused_keys.len());
        for row in select_in(
            &mut tx,
            tenant.as_str(),
            "interactions",
            "idempotency_key, request_hash",
            "idempotency_key",
            &refused_keys,
        )
        .await?
        {
            stored_hash.insert(row.try_get("idempotency_key")?, row.try_get("request_hash")?);
        }
        let mut line_items: Vec<Vec<Cell>> = Vec::new();
        // (position in `items`, id, customer) of the rows stored, in file order.
        let mut inserted_rows: Vec<(usize, String, String)> = Vec::with_capacity(offered.len());
        for (n, id) in offered {
            let p = &items[n].1;
            if inserted.contains(&id) {
                if let CustomerRef::Id(customer_id) = &p.customer {
                    inserted_rows.push((n, id.clone(), customer_id.clone()));
                }
                for (line_no, (sku, quantity, unit)) in p.items.iter().enumerate() {
                    line_items.push(vec![
                        Cell::Text(Some(tenant.0.clone())),
                        Cell::Text(Some(id.clone())),
                        Cell::Int(Some(line_no as i64 + 1)),
                        Cell::Text(Some(sku.clone())),
                        Cell::Int(Some(*quantity)),
                        Cell::Int(Some(*unit)),
                    ]);
                }
                results[n] = Some(Ok(IngestOutcome::Created));
                continue;
            }
            let key = p.idempotency_key.as_deref().unwrap_or_default();
            results[n] = Some(match stored_hash.get(key) {
                Some(hash) if hash.as_deref() == Some(p.request_hash.as_str()) => Ok(IngestOutcome::Replayed),
                Some(_) => Err(StoreError::conflict(
                    "idempotency_conflict",
                    format!("idempotency key {key:?} was already used with a different request"),
                )),
                None => {
                    return Err(StoreError::Corrupt(
                        "idempotency key conflicted but no row holds it".into(),
                    ));
                }
            });
        }
        insert(&mut tx, backend, "interaction_items", &ITEM_COLUMNS, &line_items, "").await?;
        playbook_on_import(&mut tx, tenant, items, &inserted_rows, created_at, &mut results).await?;
        tx.commit().await?;
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| StoreError::Corrupt("an import chunk left an item without a result".into())))
            .collect()
    }

    pub async fn get_interaction(&self, tenant: &TenantId, id: &str) -> StoreResult<Interaction> {
        let mut conn = self.db().pool().acquire().await?;
        get_interaction_tx(&mut conn, tenant, id).await
    }

    /// A customer's interactions, newest first (`occurred_at` desc, then id
    /// desc so equal times still page deterministically).
    pub async fn customer_timeline(
        &self,
        tenant: &TenantId,
        customer_id: &str,
        filter: TimelineFilter,
    ) -> StoreResult<Page<Interaction>> {
        let limit = page_limit(filter.limit)?;
        let mut conn = self.db().pool().acquire().await?;
        get_customer_tx(&mut conn, tenant, customer_id).await?;
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM interactions WHERE tenant_id = "));
        let p = sql.arg(Arg::Text(tenant.0.clone()));
        sql.push(&p);
        let p = sql.arg(Arg::Text(customer_id.to_string()));
        sql.push(&format!(" AND customer_id = {p}"));
        if let Some(c) = &filter.cursor {
            let (at, id): (i64, String) = cursor::decode(c)?;
            let at = sql.arg(Arg::Int(at));
            let id = sql.arg(Arg::Text(id));
            sql.push(&format!(
                " AND (occurred_at < {at} OR (occurred_at = {at} AND id < {id}))"
            ));
        }
        if let Some(kind) = filter.kind {
            let p = sql.arg(Arg::Text(kind));
            // Not indexable on purpose (`|| ''`): the timeline index already
            // narrows to one customer, and SQLite would otherwise pick the
            // tenant-wide kind index.
            sql.push(&format!(" AND kind || '' = {p}"));
        }
        if let Some(after) = filter.after {
            let p = sql.arg(Arg::Int(millis(after)));
            sql.push(&format!(" AND occurred_at > {p}"));
        }
        if let Some(before) = filter.before {
            let p = sql.arg(Arg::Int(millis(before)));
            sql.push(&format!(" AND occurred_at < {p}"));
        }
        let p = sql.arg(Arg::Int(limit + 1));
        sql.push(&format!(" ORDER BY occurred_at DESC, id DESC LIMIT {p}"));
        let rows = sql.query().fetch_all(&mut *conn).await?;
        let mut items = rows.iter().map(interaction_from_row).collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items
                .last()
                .map(|i| cursor::encode(&(millis(i.occurred_at), i.id.clone())))
        } else {
            None
        };
        attach_items(&mut conn, tenant, &mut items).await?;
        Ok(Page { items, next_cursor })
    }

    /// Defines a tenant kind. Built-in names cannot be shadowed.
    pub async fn create_interaction_kind(
        &self,
        tenant: &TenantId,
        name: &str,
        description: &str,
    ) -> StoreResult<InteractionKind> {
        validate_kind_name(name).map_err(|_| StoreError::invalid("name", "must match [a-z][a-z0-9_.-]{0,63}"))?;
        if is_built_in_kind(name) {
            return Err(StoreError::invalid("name", format!("{name:?} is a built-in kind")));
        }
        let description = description.trim();
        if description.chars().count() > MAX_KIND_DESCRIPTION_CHARS {
            return Err(StoreError::invalid(
                "description",
                format!("must be at most {MAX_KIND_DESCRIPTION_CHARS} characters"),
            ));
        }
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO interaction_kinds (tenant_id, name, description, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(description)
        .bind(now)
        .execute(self.db().pool())
        .await;
        match inserted {
            Err(e) if super::is_unique_violation(&e) => {
                return Err(StoreError::conflict(
                    "kind_exists",
                    format!("interaction kind {name:?} already exists"),
                ));
            }
            other => other?,
        };
        Ok(InteractionKind {
            name: name.to_string(),
            description: description.to_string(),
            built_in: false,
            created_at: Some(from_millis(now)),
        })
    }

    /// Built-in kinds first, then the tenant's own by name.
    pub async fn list_interaction_kinds(&self, tenant: &TenantId) -> StoreResult<Vec<InteractionKind>> {
        let mut kinds: Vec<InteractionKind> = BUILT_IN_KINDS
            .iter()
            .map(|(name, description)| InteractionKind {
                name: name.to_string(),
                description: description.to_string(),
                built_in: true,
                created_at: None,
            })
            .collect();
        let rows = sqlx::query(
            "SELECT name, description, created_at FROM interaction_kinds WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant.as_str())
        .fetch_all(self.db().pool())
        .await?;
        for row in &rows {
            kinds.push(InteractionKind {
                name: row.try_get("name")?,
                description: row.try_get("description")?,
                built_in: false,
                created_at: Some(from_millis(row.try_get("created_at")?)),
            });
        }
        Ok(kinds)
    }
}

impl Store {
    /// The tenant's purchase baskets for cross-sell fits: the distinct SKUs
    /// of each purchase with line items, in ingest order. One query, read in
    /// order, so memory is the baskets themselves.
    pub async fn purchase_baskets(&self, tenant: &TenantId) -> StoreResult<Vec<Vec<String>>> {
        let rows = sqlx::query(
            "SELECT i.interaction_id, i.sku FROM interaction_items i \
             JOIN interactions x ON x.tenant_id = i.tenant_id AND x.id = i.interaction_id \
             WHERE i.tenant_id = $1 AND x.kind = 'purchase' \
             ORDER BY i.interaction_id, i.sku",
        )
        .bind(tenant.as_str())
        .fetch_all(self.db().pool())
        .await?;
        let mut baskets: Vec<Vec<String>> = Vec::new();
        let mut current: Option<String> = None;
        for row in &rows {
            let interaction: String = row.try_get("interaction_id")?;
            let sku: String = row.try_get("sku")?;
            if current.as_deref() != Some(interaction.as_str()) {
                baskets.push(Vec::new());
                current = Some(interaction);
            }
            if let Some(basket) = baskets.last_mut()
                && basket.last() != Some(&sku)
            {
                basket.push(sku);
            }
        }
        Ok(baskets)
    }
}
