//! Store: message triggers. A tenant configures "when X happens to a
//! customer, send them template T on channel C"; the host fires the trigger
//! where it records X, inside the same transaction, by putting a message in
//! the outbox (`store::messages`). So the event and its message commit
//! together or not at all, and the message is delivered by the outbox
//! workers with their retries like any other.
//!
//! The events:
//! - `tier_changed`: the customer's loyalty tier changed (by a reward-scheme
//!   plugin or an admin); optionally only to one tier (`to_tier`) or only
//!   upgrades or downgrades (`direction`, by tier rank; no tier ranks below
//!   every tier). Template data: `from_tier`, `to_tier` (ids),
//!   `from_tier_name`, `to_tier_name`, `direction`.
//! - `score_crossed`: a scoring plugin's score for the customer crossed a
//!   threshold (`above`: from below it to at or above it; `below`: the
//!   reverse). A customer's first score counts only with
//!   `include_first_score`, because the first batch scoring of a tenant
//!   would otherwise message everyone already on that side.
//! - `reward_redeemable`: points earned took the balance from below a
//!   reward's cost to at least its cost (any active reward, or one named
//!   `reward_id`), and the customer's tier is high enough for it.
//! - `complaint_opened`, `complaint_escalated`: a complaint case was opened,
//!   or escalated because it stayed unanswered past its due time
//!   (`store/complaints.rs`). Template data: `complaint` (id, subject,
//!   status, opened_at, due_at). Point the trigger at a channel whose
//!   connector reaches the tenant's staff (a webhook, say) to alert them.
//!
//! Audience: any trigger may be limited to customers whose stored segment
//! of one scoring plugin is in a list (`audience: {plugin, segments}`), e.g.
//! the relationship level of `relationship-levels`, so that each level gets
//! its own treatment. A customer without a score of that plugin is outside
//! every audience.
//!
//! Exactly once. Each firing's message has the idempotency key
//! `trigger:<trigger id>:<event key>`, where the event key names the
//! occurrence (the tier change's id, the score's customer and time, the
//! ledger entry and reward), so the same occurrence can never message twice,
//! even if the code path that records it is retried.
//!
//! A trigger that cannot produce a message for a customer (no address for
//! the channel, say) is logged and skipped: it never fails the event that
//! fired it. Database errors do fail it, like any write of that transaction.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::messages::{NewMessage, enqueue_tx};
use super::{Store, StoreError, StoreResult, TenantId, from_millis, is_unique_violation, json_column, new_id, now_ms};

/// A tenant holds at most this many triggers (they are read on every
/// occurrence of their event).
pub const MAX_TRIGGERS: i64 = 100;
pub const MAX_TRIGGER_NAME_CHARS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TierDirection {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CrossDirection {
    Above,
    Below,
}

/// When a trigger fires: the event and its conditions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum TriggerCondition {
    TierChanged {
        /// Only changes to this tier id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_tier: Option<String>,
        /// Only upgrades or only downgrades (by tier rank).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        direction: Option<TierDirection>,
    },
    ScoreCrossed {
        /// The scoring plugin whose score is watched.
        plugin: String,
        threshold: f64,
        direction: CrossDirection,
        /// Whether a customer's first score counts as a crossing when it
        /// lands on the trigger's side (default false).
        #[serde(default)]
        include_first_score: bool,
    },
    RewardRedeemable {
        /// Only this reward (default: any active reward).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reward_id: Option<String>,
    },
    /// A complaint case was opened.
    ComplaintOpened {},
    /// An open complaint case passed its due time unanswered.
    ComplaintEscalated {},
}

pub use super::audience::Audience;

impl TriggerCondition {
    pub fn event(&self) -> &'static str {
        match self {
            TriggerCondition::TierChanged { .. } => "tier_changed",
            TriggerCondition::ScoreCrossed { .. } => "score_crossed",
            TriggerCondition::RewardRedeemable { .. } => "reward_redeemable",
            TriggerCondition::ComplaintOpened {} => "complaint_opened",
            TriggerCondition::ComplaintEscalated {} => "complaint_escalated",
        }
    }
}

/// A trigger to create (`POST /v1/message-triggers`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTrigger {
    pub name: String,
    pub when: TriggerCondition,
    /// The message channel, e.g. `email`.
    pub channel: String,
    /// The name of one of the tenant's message templates.
    pub template: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Only customers in these segments of a scoring plugin (default: all).
    #[serde(default)]
    pub audience: Option<Audience>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Trigger {
    pub id: String,
    pub name: String,
    pub when: TriggerCondition,
    pub channel: String,
    pub template: String,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<Audience>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// `enabled` read as a BIGINT (see `store/plugins.rs` on BOOLEAN via Any).
const COLUMNS: &str = "id, name, conditions, channel, template, \
     CAST(CASE WHEN enabled THEN 1 ELSE 0 END AS BIGINT) AS enabled, created_at, updated_at, audience";

fn trigger_from_row(row: &AnyRow) -> StoreResult<Trigger> {
    let conditions: String = row.try_get("conditions")?;
    let when = serde_json::from_value(json_column(&conditions)?)
        .map_err(|e| StoreError::Corrupt(format!("trigger conditions: {e}")))?;
    let audience = Audience::from_column(row.try_get("audience")?)?;
    Ok(Trigger {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        when,
        channel: row.try_get("channel")?,
        template: row.try_get("template")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        audience,
        created_at: from_millis(row.try_get("created_at")?),
        updated_at: from_millis(row.try_get("updated_at")?),
    })
}

fn validate(new: &NewTrigger) -> StoreResult<()> {
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > MAX_TRIGGER_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            "name",
            format!("must be 1 to {MAX_TRIGGER_NAME_CHARS} characters"),
        ));
    }
    if new.channel.trim().is_empty() || new.channel.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(StoreError::invalid("channel", "must be a channel name such as `email`"));
    }
    if let TriggerCondition::ScoreCrossed { plugin, threshold, .. } = &new.when {
        if plugin.trim().is_empty() {
            return Err(StoreError::invalid("when.plugin", "must name a scoring plugin"));
        }
        if !threshold.is_finite() {
            return Err(StoreError::invalid("when.threshold", "must be a finite number"));
        }
    }
    if let Some(a) = &new.audience {
        a.validate()?;
    }
    Ok(())
}

impl Store {
    pub async fn create_trigger(&self, tenant: &TenantId, new: NewTrigger) -> StoreResult<Trigger> {
        validate(&new)?;
        let mut tx = self.db().begin_write().await?;
        let count: i64 = sqlx::query("SELECT COUNT(*) FROM message_triggers WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if count >= MAX_TRIGGERS {
            return Err(StoreError::conflict(
                "too_many_triggers",
                format!("a tenant has at most {MAX_TRIGGERS} triggers"),
            ));
        }
        let template_exists = sqlx::query("SELECT name FROM message_templates WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(&new.template)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !template_exists {
            return Err(StoreError::invalid("template", "no message template of that name"));
        }
        // Ids in the conditions are resolved in this tenant: another
        // tenant's tier or reward reads as one that does not exist.
        let reference = match &new.when {
            TriggerCondition::TierChanged { to_tier: Some(id), .. } => Some((
                "when.to_tier",
                "SELECT id FROM loyalty_tiers WHERE tenant_id = $1 AND id = $2",
                id,
            )),
            TriggerCondition::RewardRedeemable { reward_id: Some(id) } => Some((
                "when.reward_id",
                "SELECT id FROM loyalty_rewards WHERE tenant_id = $1 AND id = $2",
                id,
            )),
            _ => None,
        };
        if let Some((field, query, id)) = reference {
            let found = sqlx::query(query)
                .bind(tenant.as_str())
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !found {
                return Err(StoreError::invalid(field, format!("no such id in this tenant: {id:?}")));
            }
        }
        let now = now_ms();
        let id = new_id();
        let conditions = serde_json::to_string(&new.when)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode trigger conditions: {e}")))?;
        let audience = Audience::to_column(new.audience.as_ref())?;
        let inserted = sqlx::query(
            "INSERT INTO message_triggers (tenant_id, id, name, event, conditions, channel, template, enabled, \
             created_at, updated_at, audience) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)",
        )
        .bind(tenant.as_str())
        .bind(&id)
        .bind(new.name.trim())
        .bind(new.when.event())
        .bind(&conditions)
        .bind(new.channel.trim())
        .bind(&new.template)
        .bind(new.enabled)
        .bind(now)
        .bind(audience)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::conflict(
                    "trigger_exists",
                    "a trigger of that name already exists",
                ));
            }
            other => other?,
        };
        tx.commit().await?;
        self.get_trigger(tenant, &id).await
    }

    pub async fn get_trigger(&self, tenant: &TenantId, id: &str) -> StoreResult<Trigger> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM message_triggers WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(self.db().pool())
        .await?
        .ok_or(StoreError::NotFound { entity: "trigger" })?;
        trigger_from_row(&row)
    }

    pub async fn list_triggers(&self, tenant: &TenantId) -> StoreResult<Vec<Trigger>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM message_triggers WHERE tenant_id = $1 ORDER BY name"
        ))
        .bind(tenant.as_str())
        .fetch_all(self.db().pool())
        .await?;
        rows.iter().map(trigger_from_row).collect()
    }

    /// Switches a trigger on or off.
    pub async fn set_trigger_enabled(&self, tenant: &TenantId, id: &str, enabled: bool) -> StoreResult<Trigger> {
        let done =
            sqlx::query("UPDATE message_triggers SET enabled = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.as_str())
                .bind(id)
                .bind(enabled)
                .bind(now_ms())
                .execute(self.db().pool())
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { entity: "trigger" });
        }
        self.get_trigger(tenant, id).await
    }

    pub async fn delete_trigger(&self, tenant: &TenantId, id: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM message_triggers WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(self.db().pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { entity: "trigger" });
        }
        Ok(())
    }
}

/// The tenant's enabled triggers for `event`, read inside the caller's
/// transaction.
pub async fn enabled_triggers_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    event: &str,
) -> StoreResult<Vec<Trigger>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM message_triggers WHERE tenant_id = $1 AND event = $2 AND enabled ORDER BY id"
    ))
    .bind(tenant.as_str())
    .bind(event)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(trigger_from_row).collect()
}

/// Puts the trigger's message for `customer_id` in the outbox. Problems
/// that are about this customer or this configuration (no address for the
/// channel, a template that no longer renders) are logged, not returned.
async fn fire_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    trigger: &Trigger,
    customer_id: &str,
    event_key: &str,
    data: Value,
) -> StoreResult<()> {
    if let Some(audience) = &trigger.audience
        && !audience.includes_tx(conn, tenant, customer_id).await?
    {
        return Ok(());
    }
    let mut data = match data {
        Value::Object(map) => map,
        other => [("value".to_owned(), other)].into_iter().collect(),
    };
    data.insert("trigger".into(), json!({ "id": trigger.id, "name": trigger.name }));
    let message = NewMessage {
        customer_id: customer_id.to_owned(),
        channel: trigger.channel.clone(),
        template: Some(trigger.template.clone()),
        subject: None,
        body: None,
        data,
        to: None,
        metadata: serde_json::Map::new(),
        idempotency_key: Some(format!("trigger:{}:{event_key}", trigger.id)),
    };
    match enqueue_tx(conn, tenant, message).await {
        Ok(_) => Ok(()),
        Err(StoreError::Database(e)) => Err(StoreError::Database(e)),
        Err(StoreError::Corrupt(e)) => Err(StoreError::Corrupt(e)),
        Err(skipped) => {
            tracing::warn!(tenant = %tenant, trigger = %trigger.id, customer = customer_id, reason = %skipped,
                "trigger fired but no message was queued");
            Ok(())
        }
    }
}

/// Fires `complaint_opened` or `complaint_escalated` (`event`) triggers for
/// a case; the event key is the case id, so each case alerts once per
/// event and trigger.
pub async fn on_complaint_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    event: &str,
    complaint: &super::complaints::Complaint,
) -> StoreResult<()> {
    let triggers = enabled_triggers_tx(conn, tenant, event).await?;
    for trigger in &triggers {
        let data = json!({ "event": event, "complaint": {
            "id": complaint.id, "subject": complaint.subject, "status": complaint.status,
            "channel": complaint.channel,
            "opened_at": rfc3339(complaint.opened_at), "due_at": rfc3339(complaint.due_at) } });
        fire_tx(conn, tenant, trigger, &complaint.customer_id, &complaint.id, data).await?;
    }
    Ok(())
}

fn rfc3339(t: OffsetDateTime) -> Option<String> {
    t.format(&time::format_description::well_known::Rfc3339).ok()
}

/// A tier's rank and name; no tier ranks below every tier.
async fn tier_rank(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    tier: Option<&str>,
) -> StoreResult<(i64, Option<String>)> {
    let Some(tier) = tier else {
        return Ok((i64::MIN, None));
    };
    let row = sqlx::query("SELECT rank, name FROM loyalty_tiers WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_str())
        .bind(tier)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(row) => (row.try_get("rank")?, Some(row.try_get("name")?)),
        None => (i64::MIN, None),
    })
}

/// Fires `tier_changed` triggers for a recorded tier change.
pub async fn on_tier_changed_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
    change_id: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> StoreResult<()> {
    let triggers = enabled_triggers_tx(conn, tenant, "tier_changed").await?;
    if triggers.is_empty() {
        return Ok(());
    }
    let ((from_rank, from_name), (to_rank, to_name)) =
        (tier_rank(conn, tenant, from).await?, tier_rank(conn, tenant, to).await?);
    let direction = if to_rank >= from_rank {
        TierDirection::Up
    } else {
        TierDirection::Down
    };
    for trigger in &triggers {
        let TriggerCondition::TierChanged {
            to_tier,
            direction: wanted,
        } = &trigger.when
        else {
            continue;
        };
        if to_tier.as_deref().is_some_and(|wanted| Some(wanted) != to) || wanted.is_some_and(|w| w != direction) {
            continue;
        }
        let data = json!({ "event": "tier_changed", "from_tier": from, "to_tier": to,
            "from_tier_name": from_name, "to_tier_name": to_name, "direction": direction });
        fire_tx(conn, tenant, trigger, customer_id, change_id, data).await?;
    }
    Ok(())
}

/// Fires `reward_redeemable` triggers after points took the balance from
/// `before` to `after` (ledger entry `entry_id`).
pub async fn on_balance_rose_tx(
    conn: &mut AnyConnection,
    tenant: &TenantId,
    customer_id: &str,
    entry_id: &str,
    before: i64,
    after: i64,
) -> StoreResult<()> {
    if after <= before {
        return Ok(());
    }
    let triggers = enabled_triggers_tx(conn, tenant, "reward_redeemable").await?;
    if triggers.is_empty() {
        return Ok(());
    }
    // Rewards that just became affordable and whose tier rule the customer
    // meets (and audience, checked below).
    let rows = sqlx::query(
        "SELECT r.id, r.name, r.cost_points, r.audience FROM loyalty_rewards r \
         WHERE r.tenant_id = $1 AND r.active AND r.cost_points > $2 AND r.cost_points <= $3 \
         AND (r.stock IS NULL OR r.stock > 0) \
         AND (r.min_tier_rank IS NULL OR r.min_tier_rank <= COALESCE((SELECT tr.rank FROM loyalty_accounts a \
              JOIN loyalty_tiers tr ON tr.tenant_id = a.tenant_id AND tr.id = a.tier_id \
              WHERE a.tenant_id = $1 AND a.customer_id = $4), -1)) \
         ORDER BY r.cost_points, r.id",
    )
    .bind(tenant.as_str())
    .bind(before)
    .bind(after)
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let reward_id: String = row.try_get("id")?;
        let reward_name: String = row.try_get("name")?;
        let cost: i64 = row.try_get("cost_points")?;
        if let Some(audience) = Audience::from_column(row.try_get("audience")?)?
            && !audience.includes_tx(conn, tenant, customer_id).await?
        {
            continue;
        }
        for trigger in &triggers {
            let TriggerCondition::RewardRedeemable { reward_id: only } = &trigger.when else {
                continue;
            };
            if only.as_deref().is_some_and(|only| only != reward_id) {
                continue;
            }
            let data = json!({ "event": "reward_redeemable", "reward": { "id": reward_id, "name": reward_name,
                "cost_points": cost }, "balance": after });
            fire_tx(
                conn,
                tenant,
                trigger,
                customer_id,
                &format!("{entry_id}:{reward_id}"),
                data,
            )
            .await?;
        }
    }
    Ok(())
}

/// One stored score, with the value it replaced (if any), for
/// `score_crossed`.
pub struct ScoreChange<'a> {
    pub customer_id: &'a str,
    pub plugin_id: &'a str,
    pub computed_at: i64,
    pub previous: Option<f64>,
    pub value: f64,
}

/// Whether a score moving from `previous` to `value` crosses `threshold` in
/// `direction`.
pub fn crosses(previous: Option<f64>, value: f64, threshold: f64, direction: CrossDirection, first: bool) -> bool {
    let (was_on_side, is_on_side) = match direction {
        CrossDirection::Above => (previous.map(|p| p >= threshold), value >= threshold),
        CrossDirection::Below => (previous.map(|p| p < threshold), value < threshold),
    };
    match was_on_side {
        Some(was) => is_on_side && !was,
        None => is_on_side && first,
    }
}

/// Fires `score_crossed` triggers for a batch of stored scores. `triggers`
/// are the tenant's enabled `score_crossed` triggers (read once per batch).
pub async fn on_scores_tx(
    conn: &mut sqlx::Transaction<'_, Any>,
    tenant: &TenantId,
    triggers: &[Trigger],
    changes: &[ScoreChange<'_>],
) -> StoreResult<()> {
    for change in changes {
        for trigger in triggers {
            let TriggerCondition::ScoreCrossed {
                plugin,
                threshold,
                direction,
                include_first_score,
            } = &trigger.when
            else {
                continue;
            };
            if plugin != change.plugin_id
                || !crosses(
                    change.previous,
                    change.value,
                    *threshold,
                    *direction,
                    *include_first_score,
                )
            {
                continue;
            }
            let data = json!({ "event": "score_crossed", "plugin": plugin, "threshold": threshold,
                "direction": direction, "previous": change.previous, "score": change.value });
            let key = format!("{}:{}:{}", change.customer_id, change.plugin_id, change.computed_at);
            fire_tx(&mut *conn, tenant, trigger, change.customer_id, &key, data).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossing_rules() {
        use CrossDirection::*;
        // Above: from below to at-or-above only.
        assert!(crosses(Some(0.4), 0.5, 0.5, Above, false));
        assert!(!crosses(Some(0.5), 0.7, 0.5, Above, false));
        assert!(!crosses(Some(0.7), 0.4, 0.5, Above, false));
        // Below: from at-or-above to below only.
        assert!(crosses(Some(0.5), 0.49, 0.5, Below, false));
        assert!(!crosses(Some(0.3), 0.2, 0.5, Below, false));
        // First scores count only when asked to.
        assert!(!crosses(None, 0.9, 0.5, Above, false));
        assert!(crosses(None, 0.9, 0.5, Above, true));
        assert!(!crosses(None, 0.1, 0.5, Above, true));
    }

    #[test]
    fn conditions_are_strict_and_tagged() {
        let when: TriggerCondition = serde_json::from_value(json!({
            "event": "score_crossed", "plugin": "churn", "threshold": 0.3, "direction": "below"
        }))
        .unwrap();
        assert_eq!(
            when,
            TriggerCondition::ScoreCrossed {
                plugin: "churn".into(),
                threshold: 0.3,
                direction: CrossDirection::Below,
                include_first_score: false
            }
        );
        assert!(serde_json::from_value::<TriggerCondition>(json!({ "event": "tier_changed", "to": "gold" })).is_err());
        assert!(serde_json::from_value::<TriggerCondition>(json!({ "event": "birthday" })).is_err());
    }
}
