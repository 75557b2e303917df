//! Store: complaint cases. A `complaint` interaction (from
//! `POST /v1/complaints`, `POST /v1/interactions` or a connector's inbound
//! event) opens a case in its own transaction: status `open`, due after
//! the tenant's response time (counted from when the complaint was made),
//! and the tenant's `complaint_opened` triggers fire with it.
//!
//! Lifecycle: `open` -> `answered` -> `resolved` (or `open` -> `resolved`);
//! every move is one conditional UPDATE on the status it leaves, so two
//! concurrent moves cannot both happen. An `open` case past its due time is
//! escalated once (`escalated_at`, `complaint_escalated` triggers) by the
//! server's escalation check (every minute) or `POST
//! /v1/complaints/escalate`; answering stops the clock, escalation stays on
//! the record. Resolving credits the service-recovery (goodwill) points
//! once per case: the transition to `resolved` happens once, and the
//! ledger entry's idempotency key is `goodwill:<case id>` besides.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::interactions::Interaction;
use super::playbook::{MAX_PLAYBOOK_POINTS, credit_points_tx, settings_tx};
use super::sql::page_limit;
use super::{Page, Store, StoreError, StoreResult, TenantId, cursor, from_millis, millis, new_id, now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComplaintStatus {
    Open,
    Answered,
    Resolved,
}

impl ComplaintStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ComplaintStatus::Open => "open",
            ComplaintStatus::Answered => "answered",
            ComplaintStatus::Resolved => "resolved",
        }
    }
    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "open" => Ok(ComplaintStatus::Open),
            "answered" => Ok(ComplaintStatus::Answered),
            "resolved" => Ok(ComplaintStatus::Resolved),
            other => Err(StoreError::Corrupt(format!("complaint status {other:?}"))),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Complaint {
    pub id: String,
    pub customer_id: String,
    /// The `complaint` interaction that opened the case.
    pub interaction_id: String,
    /// The interaction payload's `subject` (absent once the customer is erased).
    pub subject: Option<String>,
    pub channel: Option<String>,
    pub status: ComplaintStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub opened_at: OffsetDateTime,
    /// When an answer is due; an `open` case past it escalates.
    #[serde(with = "time::serde::rfc3339")]
    pub due_at: OffsetDateTime,
    /// `open` and past `due_at` now.
    pub overdue: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub answered_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
    pub escalated: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub escalated_at: Option<OffsetDateTime>,
    /// Goodwill points credited when the case was resolved.
    pub goodwill_points: Option<i64>,
    /// The ledger entry of those points.
    pub goodwill_entry_id: Option<String>,
}

/// A complaint to open (`POST /v1/complaints`): stored as a `complaint`
/// interaction. Name the customer by exactly one of `customer_id` or
/// `customer_external_id` (created if new).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewComplaint {
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub customer_external_id: Option<String>,
    /// What the complaint is about, 1 to 500 characters.
    pub subject: String,
    #[serde(default)]
    pub channel: Option<String>,
    /// When it was made (default: now); the response time counts from it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub occurred_at: Option<OffsetDateTime>,
    /// Retrying with the same key and body returns the same case.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

pub const MAX_SUBJECT_CHARS: usize = 500;

impl NewComplaint {
    /// The interaction that opens the case.
    pub fn into_interaction(self) -> StoreResult<super::interactions::NewInteraction> {
        let n = self.subject.trim().chars().count();
        if n == 0 || n > MAX_SUBJECT_CHARS {
            return Err(StoreError::invalid(
                "subject",
                format!("must be 1 to {MAX_SUBJECT_CHARS} characters"),
            ));
        }
        Ok(super::interactions::NewInteraction {
            customer_id: self.customer_id,
            customer_external_id: self.customer_external_id,
            kind: "complaint".into(),
            channel: self.channel,
            occurred_at: self.occurred_at,
            amount: None,
            currency: None,
            items: Vec::new(),
            payload: json!({ "subject": self.subject.trim() }),
            idempotency_key: self.idempotency_key,
        })
    }
}

/// A move of a case (`PATCH /v1/complaints/{id}`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComplaintUpdate {
    /// `answered` (from `open`) or `resolved` (from `open` or `answered`).
    pub status: ComplaintStatus,
    /// With `resolved`: goodwill points for this case instead of the
    /// tenant's `goodwill_points` setting (0: none).
    #[serde(default)]
    pub goodwill_points: Option<i64>,
}

/// Filters of `GET /v1/complaints`.
#[derive(Debug, Clone, Default)]
pub struct ComplaintFilter {
    pub status: Option<ComplaintStatus>,
    pub escalated: Option<bool>,
    pub customer_id: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

const COLUMNS: &str = "c.id, c.customer_id, c.interaction_id, c.status, c.opened_at, c.due_at, c.answered_at, \
     c.resolved_at, c.escalated_at, c.goodwill_points, c.goodwill_entry_id, i.channel, i.payload";
const FROM: &str = "FROM complaints c JOIN interactions i ON i.tenant_id = c.tenant_id AND i.id = c.interaction_id";

fn complaint_from_row(row: &AnyRow, now: i64) -> StoreResult<Complaint> {
    let status = ComplaintStatus::parse(&row.try_get::<String, _>("status")?)?;
    let due_at: i64 = row.try_get("due_at")?;
    let escalated_at: Option<i64> = row.try_get("escalated_at")?;
    let payload: String = row.try_get("payload")?;
    let subject = super::json_column(&payload)?
        .get("subject")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(Complaint {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        interaction_id: row.try_get("interaction_id")?,
        subject,
        channel: row.try_get("channel")?,
        status,
        opened_at: from_millis(row.try_get("opened_at")?),
        due_at: from_millis(due_at),
        overdue: status == ComplaintStatus::Open && now > due_at,
        answered_at: row.try_get::<Option<i64>, _>("answered_at")?.map(from_millis),
        resolved_at: row.try_get::<Option<i64>, _>("resolved_at")?.map(from_millis),
        escalated: escalated_at.is_some(),
        escalated_at: escalated_at.map(from_millis),
        goodwill_points: row.try_get("goodwill_points")?,
        goodwill_entry_id: row.try_get("goodwill_entry_id")?,
    })
}

pub async fn get_complaint_tx(conn: &mut AnyConnection, tenant: &TenantId, id: &str) -> StoreResult<Complaint> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} {FROM} WHERE c.tenant_id = $1 AND c.id = $2"))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound { entity: "complaint" })?;
    complaint_from_row(&row, now_ms())
}

/// Opens the case of a new `complaint` interaction and fires the tenant's
/// `complaint_opened` triggers, on the ingest's connection.
pub(super) async fn open_case_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    interaction: &Interaction,
) -> StoreResult<Complaint> {
    if let Some(subject) = interaction.payload.get("subject")
        && !subject.is_string()
    {
        return Err(StoreError::invalid("payload.subject", "must be a string"));
    }
    let settings = settings_tx(conn, tenant).await?;
    let opened_at = millis(interaction.occurred_at);
    let due_at = opened_at.saturating_add(settings.complaint_response_hours * 3_600_000);
    let id = new_id();
    sqlx::query(
        "INSERT INTO complaints (tenant_id, id, customer_id, interaction_id, status, opened_at, due_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'open', $5, $6, $7)",
    )
    .bind(tenant.as_str())
    .bind(&id)
    .bind(&interaction.customer_id)
    .bind(&interaction.id)
    .bind(opened_at)
    .bind(due_at)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    let complaint = get_complaint_tx(conn, tenant, &id).await?;
    super::triggers::on_complaint_tx(conn, tenant, "complaint_opened", &complaint).await?;
    Ok(complaint)
}

/// Escalates the tenant's `open` cases due before `now`, each once, firing
/// `complaint_escalated`; returns them.
async fn escalate_tx(conn: &mut AnyConnection, tenant: &TenantId, now: i64) -> StoreResult<Vec<Complaint>> {
    let rows = sqlx::query(
        "UPDATE complaints SET escalated_at = $2, updated_at = $2 \
         WHERE tenant_id = $1 AND status = 'open' AND escalated_at IS NULL AND due_at < $2 RETURNING id",
    )
    .bind(tenant.as_str())
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let mut ids = rows
        .iter()
        .map(|r| r.try_get::<String, _>("id"))
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort();
    let mut escalated = Vec::with_capacity(ids.len());
    for id in ids {
        let complaint = get_complaint_tx(conn, tenant, &id).await?;
        super::triggers::on_complaint_tx(conn, tenant, "complaint_escalated", &complaint).await?;
        escalated.push(complaint);
    }
    Ok(escalated)
}

impl Store {
    /// The case a `complaint` interaction opened.
    pub async fn complaint_of_interaction(&self, tenant: &TenantId, interaction_id: &str) -> StoreResult<Complaint> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} {FROM} WHERE c.tenant_id = $1 AND c.interaction_id = $2"
        ))
        .bind(tenant.as_str())
        .bind(interaction_id)
        .fetch_optional(self.db().pool())
        .await?
        .ok_or(StoreError::NotFound { entity: "complaint" })?;
        complaint_from_row(&row, now_ms())
    }

    pub async fn get_complaint(&self, tenant: &TenantId, id: &str) -> StoreResult<Complaint> {
        let mut conn = self.db().pool().acquire().await?;
        get_complaint_tx(&mut conn, tenant, id).await
    }

    /// The tenant's cases, newest first, filtered.
    pub async fn list_complaints(&self, tenant: &TenantId, filter: ComplaintFilter) -> StoreResult<Page<Complaint>> {
        let limit = page_limit(filter.limit)?;
        let mut conn = self.db().pool().acquire().await?;
        if let Some(customer) = &filter.customer_id {
            super::customers::get_customer_tx(&mut conn, tenant, customer).await?;
        }
        let mut sql = super::sql::Sql::new(&format!("SELECT {COLUMNS} {FROM} WHERE c.tenant_id = "));
        let p = sql.arg(super::sql::Arg::Text(tenant.as_str().to_owned()));
        sql.push(&p);
        if let Some(customer) = filter.customer_id {
            let p = sql.arg(super::sql::Arg::Text(customer));
            sql.push(&format!(" AND c.customer_id = {p}"));
        }
        if let Some(status) = filter.status {
            let p = sql.arg(super::sql::Arg::Text(status.as_str().to_owned()));
            sql.push(&format!(" AND c.status = {p}"));
        }
        match filter.escalated {
            Some(true) => sql.push(" AND c.escalated_at IS NOT NULL"),
            Some(false) => sql.push(" AND c.escalated_at IS NULL"),
            None => {}
        }
        if let Some(c) = &filter.cursor {
            let (at, id): (i64, String) = cursor::decode(c)?;
            let at = sql.arg(super::sql::Arg::Int(at));
            let id = sql.arg(super::sql::Arg::Text(id));
            sql.push(&format!(
                " AND (c.opened_at < {at} OR (c.opened_at = {at} AND c.id < {id}))"
            ));
        }
        let p = sql.arg(super::sql::Arg::Int(limit + 1));
        sql.push(&format!(" ORDER BY c.opened_at DESC, c.id DESC LIMIT {p}"));
        let rows = sql.query().fetch_all(&mut *conn).await?;
        let now = now_ms();
        let mut items = rows
            .iter()
            .map(|r| complaint_from_row(r, now))
            .collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items
                .last()
                .map(|c| cursor::encode(&(millis(c.opened_at), c.id.clone())))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Moves a case to `answered` or `resolved` (see the module doc).
    pub async fn update_complaint(
        &self,
        tenant: &TenantId,
        id: &str,
        update: ComplaintUpdate,
    ) -> StoreResult<Complaint> {
        let (from, set) = match update.status {
            ComplaintStatus::Open => {
                return Err(StoreError::invalid(
                    "status",
                    "a case cannot be reopened; move it to answered or resolved",
                ));
            }
            ComplaintStatus::Answered => ("('open')", "status = 'answered', answered_at = $3"),
            ComplaintStatus::Resolved => ("('open', 'answered')", "status = 'resolved', resolved_at = $3"),
        };
        if let Some(points) = update.goodwill_points {
            if update.status != ComplaintStatus::Resolved {
                return Err(StoreError::invalid("goodwill_points", "only with status resolved"));
            }
            if !(0..=MAX_PLAYBOOK_POINTS).contains(&points) {
                return Err(StoreError::invalid(
                    "goodwill_points",
                    format!("must be 0 to {MAX_PLAYBOOK_POINTS}"),
                ));
            }
        }
        let mut tx = self.db().begin_write().await?;
        let now = now_ms();
        let moved = sqlx::query(&format!(
            "UPDATE complaints SET {set}, updated_at = $3 WHERE tenant_id = $1 AND id = $2 AND status IN {from}"
        ))
        .bind(tenant.as_str())
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            let current = get_complaint_tx(&mut tx, tenant, id).await?;
            return Err(StoreError::conflict(
                "invalid_transition",
                format!(
                    "complaint is {}; it cannot move to {}",
                    current.status.as_str(),
                    update.status.as_str()
                ),
            ));
        }
        if update.status == ComplaintStatus::Resolved {
            let case = get_complaint_tx(&mut tx, tenant, id).await?;
            let points = match update.goodwill_points {
                Some(p) => p,
                None => settings_tx(&mut tx, tenant).await?.goodwill_points,
            };
            let entry = credit_points_tx(
                &mut tx,
                tenant,
                &case.customer_id,
                points,
                "goodwill: complaint resolved",
                format!("goodwill:{id}"),
            )
            .await?;
            if let Some(entry) = entry {
                sqlx::query(
                    "UPDATE complaints SET goodwill_points = $3, goodwill_entry_id = $4 \
                     WHERE tenant_id = $1 AND id = $2 AND goodwill_entry_id IS NULL",
                )
                .bind(tenant.as_str())
                .bind(id)
                .bind(points)
                .bind(&entry)
                .execute(&mut *tx)
                .await?;
            }
        }
        let case = get_complaint_tx(&mut tx, tenant, id).await?;
        tx.commit().await?;
        Ok(case)
    }

    /// Escalates the tenant's overdue cases now (`POST /v1/complaints/escalate`).
    pub async fn escalate_complaints(&self, tenant: &TenantId) -> StoreResult<Vec<Complaint>> {
        let mut tx = self.db().begin_write().await?;
        let escalated = escalate_tx(&mut tx, tenant, now_ms()).await?;
        tx.commit().await?;
        Ok(escalated)
    }

    /// The server's escalation check: every tenant's overdue cases, one
    /// transaction per tenant. Returns how many were escalated.
    pub async fn escalate_overdue_complaints(&self) -> StoreResult<usize> {
        let now = now_ms();
        let rows = sqlx::query(
            "SELECT DISTINCT tenant_id FROM complaints WHERE status = 'open' AND escalated_at IS NULL AND due_at < $1",
        )
        .bind(now)
        .fetch_all(self.db().pool())
        .await?;
        let mut n = 0;
        for row in &rows {
            let tenant = TenantId::from_row(row.try_get("tenant_id")?);
            let mut tx = self.db().begin_write().await?;
            n += escalate_tx(&mut tx, &tenant, now).await?.len();
            tx.commit().await?;
        }
        Ok(n)
    }
}
