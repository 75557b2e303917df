//! Store: campaigns to segments. A campaign sends one message template to
//! every customer of an audience (a scoring plugin's stored segment, or a
//! score range: the customer list's score filters, saved with the campaign)
//! through the outbox, holds a share of the audience out as a control group,
//! and reads back what happened: delivered, failed and opened messages, and
//! the purchases made afterwards by recipients against the control group.
//!
//! Exactly once. The campaign row is idempotent by key (like messages: the
//! same request replays, a different one is a conflict). It runs in batches
//! ordered by customer id, each in one write transaction that enqueues the
//! batch's messages (outbox keys `campaign:<id>:<customer>`), records every
//! customer in `campaign_recipients` and advances `resume_after`; so a
//! retried request, or a run resumed after a crash, continues after the last
//! committed batch and can never message a customer twice (the recipients'
//! primary key and the outbox key would both refuse it).
//!
//! Control group. A customer is held out when the first 8 bytes of
//! sha256(campaign id, customer id), as a fraction of 2^64, fall below
//! `control_share`: stable for the campaign whatever the batch or retry, and
//! independent between campaigns. The arm is recorded per customer.
//! Suppressed customers are set aside before the draw, so both arms hold
//! only customers the campaign could reach.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::messages::{NewMessage, validate_channel};
use super::money::{Money, exact_sum, exact_sum_sql, saturate};
use super::sql::{Arg, Sql, page_limit};
use super::{Page, Store, StoreError, StoreResult, TenantId, cursor, from_millis, json_column, new_id, now_ms};
use crate::db::Backend;

/// Customers handled per transaction: small enough that the write lock
/// (SQLite's is the whole database's) is held briefly, large enough that a
/// million-customer segment is ~2,000 transactions.
pub const BATCH: i64 = 500;
const MAX_NAME_CHARS: usize = 200;
const MAX_KEY_CHARS: usize = 200;
const DEFAULT_CONTROL_SHARE: f64 = 0.1;
const DEFAULT_WINDOW_DAYS: u32 = 30;
const MAX_WINDOW_DAYS: u32 = 3_650;
const DAY_MS: i64 = 86_400_000;

/// Who a campaign is for: the customers with a stored score of
/// `score_plugin`, refined by its segment and a score range (the same
/// filters as `GET /v1/customers`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignAudience {
    /// A scoring plugin of the tenant (e.g. `rfm`).
    pub score_plugin: String,
    /// Exact segment of its current score (e.g. `At Risk`).
    #[serde(default)]
    pub segment: Option<String>,
    /// Its current score at least this (inclusive).
    #[serde(default)]
    pub min_score: Option<f64>,
    /// Its current score at most this (inclusive).
    #[serde(default)]
    pub max_score: Option<f64>,
}

/// A campaign as the API asks for it.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    pub name: String,
    /// The channel of every message (the tenant's connector for it delivers).
    pub channel: String,
    /// A message template of the tenant (for this channel or any).
    pub template: String,
    /// Variables for the template (`data.*`), the same for every customer.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    pub audience: CampaignAudience,
    /// Share of the audience held out as the control group, 0 to 0.9
    /// (default 0.1).
    #[serde(default)]
    pub control_share: Option<f64>,
    /// Purchases this many days after the start count as conversions
    /// (default 30, at most 3650).
    #[serde(default)]
    pub conversion_window_days: Option<u32>,
    /// Required (or the `Idempotency-Key` header): retrying the same
    /// campaign never sends twice, and resumes one that was interrupted.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    /// Batches remain (a retry of the request resumes it).
    Sending,
    /// Every customer of the audience was handled.
    Sent,
}

/// What became of the audience, and of the messages sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct CampaignCounts {
    /// Customers of the audience handled so far (every outcome).
    pub audience: i64,
    /// Messages queued in the outbox (the treatment arm).
    pub queued: i64,
    /// The control group: held out, not messaged.
    pub held_out: i64,
    /// Unsubscribed from the channel: not messaged, in neither arm.
    pub suppressed: i64,
    /// Not messaged for another reason (erased, no address, template error).
    pub skipped: i64,
    /// Of the queued messages: delivered by the connector.
    pub delivered: i64,
    /// Of the queued messages: given up on (dead).
    pub failed: i64,
    /// Of the queued messages: not yet delivered or given up on.
    pub pending: i64,
    /// Of the queued messages: opened, from inbound `message_opened` events
    /// whose payload's `message_id` is the message's id or its provider id.
    pub opened: i64,
}

/// Revenue of one arm in one currency, after the campaign started.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ArmRevenue {
    pub total: Money,
    /// `total` divided by the arm's customers (all of them, buyers or not).
    pub per_customer: Money,
}

/// How one arm did in the conversion window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ArmOutcome {
    pub customers: i64,
    /// Customers with at least one purchase in the window.
    pub converted: i64,
    /// `converted / customers` (0 for an empty arm).
    pub conversion_rate: f64,
    pub purchases: i64,
    /// Per currency, by currency code.
    pub revenue: Vec<ArmRevenue>,
}

/// Recipients against the control group.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CampaignResults {
    /// Purchases from the start of the campaign until this time count.
    #[serde(with = "time::serde::rfc3339")]
    pub window_ends_at: OffsetDateTime,
    pub recipients: ArmOutcome,
    pub control: ArmOutcome,
    /// Recipients' conversion rate minus the control group's (absolute).
    pub conversion_uplift: f64,
    /// `conversion_uplift` over the control group's rate; null when the
    /// control group has no conversion.
    pub relative_uplift: Option<f64>,
}

/// A stored campaign.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub channel: String,
    pub template: String,
    #[schema(value_type = Object)]
    pub data: Value,
    pub audience: CampaignAudience,
    pub control_share: f64,
    pub conversion_window_days: i64,
    pub idempotency_key: String,
    pub status: CampaignStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub counts: CampaignCounts,
}

/// A campaign with its results (the single-campaign read).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CampaignReport {
    #[serde(flatten)]
    pub campaign: Campaign,
    pub results: CampaignResults,
}

/// One customer of a campaign, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CampaignRecipient {
    pub customer_id: String,
    /// `treatment` or `control`.
    pub arm: String,
    /// `queued`, `held_out`, `suppressed` or `skipped`.
    pub outcome: String,
    pub message_id: Option<String>,
    pub reason: Option<String>,
}

const COLUMNS: &str = "id, name, channel, template, data, audience, control_share, conversion_window_days, \
                       idempotency_key, status, started_at, finished_at";

fn campaign_from_row(row: &AnyRow) -> StoreResult<Campaign> {
    let data: String = row.try_get("data")?;
    let audience: String = row.try_get("audience")?;
    let status: String = row.try_get("status")?;
    let finished: Option<i64> = row.try_get("finished_at")?;
    Ok(Campaign {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        channel: row.try_get("channel")?,
        template: row.try_get("template")?,
        data: json_column(&data)?,
        audience: serde_json::from_str(&audience)
            .map_err(|e| StoreError::Corrupt(format!("campaign audience: {e}")))?,
        control_share: row.try_get("control_share")?,
        conversion_window_days: row.try_get("conversion_window_days")?,
        idempotency_key: row.try_get("idempotency_key")?,
        status: match status.as_str() {
            "sending" => CampaignStatus::Sending,
            "sent" => CampaignStatus::Sent,
            other => return Err(StoreError::Corrupt(format!("unknown campaign status {other:?}"))),
        },
        started_at: from_millis(row.try_get("started_at")?),
        finished_at: finished.map(from_millis),
        counts: CampaignCounts::default(),
    })
}

fn text_field(field: &str, value: &str, max: usize) -> StoreResult<()> {
    if value.trim().is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            field,
            format!("1 to {max} characters, not blank, without control characters"),
        ));
    }
    Ok(())
}

/// Checks the request and fills in the defaults: (key, control share, window days).
fn validate(new: &NewCampaign) -> StoreResult<(String, f64, u32)> {
    let key = new
        .idempotency_key
        .clone()
        .ok_or_else(|| StoreError::invalid("idempotency_key", "required (or the Idempotency-Key header)"))?;
    text_field("idempotency_key", &key, MAX_KEY_CHARS)?;
    text_field("name", &new.name, MAX_NAME_CHARS)?;
    validate_channel("channel", &new.channel)?;
    text_field("template", &new.template, MAX_NAME_CHARS)?;
    text_field("audience.score_plugin", &new.audience.score_plugin, MAX_NAME_CHARS)?;
    if let Some(segment) = &new.audience.segment {
        text_field("audience.segment", segment, MAX_NAME_CHARS)?;
    }
    for (field, v) in [
        ("audience.min_score", new.audience.min_score),
        ("audience.max_score", new.audience.max_score),
    ] {
        if v.is_some_and(|v| !v.is_finite()) {
            return Err(StoreError::invalid(field, "must be a finite number"));
        }
    }
    let share = new.control_share.unwrap_or(DEFAULT_CONTROL_SHARE);
    if !(0.0..=0.9).contains(&share) {
        return Err(StoreError::invalid("control_share", "between 0 and 0.9"));
    }
    let days = new.conversion_window_days.unwrap_or(DEFAULT_WINDOW_DAYS);
    if !(1..=MAX_WINDOW_DAYS).contains(&days) {
        return Err(StoreError::invalid(
            "conversion_window_days",
            format!("between 1 and {MAX_WINDOW_DAYS}"),
        ));
    }
    if Value::Object(new.data.clone()).to_string().len() > 64 * 1024 {
        return Err(StoreError::invalid("data", "at most 65536 bytes"));
    }
    Ok((key, share, days))
}

fn request_hash(new: &NewCampaign, share: f64, days: u32) -> String {
    // serde_json maps are sorted, so the text is canonical.
    let canonical = json!({
        "name": new.name,
        "channel": new.channel,
        "template": new.template,
        "data": new.data,
        "audience": new.audience,
        "control_share": share,
        "conversion_window_days": days,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Whether `customer_id` is in the control group of `campaign_id`: the first
/// 8 bytes of sha256("<campaign>:<customer>") as a fraction of 2^64.
pub fn in_control_group(campaign_id: &str, customer_id: &str, share: f64) -> bool {
    let digest = Sha256::digest(format!("{campaign_id}:{customer_id}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) as f64 / 18_446_744_073_709_551_616.0) < share
}

/// The outbox key of a campaign's message to a customer.
fn message_key(campaign_id: &str, customer_id: &str) -> String {
    format!("campaign:{campaign_id}:{customer_id}")
}

/// The next batch of the audience after `after`, by customer id. The
/// primary key of `customer_scores` (tenant, customer, plugin) keeps the
/// order and the resumption an index range.
async fn audience_batch(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    audience: &CampaignAudience,
    after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<String>> {
    let mut sql = Sql::new("SELECT customer_id FROM customer_scores WHERE tenant_id = ");
    let p = sql.arg(Arg::Text(tenant.as_str().to_string()));
    sql.push(&p);
    let p = sql.arg(Arg::Text(audience.score_plugin.clone()));
    sql.push(&format!(" AND plugin_id = {p}"));
    if let Some(segment) = &audience.segment {
        let p = sql.arg(Arg::Text(segment.clone()));
        sql.push(&format!(" AND segment = {p}"));
    }
    if let Some(min) = audience.min_score {
        let p = sql.arg(Arg::Float(min));
        sql.push(&format!(" AND value >= {p}"));
    }
    if let Some(max) = audience.max_score {
        let p = sql.arg(Arg::Float(max));
        sql.push(&format!(" AND value <= {p}"));
    }
    if let Some(after) = after {
        let p = sql.arg(Arg::Text(after.to_string()));
        sql.push(&format!(" AND customer_id > {p}"));
    }
    let p = sql.arg(Arg::Int(limit));
    sql.push(&format!(" ORDER BY customer_id LIMIT {p}"));
    let rows = sql.query().fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>("customer_id").map_err(StoreError::from))
        .collect()
}

/// What happened to one customer of a batch.
struct Handled {
    arm: &'static str,
    outcome: &'static str,
    message_id: Option<String>,
    reason: Option<String>,
}

async fn handle_customer(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    campaign: &Campaign,
    customer_id: &str,
) -> StoreResult<Handled> {
    let skipped = |arm, reason: String| Handled {
        arm,
        outcome: "skipped",
        message_id: None,
        reason: Some(reason),
    };
    if super::suppressions::is_suppressed_tx(conn, tenant, customer_id, &campaign.channel).await? {
        return Ok(Handled {
            arm: "treatment",
            outcome: "suppressed",
            message_id: None,
            reason: Some(format!("unsubscribed from channel {:?}", campaign.channel)),
        });
    }
    if in_control_group(&campaign.id, customer_id, campaign.control_share) {
        return Ok(Handled {
            arm: "control",
            outcome: "held_out",
            message_id: None,
            reason: None,
        });
    }
    let data = match &campaign.data {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let mut metadata = Map::new();
    metadata.insert("campaign_id".into(), Value::String(campaign.id.clone()));
    let new = NewMessage {
        customer_id: customer_id.to_string(),
        channel: campaign.channel.clone(),
        template: Some(campaign.template.clone()),
        data,
        metadata,
        idempotency_key: Some(message_key(&campaign.id, customer_id)),
        ..NewMessage::default()
    };
    // The outbox checks the rest without failing the transaction (its
    // refusals are reads, never a failed statement), so one customer's
    // missing address does not stop the batch.
    match super::messages::enqueue_tx(conn, tenant, new).await {
        Ok((message, _)) => Ok(Handled {
            arm: "treatment",
            outcome: "queued",
            message_id: Some(message.id),
            reason: None,
        }),
        Err(StoreError::Conflict {
            code: "customer_unsubscribed",
            message,
        }) => Ok(Handled {
            arm: "treatment",
            outcome: "suppressed",
            message_id: None,
            reason: Some(message),
        }),
        Err(e @ (StoreError::Conflict { .. } | StoreError::Invalid { .. } | StoreError::Unprocessable { .. })) => {
            Ok(skipped("treatment", e.to_string()))
        }
        Err(e) => Err(e),
    }
}

impl Store {
    /// Stores a campaign (idempotent by key). Returns it and whether it was
    /// created; the same request again returns the stored campaign (to be
    /// resumed if it is still `sending`), a different request with the key
    /// is a 409 `idempotency_conflict`. Unknown template, or a template for
    /// another channel: 422.
    pub async fn create_campaign(&self, tenant: &TenantId, new: NewCampaign) -> StoreResult<(Campaign, bool)> {
        let (key, share, days) = validate(&new)?;
        let hash = request_hash(&new, share, days);
        let mut tx = self.db().begin_write().await?;
        let existing = sqlx::query(&format!(
            "SELECT {COLUMNS}, request_hash FROM campaigns WHERE tenant_id = $1 AND idempotency_key = $2"
        ))
        .bind(tenant.as_str())
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            let stored: String = row.try_get("request_hash")?;
            if stored != hash {
                return Err(StoreError::conflict(
                    "idempotency_conflict",
                    format!("idempotency key {key:?} was already used with a different campaign"),
                ));
            }
            let campaign = campaign_from_row(&row)?;
            tx.commit().await?;
            return Ok((campaign, false));
        }
        let template: Option<Option<String>> =
            sqlx::query("SELECT channel FROM message_templates WHERE tenant_id = $1 AND name = $2")
                .bind(tenant.as_str())
                .bind(&new.template)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("channel"))
                .transpose()?;
        match template {
            None => {
                return Err(StoreError::invalid(
                    "template",
                    format!("no message template named {:?}", new.template),
                ));
            }
            Some(Some(only)) if only != new.channel => {
                return Err(StoreError::invalid(
                    "template",
                    format!(
                        "template {:?} is for channel {only:?}, not {:?}",
                        new.template, new.channel
                    ),
                ));
            }
            Some(_) => {}
        }
        let id = new_id();
        let now = now_ms();
        let audience = serde_json::to_string(&new.audience).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO campaigns (tenant_id, id, name, idempotency_key, request_hash, channel, template, data, \
             audience, control_share, conversion_window_days, status, resume_after, started_at, finished_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'sending', NULL, $12, NULL, $12)",
        )
        .bind(tenant.as_str())
        .bind(&id)
        .bind(&new.name)
        .bind(&key)
        .bind(&hash)
        .bind(&new.channel)
        .bind(&new.template)
        .bind(Value::Object(new.data.clone()).to_string())
        .bind(audience)
        .bind(share)
        .bind(i64::from(days))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM campaigns WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_str())
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
        let campaign = campaign_from_row(&row)?;
        tx.commit().await?;
        Ok((campaign, true))
    }

    /// Handles the next batch of a campaign's audience in one write
    /// transaction: each customer's message enqueued (or held out, or set
    /// aside), recorded, and the campaign's `resume_after` advanced. Returns
    /// `true` once the campaign is `sent`. Safe to call concurrently and
    /// after a crash: the batch starts after the last committed one.
    pub async fn run_campaign_batch(&self, tenant: &TenantId, id: &str, limit: i64) -> StoreResult<bool> {
        let mut tx = self.db().begin_write().await?;
        // Locks the campaign's row (PostgreSQL) so two runs of the same
        // campaign take turns; SQLite's write transaction already does.
        let locked = sqlx::query("UPDATE campaigns SET updated_at = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Err(StoreError::NotFound { entity: "campaign" });
        }
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, resume_after FROM campaigns WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let campaign = campaign_from_row(&row)?;
        if campaign.status == CampaignStatus::Sent {
            tx.commit().await?;
            return Ok(true);
        }
        let after: Option<String> = row.try_get("resume_after")?;
        let batch = audience_batch(&mut tx, tenant, &campaign.audience, after.as_deref(), limit).await?;
        let now = now_ms();
        for customer_id in &batch {
            let handled = handle_customer(&mut tx, tenant, &campaign, customer_id).await?;
            sqlx::query(
                "INSERT INTO campaign_recipients (tenant_id, campaign_id, customer_id, arm, outcome, message_id, \
                 reason, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (tenant_id, campaign_id, customer_id) DO NOTHING",
            )
            .bind(tenant.as_str())
            .bind(id)
            .bind(customer_id)
            .bind(handled.arm)
            .bind(handled.outcome)
            .bind(handled.message_id)
            .bind(handled.reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let done = (batch.len() as i64) < limit;
        let last = batch.last().cloned().or(after);
        sqlx::query(
            "UPDATE campaigns SET resume_after = $3, status = $4, finished_at = $5, updated_at = $6 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(last)
        .bind(if done { "sent" } else { "sending" })
        .bind(done.then_some(now))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Runs a campaign's remaining batches to the end.
    pub async fn run_campaign(&self, tenant: &TenantId, id: &str) -> StoreResult<()> {
        while !self.run_campaign_batch(tenant, id, BATCH).await? {}
        Ok(())
    }

    /// The campaigns still `sending` (of every tenant), for resumption at
    /// start-up: (tenant, campaign id).
    pub async fn unfinished_campaigns(&self) -> StoreResult<Vec<(TenantId, String)>> {
        let rows = sqlx::query("SELECT tenant_id, id FROM campaigns WHERE status = 'sending' ORDER BY tenant_id, id")
            .fetch_all(self.db().pool())
            .await?;
        rows.iter()
            .map(|r| Ok((TenantId::from_row(r.try_get("tenant_id")?), r.try_get("id")?)))
            .collect()
    }

    async fn campaign_counts(
        &self,
        conn: &mut AnyConnection,
        tenant: &TenantId,
        c: &Campaign,
    ) -> StoreResult<CampaignCounts> {
        let rows = sqlx::query(
            "SELECT r.outcome, m.status, CAST(COUNT(*) AS BIGINT) AS n FROM campaign_recipients r \
             LEFT JOIN messages m ON m.tenant_id = r.tenant_id AND m.id = r.message_id \
             WHERE r.tenant_id = $1 AND r.campaign_id = $2 GROUP BY r.outcome, m.status",
        )
        .bind(tenant.as_str())
        .bind(&c.id)
        .fetch_all(&mut *conn)
        .await?;
        let mut counts = CampaignCounts::default();
        for row in &rows {
            let outcome: String = row.try_get("outcome")?;
            let status: Option<String> = row.try_get("status")?;
            let n: i64 = row.try_get("n")?;
            counts.audience += n;
            match outcome.as_str() {
                "queued" => counts.queued += n,
                "held_out" => counts.held_out += n,
                "suppressed" => counts.suppressed += n,
                _ => counts.skipped += n,
            }
            match status.as_deref() {
                Some("delivered") => counts.delivered += n,
                Some("dead") => counts.failed += n,
                Some(_) => counts.pending += n,
                None => {}
            }
        }
        // An open counts once per message, from the recipient's own
        // timeline (the interactions' per-customer index), after the start.
        let message_ref = match self.db().backend() {
            Backend::Sqlite => "json_extract(i.payload, '$.message_id')",
            Backend::Postgres => "(CAST(i.payload AS jsonb) ->> 'message_id')",
        };
        counts.opened = sqlx::query(&format!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM campaign_recipients r \
             JOIN messages m ON m.tenant_id = r.tenant_id AND m.id = r.message_id \
             WHERE r.tenant_id = $1 AND r.campaign_id = $2 AND EXISTS (\
               SELECT 1 FROM interactions i WHERE i.tenant_id = r.tenant_id AND i.customer_id = r.customer_id \
               AND i.occurred_at >= $3 AND i.kind || '' = 'message_opened' \
               AND ({message_ref} = m.id OR {message_ref} = m.provider_id))"
        ))
        .bind(tenant.as_str())
        .bind(&c.id)
        .bind(super::millis(c.started_at))
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
        Ok(counts)
    }

    async fn campaign_results(
        &self,
        conn: &mut AnyConnection,
        tenant: &TenantId,
        c: &Campaign,
    ) -> StoreResult<CampaignResults> {
        let start = super::millis(c.started_at);
        let end = start.saturating_add(c.conversion_window_days.saturating_mul(DAY_MS));
        let mut arms = [ArmOutcome::default(), ArmOutcome::default()];
        let arm_index = |outcome: &str| if outcome == "queued" { 0 } else { 1 };
        // Both arms: the messaged (`queued`) and the held out.
        let sizes = sqlx::query(
            "SELECT outcome, CAST(COUNT(*) AS BIGINT) AS n FROM campaign_recipients \
             WHERE tenant_id = $1 AND campaign_id = $2 AND outcome IN ('queued', 'held_out') GROUP BY outcome",
        )
        .bind(tenant.as_str())
        .bind(&c.id)
        .fetch_all(&mut *conn)
        .await?;
        for row in &sizes {
            let outcome: String = row.try_get("outcome")?;
            arms[arm_index(&outcome)].customers = row.try_get("n")?;
        }
        // Purchases in the window, read per recipient through the
        // interactions' (tenant, customer, occurred_at) index.
        let purchases = "FROM campaign_recipients r JOIN interactions i \
             ON i.tenant_id = r.tenant_id AND i.customer_id = r.customer_id \
             WHERE r.tenant_id = $1 AND r.campaign_id = $2 AND r.outcome IN ('queued', 'held_out') \
             AND i.occurred_at >= $3 AND i.occurred_at < $4 AND i.kind || '' = 'purchase'";
        let converted = sqlx::query(&format!(
            "SELECT r.outcome, CAST(COUNT(DISTINCT r.customer_id) AS BIGINT) AS buyers, \
             CAST(COUNT(*) AS BIGINT) AS purchases {purchases} GROUP BY r.outcome"
        ))
        .bind(tenant.as_str())
        .bind(&c.id)
        .bind(start)
        .bind(end)
        .fetch_all(&mut *conn)
        .await?;
        for row in &converted {
            let outcome: String = row.try_get("outcome")?;
            let arm = &mut arms[arm_index(&outcome)];
            arm.converted = row.try_get("buyers")?;
            arm.purchases = row.try_get("purchases")?;
        }
        let revenue = sqlx::query(&format!(
            "SELECT r.outcome, i.currency, {} {purchases} AND i.amount_minor IS NOT NULL \
             GROUP BY r.outcome, i.currency ORDER BY i.currency",
            exact_sum_sql("i.amount_minor", "total")
        ))
        .bind(tenant.as_str())
        .bind(&c.id)
        .bind(start)
        .bind(end)
        .fetch_all(&mut *conn)
        .await?;
        for row in &revenue {
            let outcome: String = row.try_get("outcome")?;
            let code: String = row.try_get("currency")?;
            let arm = &mut arms[arm_index(&outcome)];
            let total = saturate(exact_sum(row, "total")?);
            let per = if arm.customers > 0 { total / arm.customers } else { 0 };
            arm.revenue.push(ArmRevenue {
                total: Money::stored(&code, total)?,
                per_customer: Money::stored(&code, per)?,
            });
        }
        for arm in &mut arms {
            arm.conversion_rate = if arm.customers > 0 {
                arm.converted as f64 / arm.customers as f64
            } else {
                0.0
            };
        }
        let [recipients, control] = arms;
        let uplift = recipients.conversion_rate - control.conversion_rate;
        Ok(CampaignResults {
            window_ends_at: from_millis(end),
            conversion_uplift: uplift,
            relative_uplift: (control.conversion_rate > 0.0).then(|| uplift / control.conversion_rate),
            recipients,
            control,
        })
    }

    /// One campaign with its counts and results; 404 if not the tenant's.
    pub async fn get_campaign(&self, tenant: &TenantId, id: &str) -> StoreResult<CampaignReport> {
        let mut conn = self.db().pool().acquire().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM campaigns WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound { entity: "campaign" })?;
        let mut campaign = campaign_from_row(&row)?;
        campaign.counts = self.campaign_counts(&mut conn, tenant, &campaign).await?;
        let results = self.campaign_results(&mut conn, tenant, &campaign).await?;
        Ok(CampaignReport { campaign, results })
    }

    /// The tenant's campaigns with their counts, newest first.
    pub async fn list_campaigns(
        &self,
        tenant: &TenantId,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> StoreResult<Page<Campaign>> {
        let limit = page_limit(limit)?;
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM campaigns WHERE tenant_id = "));
        let p = sql.arg(Arg::Text(tenant.as_str().to_string()));
        sql.push(&p);
        if let Some(c) = after {
            let (before_id,): (String,) = cursor::decode(c)?;
            let p = sql.arg(Arg::Text(before_id));
            sql.push(&format!(" AND id < {p}"));
        }
        let p = sql.arg(Arg::Int(limit + 1));
        sql.push(&format!(" ORDER BY id DESC LIMIT {p}"));
        let mut conn = self.db().pool().acquire().await?;
        let rows = sql.query().fetch_all(&mut *conn).await?;
        let mut items = rows.iter().map(campaign_from_row).collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|c| cursor::encode(&(c.id.clone(),)))
        } else {
            None
        };
        for campaign in &mut items {
            campaign.counts = self.campaign_counts(&mut conn, tenant, campaign).await?;
        }
        Ok(Page { items, next_cursor })
    }

    /// A campaign's recipients in customer id order (who was messaged, held
    /// out or set aside, and why); 404 if not the tenant's campaign.
    pub async fn campaign_recipients(
        &self,
        tenant: &TenantId,
        id: &str,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> StoreResult<Page<CampaignRecipient>> {
        let limit = page_limit(limit)?;
        let mut conn = self.db().pool().acquire().await?;
        sqlx::query("SELECT id FROM campaigns WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(StoreError::NotFound { entity: "campaign" })?;
        let mut sql = Sql::new(
            "SELECT customer_id, arm, outcome, message_id, reason FROM campaign_recipients WHERE tenant_id = ",
        );
        let p = sql.arg(Arg::Text(tenant.as_str().to_string()));
        sql.push(&p);
        let p = sql.arg(Arg::Text(id.to_string()));
        sql.push(&format!(" AND campaign_id = {p}"));
        if let Some(c) = after {
            let (after_id,): (String,) = cursor::decode(c)?;
            let p = sql.arg(Arg::Text(after_id));
            sql.push(&format!(" AND customer_id > {p}"));
        }
        let p = sql.arg(Arg::Int(limit + 1));
        sql.push(&format!(" ORDER BY customer_id LIMIT {p}"));
        let rows = sql.query().fetch_all(&mut *conn).await?;
        let mut items = rows
            .iter()
            .map(|r| {
                Ok(CampaignRecipient {
                    customer_id: r.try_get("customer_id")?,
                    arm: r.try_get("arm")?,
                    outcome: r.try_get("outcome")?,
                    message_id: r.try_get("message_id")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|c| cursor::encode(&(c.customer_id.clone(),)))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_draw_is_stable_and_near_its_share() {
        let held = (0..10_000)
            .filter(|i| in_control_group("c1", &format!("cust-{i}"), 0.2))
            .count();
        assert!((1_800..2_200).contains(&held), "{held}");
        for i in 0..100 {
            let id = format!("cust-{i}");
            assert_eq!(in_control_group("c1", &id, 0.2), in_control_group("c1", &id, 0.2));
        }
        assert!(!(0..1_000).any(|i| in_control_group("c1", &format!("x{i}"), 0.0)));
    }
}
